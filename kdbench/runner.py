"""One run (a grid cell): resolve the config, get the teachers from the cache, train the student with the
method, measure it, and write one record."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from kdbench import deployables, env, fastpaths, metrics
from kdbench.data import BatchStream, TensorData, load_dataset, train_val_indices
from kdbench.data.splits import long_tailed_indices, stratified_indices, symmetric_label_noise
from kdbench.engine import Recipe, fit, get_recipe
from kdbench.errors import KdbenchError, check_choice
from kdbench.executor import run_jobs
from kdbench.methods import Method, Setup, get_method
from kdbench.methods.base import resolve_hparams
from kdbench.methods.lifelong import lifelong_summary
from kdbench.models import create_model
from kdbench.models.registry import check_model
from kdbench.record import Record
from kdbench.results import ensure_writable, write_record
from kdbench.resume import Checkpoint
from kdbench.stats import is_collapsed
from kdbench.teacher_outputs import DEFAULT_FEATURE_BUDGET_BYTES, TeacherOutputCache
from kdbench.teachers import CachedTeacher, TeacherCache, TeacherKey

SPLIT_SEED = (
    0  # the training subset and validation split are the same for every seed: seeds vary init and order
)
EVAL_BATCH = 1000
TEACHER_SEED_STRIDE = 100  # teacher i is trained with seed (teacher_seed or the cell's seed) + 100 i


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's numbers. Paths and the device are not part of it."""

    method: str
    student: str
    teachers: tuple[str, ...] = ()
    dataset: str = "fashion-mnist"
    seed: int = 0
    recipe: str = "cpu"
    epochs: int | None = None  # None: the recipe's
    teacher_epochs: int | None = None  # None: the student's
    train_subset: int | None = None  # None: the whole training split
    # the teachers' own training images (a teacher that has seen more than the student can learn from its budget);
    # None: the student's. Capped at the images not held out for validation, which no teacher ever sees.
    teacher_train_subset: int | None = None
    val_size: int = 0  # held-out validation images, taken from the training split
    teacher_seed: int | None = None  # None: the cell's seed; a fixed value shares one teacher across seeds
    label_noise: float = 0.0  # symmetric label noise on the training split (teachers see the same labels)
    imbalance_ratio: float = 1.0  # long-tailed training split, largest / smallest class
    test_subset: int | None = None  # None: the whole test set (a stratified subset only for plumbing checks)
    hparams: dict[str, Any] = field(default_factory=dict)
    variant: str = (
        ""  # a named control run of the method in a grid (e.g. nas "smallest"); "" is the method itself
    )
    precision: str = (
        "fp32"  # "bf16": loss terms under bf16 autocast (kdbench.fastpaths); in the cell id only then
    )

    def resolve(self) -> dict[str, Any]:
        """The fully resolved config: defaults filled in, names checked. Its hash is the cell id."""
        method = get_method(self.method)
        if len(self.teachers) < method.info.teachers:
            need = method.info.teachers
            raise KdbenchError(
                f"method {self.method!r} needs {need} teacher{'s' * (need > 1)}; pass --teacher"
            )
        for arch in (self.student, *self.teachers):  # before any teacher is trained for an unknown student
            check_model(arch)
        recipe = get_recipe(self.recipe)
        epochs = self.epochs if self.epochs is not None else recipe.epochs
        for name, value in (("epochs", epochs), ("teacher_epochs", self.teacher_epochs)):
            if value is not None and value < 1:
                raise KdbenchError(f"{name} must be at least 1, got {value}")
        check_choice("precision", self.precision, fastpaths.PRECISIONS)
        resolved = asdict(self)
        if self.precision == "fp32":  # the default stays out, so fp32 cells keep the ids they had before bf16
            del resolved["precision"]
        resolved.update(
            teachers=list(self.teachers),
            epochs=epochs,
            teacher_epochs=self.teacher_epochs or epochs,
            recipe=recipe.as_dict(),
            hparams=resolve_hparams(method, self.hparams),
        )
        return resolved

    def cell_id(self) -> str:
        blob = json.dumps(self.resolve(), sort_keys=True, default=str)
        return f"{self.method}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def default_cache_dir() -> Path:
    return Path(os.environ.get("KDBENCH_CACHE", Path.home() / ".cache" / "kdbench")).expanduser()


def check_folders(results_dir: str | Path, cache_dir: str | Path) -> None:
    """Fail before any training, not after it, when the results or the teacher-cache folder cannot be written."""
    ensure_writable(results_dir, "choose another results folder with --results-dir")
    ensure_writable(cache_dir, "choose another teacher cache with --cache-dir or $KDBENCH_CACHE")


@functools.lru_cache(maxsize=4)
def _dataset(name: str, root: str | None) -> TensorData:
    return load_dataset(name, root)


