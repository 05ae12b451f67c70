"""One run (a grid cell): resolve the config, get the teachers from the cache, train the student with the
method, measure it, and write one record."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from kdbench import deployables, env, fastpaths, metrics
from kdbench.data.splits import stratified_indices
from kdbench.engine import fit
from kdbench.epoch_log import EpochSink, TensorBoardSink
from kdbench.methods import Method, Setup
from kdbench.models import create_model
from kdbench.prepare import SPLIT_SEED, Prepared, prepare_data
from kdbench.record import Record
from kdbench.results import write_record
from kdbench.resume import Checkpoint
from kdbench.run_config import RunConfig, check_folders, default_cache_dir
from kdbench.stats import is_collapsed
from kdbench.teacher_outputs import DEFAULT_FEATURE_BUDGET_BYTES, TeacherOutputCache
from kdbench.teacher_training import get_teacher, teacher_key
from kdbench.teachers import CachedTeacher, TeacherCache


def build_method(
    cfg: RunConfig,
    dev: torch.device,
    cache: TeacherCache,
    data_root: str | Path | None = None,
    progress: bool = True,
    share_outputs: bool = False,
    feature_budget_bytes: int = DEFAULT_FEATURE_BUDGET_BYTES,
    memory_format: str = "contiguous",
) -> tuple[Method, Prepared, list[CachedTeacher]]:
    """The cell's data, its teachers (from the cache, trained if absent) and its untrained method, seeded as
    the cell seeds them: what `run` trains and what the bench (kdbench.bench) times. `share_outputs`: serve the
    teachers' outputs from `kdbench.teacher_outputs` caches under the teacher cache's folder, keeping stage
    features while an epoch of them fits `feature_budget_bytes`. `memory_format`: the layout of every model and
    module (auto, channels_last, contiguous: `kdbench.fastpaths`); the one used is `method.setup.memory_format`."""
    resolved = cfg.resolved
    precision = fastpaths.check_precision(cfg.precision, dev)
    fastpaths.check_memory_format(memory_format)  # before any teacher is trained
    torch.manual_seed(cfg.seed)
    prepared = prepare_data(cfg, resolved.recipe, dev, data_root, cfg.seed)
    info = prepared.data.info

    teachers = [get_teacher(cfg, i, dev, cache, data_root, progress) for i in range(len(cfg.teachers))]
    probe = fastpaths.ProbeKey.of(cfg.student, cfg.teachers, info, prepared.train.batch_size, precision, dev)
    layout = fastpaths.resolve_memory_format(memory_format, probe, dev, cache.root)
    for t in teachers:
        fastpaths.prepare_model(t.model.to(dev).eval(), layout, precision)
    torch.manual_seed(cfg.seed)

    def make_model(name: str) -> torch.nn.Module:
        return fastpaths.prepare_model(
            create_model(name, info.num_classes, info.in_chans).to(dev), layout, precision
        )

    student = make_model(cfg.student)
    tag = fastpaths.output_cache_tag(layout, precision)
    output_caches = (
        [
            TeacherOutputCache(t.model, teacher_key(cfg, i).digest() + tag, cache.root, feature_budget_bytes)
            for i, t in enumerate(teachers)
        ]
        if share_outputs
        else []
    )
    setup = Setup(
        student,
        [t.model for t in teachers],
        info,
        make_model,
        prepared.train.num_samples,
        resolved.epochs,
        len(prepared.train),
        dev,
        output_caches,
        recipe=resolved.recipe,
        precision=precision,
        memory_format=layout,
        seed=cfg.seed,
    )
    method = resolved.method(setup, **resolved.hparams)
    return fastpaths.to_layout(method, layout), prepared, teachers  # its own modules too


def run(
    cfg: RunConfig,
    device: str = "auto",
    results_dir: str | Path = "results/local",
    cache_dir: str | Path | None = None,
    data_root: str | Path | None = None,
    progress: bool = True,
    latency_repeats: int = 10,
    share_outputs: bool = True,
    memory_format: str = "contiguous",
    checkpoint_every: int = 0,
    compile_models: bool = False,
    cudnn_benchmark: bool = False,
    tensorboard: str | Path | None = None,
) -> dict[str, Any]:
    """Run one cell and write its record; returns the record (its path is `record['path']`).
    `memory_format`: auto, channels_last or contiguous (`kdbench.fastpaths`); the record's `memory_format` is the
    one used, outside the cell id. `checkpoint_every` > 0: save the training state every that many epochs under
    `results_dir`/checkpoints, resume from it when the cell is run again after a kill (`kdbench.resume`), and
    delete it once the record is written. `compile_models`, `cudnn_benchmark`: `torch.compile` the student and the
    teachers, let cuDNN autotune (`kdbench.fastpaths.speed_up`); recorded, not in the cell id. `tensorboard`: a
    folder where each epoch's mean loss terms and top-1 also go as TensorBoard scalars while the cell trains, in a
    run folder named by the cell id (`kdbench.epoch_log`).

    `share_outputs`: take teacher outputs from, and add them to, the cache shared by cells that replay the same
    batches (`kdbench.teacher_outputs`); the record is the same either way but for timings, memory and its
    `teacher_output_cache` field ({"hits", "misses", "saved_s"} over all teachers, None when not shared). The
    cost columns use `standalone_train_time_s`: the training time plus the teacher forward time the hits saved."""
    dev = env.resolve_device(device)
    check_folders(results_dir, cache_dir or default_cache_dir())
    cache = TeacherCache(cache_dir or default_cache_dir())
    recipe, epochs = cfg.resolved.recipe, cfg.resolved.epochs
    method, prepared, teachers = build_method(
        cfg, dev, cache, data_root, progress, share_outputs, memory_format=memory_format
    )
    info = prepared.data.info
    fastpaths.speed_up([method.student, *method.teachers], dev, compile_models, cudnn_benchmark)

    def after_task(
        t: int,
    ) -> None:  # the method measures its own tasks (kdbench.methods.base.Method.after_task)
        method.after_task(t, *metrics.predict(method.deployable(), prepared.test))

    sink = TensorBoardSink(Path(tensorboard) / cfg.cell_id()) if tensorboard else None
    curve = EpochCurve(method, prepared, sink)
    checkpoint = (
        Checkpoint(checkpoint_path(results_dir, cfg), checkpoint_every, curve.state, curve.restore)
        if checkpoint_every > 0
        else None
    )
    stats = fit(
        method,
        prepared.train,
        recipe,
        epochs,
        after_task if method.tasks(info.num_classes) else None,
        progress,
        desc=f"{cfg.method} {cfg.student}",
        after_epoch=curve,
        checkpoint=checkpoint,
        log_epoch=(lambda e, means: sink.scalars(e, {f"loss/{k}": v for k, v in means.items()}))
        if sink
        else None,
    )
    if sink is not None:
        sink.close()
    outputs_shared = _flush_output_caches(method) if share_outputs else None
    record = _measure(cfg, method, teachers, prepared, stats, dev, latency_repeats, results_dir)
    record["teacher_output_cache"] = outputs_shared
    record.update(
        precision=method.setup.precision,
        memory_format=method.setup.memory_format,
        speed_ups=[
            name for name, on in (("compile", compile_models), ("cudnn_benchmark", cudnn_benchmark)) if on
        ],
    )
    # what training would have cost without the shared outputs: the cost columns compare methods as users run them
    record["standalone_train_time_s"] = stats.wall_time_s + (
        outputs_shared["saved_s"] if outputs_shared else 0.0
    )
    record.update(curve.summary())
    record["collapsed"] = is_collapsed(record["student_top1"], info.num_classes)
    record["path"] = str(write_record(record, results_dir))
    if checkpoint is not None:
        checkpoint.remove()
    return record


def checkpoint_path(results_dir: str | Path, cfg: RunConfig) -> Path:
    """Where a cell's training checkpoint lives while it trains (`kdbench.resume`)."""
    return Path(results_dir) / "checkpoints" / f"{cfg.cell_id()}.ckpt"