@dataclass
class Prepared:
    """The data side of a run: streams over the split, on the run's device."""

    data: TensorData
    train: BatchStream
    test: BatchStream
    val: BatchStream | None


def teacher_subset(cfg: RunConfig, num_train: int) -> int | None:
    """How many training images the cell's teachers train on (None: the whole split but validation)."""
    if cfg.teacher_train_subset is None:
        return cfg.train_subset
    return cfg.teacher_train_subset if cfg.teacher_train_subset + cfg.val_size < num_train else None


def prepare_data(
    cfg: RunConfig,
    recipe: Recipe,
    device: torch.device,
    data_root: str | None,
    seed: int,
    for_teacher: bool = False,
) -> Prepared:
    """The cell's training split (subset, imbalance, noise: all fixed by the config, not the seed) and test set;
    `for_teacher`: the teachers' training split instead (same validation images held out, same noise and imbalance)."""
    data = _dataset(cfg.dataset, str(data_root) if data_root else None)
    subset = teacher_subset(cfg, len(data.y_train)) if for_teacher else cfg.train_subset
    train_idx, val_idx = train_val_indices(data.y_train, subset, cfg.val_size, SPLIT_SEED)
    train_idx = long_tailed_indices(data.y_train, train_idx, cfg.imbalance_ratio, data.info.num_classes)
    labels = symmetric_label_noise(
        data.y_train[train_idx], cfg.label_noise, data.info.num_classes, SPLIT_SEED
    )
    train = BatchStream(
        data.x_train[train_idx],
        labels,
        data.info,
        recipe.batch_size,
        seed,
        True,
        device,
        train_idx,
        recipe.augment,
    )
    test_idx = torch.arange(len(data.y_test))
    if cfg.test_subset is not None:
        test_idx = (
            stratified_indices(data.y_test, cfg.test_subset, torch.Generator().manual_seed(SPLIT_SEED))
            .sort()
            .values
        )
    test = BatchStream(
        data.x_test[test_idx], data.y_test[test_idx], data.info, EVAL_BATCH, train=False, device=device
    )
    val = None
    if len(val_idx):
        val = BatchStream(
            data.x_train[val_idx],
            data.y_train[val_idx],
            data.info,
            EVAL_BATCH,
            train=False,
            device=device,
            index=val_idx,
        )
    return Prepared(data, train, test, val)


def teacher_key(cfg: RunConfig, index: int) -> TeacherKey:
    """The cache key of the cell's `index`-th teacher: what determines its weights, nothing else."""
    base_seed = cfg.seed if cfg.teacher_seed is None else cfg.teacher_seed
    recipe = get_recipe(cfg.recipe)
    return TeacherKey(
        cfg.dataset,
        cfg.teachers[index],
        json.dumps(recipe.as_dict(), sort_keys=True),
        cfg.resolve()["teacher_epochs"],
        cfg.train_subset if cfg.teacher_train_subset is None else cfg.teacher_train_subset,
        cfg.val_size,
        base_seed + TEACHER_SEED_STRIDE * index,
        label_noise=cfg.label_noise,
        imbalance_ratio=cfg.imbalance_ratio,
        test_subset=cfg.test_subset,
    )


def get_teacher(
    cfg: RunConfig,
    index: int,
    device: torch.device,
    cache: TeacherCache,
    data_root=None,
    progress: bool = True,
) -> CachedTeacher:
    """The cell's `index`-th teacher from the cache, trained (with `baseline`, on the cell's data) if absent."""
    key = teacher_key(cfg, index)
    recipe = get_recipe(cfg.recipe)
    prepared = prepare_data(cfg, recipe, device, data_root, key.seed, for_teacher=True)
    info = prepared.data.info

    def build():
        torch.manual_seed(key.seed)
        return create_model(key.arch, info.num_classes, info.in_chans)

    def train(model):
        setup = Setup(
            model,
            [],
            info,
            lambda name: create_model(name, info.num_classes, info.in_chans),
            prepared.train.num_samples,
            key.epochs,
            len(prepared.train),
            device,
        )
        stats = fit(
            get_method("baseline")(setup),
            prepared.train,
            recipe,
            key.epochs,
            progress=progress,
            desc=f"teacher {key.arch}",
        )
        logits, labels = metrics.predict(model, prepared.test)
        # size, FLOPs and latency are measured with the students' (kdbench.deployables), in the same conditions
        return {
            "top1": metrics.accuracy(logits, labels),
            "test_logits": logits,
            "train_time_s": stats.wall_time_s,
            "train_images": prepared.train.num_samples,
        }

    return cache.get(key, build, train)


def _warm_teacher(job: tuple[RunConfig, int, str, str]) -> None:
    cfg, index, device, cache_dir = job
    get_teacher(cfg, index, env.resolve_device(device), TeacherCache(cache_dir), progress=False)