CURVE_TEST_IMAGES = 2000  # a fixed stratified part of the test set, evaluated after every epoch


class EpochCurve:
    """Top-1 after every epoch, untimed, on a fixed stratified `CURVE_TEST_IMAGES` of the test set (and on the
    validation split, if any): how close to convergence a student is. Evaluating the whole test set every epoch would
    cost a short cell a third of its training time; the headline stays the whole test set at the last epoch
    (RepDistiller's convention), and the curve's best epoch is reported beside it (mdistiller reports the best)."""

    def __init__(self, method: Method, prepared: Prepared, sink: EpochSink | None = None) -> None:
        self.method = method
        self.sink = sink
        self.val_stream = prepared.val
        test = prepared.test
        self.stream = test
        if test.num_samples > CURVE_TEST_IMAGES:
            keep = stratified_indices(
                test.labels.cpu(), CURVE_TEST_IMAGES, torch.Generator().manual_seed(SPLIT_SEED)
            )
            mask = torch.zeros(test.num_samples, dtype=torch.bool)
            mask[keep] = True
            self.stream = test.subset(mask)  # the test stream's order and batch size, fewer samples
        self.test: list[float] = []
        self.val: list[float] = []

    def __call__(self, epoch: int) -> None:
        model = self.method.monitored()
        self.test.append(metrics.accuracy(*metrics.predict(model, self.stream)))
        if self.val_stream is not None:
            self.val.append(metrics.accuracy(*metrics.predict(model, self.val_stream)))
        if self.sink is not None:
            tops = {"top1/test_curve": self.test[-1], **({"top1/val": self.val[-1]} if self.val else {})}
            self.sink.scalars(epoch, tops)

    def state(self) -> dict[str, Any]:
        """The accuracies so far, for a training checkpoint (`kdbench.resume`)."""
        return {"test": list(self.test), "val": list(self.val)}

    def restore(self, state: dict[str, Any]) -> None:
        self.test, self.val = list(state["test"]), list(state["val"])

    def summary(self) -> dict[str, Any]:
        best = max(range(len(self.test)), key=self.test.__getitem__) if self.test else None
        return {
            "curve_test_images": self.stream.num_samples,
            "curve_top1": self.test,
            "curve_val_top1": self.val or None,
            "curve_best_top1": self.test[best] if best is not None else None,
            "curve_best_epoch": best + 1 if best is not None else None,
        }


def _flush_output_caches(method: Method) -> dict[str, float]:
    """Write the teacher-output caches' last epochs; returns hits, misses and the teacher forward time the hits
    saved, over all teachers."""
    caches = [c for c in method.setup.output_caches if c is not None]
    for c in caches:
        c.flush()
    return {k: sum(c.stats()[k] for c in caches) for k in ("hits", "misses", "saved_s")}


def _measure(cfg, method, teachers, prepared, stats, dev, latency_repeats, results_dir) -> dict[str, Any]:
    """The trained cell's record. The deployable's inference costs, and its first teacher's, come from
    `kdbench.deployables`: measured once per deployable, in the same conditions, and shared by every cell."""
    info = prepared.data.info
    model = method.deployable()
    logits, labels = metrics.predict(model, prepared.test)
    shape = (info.in_chans, info.image_size, info.image_size)
    shipped = {"student": (model, method.deployable_size_bytes() or metrics.state_dict_bytes(model))}
    if teachers:
        shipped["teacher"] = (teachers[0].model, metrics.state_dict_bytes(teachers[0].model))
    costs = deployables.measure(shipped, shape, dev, results_dir, latency_repeats)
    student = costs["student"]
    teacher = {f"teacher_{k}": v for k, v in asdict(costs["teacher"]).items()} if teachers else {}
    teacher_logits = teachers[0].meta["test_logits"] if teachers else None
    # without its view, the batch is never served from a cache: the teacher's forward pass is counted
    batch = replace(next(iter(prepared.train.epoch(0))), view=None)
    return Record.of_cell(
        cfg,
        "ok",
        method.info,
        dev,
        train_samples=prepared.train.num_samples,
        test_samples=len(labels),
        student_top1=metrics.accuracy(logits, labels),
        val_top1=metrics.accuracy(*metrics.predict(model, prepared.val)) if prepared.val else None,
        teacher_top1=teachers[0].meta["top1"] if teachers else None,
        teachers_top1=[t.meta["top1"] for t in teachers],
        ece=metrics.expected_calibration_error(logits, labels),
        agreement=metrics.agreement(logits, teacher_logits) if teacher_logits is not None else None,
        student_params=student.params,
        deployable_bytes=student.bytes,
        flops_per_image=student.flops_per_image,
        **student.latencies(),
        **teacher,
        extra_params=method.extra_parameters(),
        train_flops_per_sample=metrics.training_step_flops(method, batch),
        train_time_s=stats.wall_time_s,
        resumed_at_epoch=stats.resumed_at_epoch,
        train_samples_per_s=stats.samples_per_s,
        peak_memory_bytes=stats.peak_memory_bytes,
        teacher_train_time_s=sum(t.meta["train_time_s"] for t in teachers),
        teachers_from_cache=[t.from_cache for t in teachers],
        epoch_losses=stats.epoch_losses,
        extras=method.record_extras(),
    ).to_dict()