def train_teachers(
    cells: list[RunConfig],
    device: str,
    cache_dir: str,
    workers: int | None = None,
    progress: bool = True,
    *,
    executor: str | None = None,
    threads: int | None = None,
) -> int:
    """Train every distinct teacher the cells need, once, before the cells run; returns how many were needed.
    `executor`, `workers`, `threads`: as `kdbench.executor.run_jobs`."""
    unique: dict[TeacherKey, tuple[RunConfig, int]] = {}
    for cfg in cells:
        for i in range(len(cfg.teachers)):
            unique.setdefault(teacher_key(cfg, i), (cfg, i))
    jobs = [(cfg, i, device, cache_dir) for cfg, i in unique.values()]
    for _ in run_jobs(
        _warm_teacher, jobs, workers, "teachers", progress, executor=executor, device=device, threads=threads
    ):
        pass
    return len(jobs)


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
    resolved = cfg.resolve()
    precision = fastpaths.check_precision(cfg.precision, dev)
    fastpaths.check_memory_format(memory_format)  # before any teacher is trained
    torch.manual_seed(cfg.seed)
    prepared = prepare_data(cfg, get_recipe(cfg.recipe), dev, data_root, cfg.seed)
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
        resolved["epochs"],
        len(prepared.train),
        dev,
        output_caches,
        recipe=get_recipe(cfg.recipe),
        precision=precision,
        memory_format=layout,
        seed=cfg.seed,
    )
    method = get_method(cfg.method)(setup, **resolved["hparams"])
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
) -> dict[str, Any]:
    """Run one cell and write its record; returns the record (its path is `record['path']`).
    `memory_format`: auto, channels_last or contiguous (`kdbench.fastpaths`); the record's `memory_format` is the
    one used, outside the cell id. `checkpoint_every` > 0: save the training state every that many epochs under
    `results_dir`/checkpoints, resume from it when the cell is run again after a kill (`kdbench.resume`), and
    delete it once the record is written. `compile_models`, `cudnn_benchmark`: `torch.compile` the student and the
    teachers, let cuDNN autotune (`kdbench.fastpaths.speed_up`); recorded, not in the cell id.

    `share_outputs`: take teacher outputs from, and add them to, the cache shared by cells that replay the same
    batches (`kdbench.teacher_outputs`); the record is the same either way but for timings, memory and its
    `teacher_output_cache` field ({"hits", "misses", "saved_s"} over all teachers, None when not shared). The
    cost columns use `standalone_train_time_s`: the training time plus the teacher forward time the hits saved."""
    resolved = cfg.resolve()
    dev = env.resolve_device(device)
    check_folders(results_dir, cache_dir or default_cache_dir())
    cache = TeacherCache(cache_dir or default_cache_dir())
    recipe, epochs = get_recipe(cfg.recipe), resolved["epochs"]
    method, prepared, teachers = build_method(
        cfg, dev, cache, data_root, progress, share_outputs, memory_format=memory_format
    )
    info = prepared.data.info
    fastpaths.speed_up([method.student, *method.teachers], dev, compile_models, cudnn_benchmark)

    task_accuracy: list[list[float]] = []
    task_classes = method.tasks(info.num_classes)

    def after_task(_t: int) -> None:
        logits, labels = metrics.predict(method.deployable(), prepared.test)
        masks = [torch.isin(labels, torch.tensor(classes)) for classes in task_classes]
        task_accuracy.append([metrics.accuracy(logits[m], labels[m]) for m in masks])

    curve = EpochCurve(method, prepared)
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
        after_task if task_classes else None,
        progress,
        desc=f"{cfg.method} {cfg.student}",
        after_epoch=curve,
        checkpoint=checkpoint,
    )
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
    if task_classes:
        record["extras"]["task_classes"] = task_classes
        record["extras"]["task_accuracy"] = task_accuracy
        record["extras"].update(lifelong_summary(task_accuracy))  # avg_accuracy, avg_forgetting
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

    def __init__(self, method: Method, prepared: Prepared) -> None:
        self.method = method
        self.val_stream = prepared.val
        test = prepared.test
        self.stream = test
        if test.num_samples > CURVE_TEST_IMAGES:
            keep = (
                stratified_indices(
                    test.labels.cpu(), CURVE_TEST_IMAGES, torch.Generator().manual_seed(SPLIT_SEED)
                )
                .sort()
                .values
            )
            self.stream = BatchStream(
                test.images[keep], test.labels[keep], test.info, EVAL_BATCH, train=False, device=test.device
            )
        self.test: list[float] = []
        self.val: list[float] = []

    def __call__(self, _epoch: int) -> None:
        model = self.method.monitored()
        self.test.append(metrics.accuracy(*metrics.predict(model, self.stream)))
        if self.val_stream is not None:
            self.val.append(metrics.accuracy(*metrics.predict(model, self.val_stream)))

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
