"""One run (a grid cell): resolve the config, get the teachers from the cache, train the student with the
method, measure it, and write one record."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from kdbench import env, metrics
from kdbench.data import BatchStream, TensorData, load_dataset, train_val_indices
from kdbench.engine import Recipe, fit, get_recipe
from kdbench.errors import KdbenchError
from kdbench.methods import Setup, get_method
from kdbench.methods.base import resolve_hparams
from kdbench.models import create_model
from kdbench.results import SCHEMA_VERSION, write_record
from kdbench.teachers import TeacherCache, TeacherKey

SPLIT_SEED = 0  # the training subset and validation split are the same for every seed: seeds vary init and order
EVAL_BATCH = 1000
TEACHER_SEED_STRIDE = 100  # teacher i of a cell with seed s is trained with seed s + 100 i


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
    val_size: int = 0  # held-out validation images, taken from the training split
    hparams: dict[str, Any] = field(default_factory=dict)

    def resolve(self) -> dict[str, Any]:
        """The fully resolved config: defaults filled in, names checked. Its hash is the cell id."""
        method = get_method(self.method)
        if len(self.teachers) < method.info.teachers:
            need = method.info.teachers
            raise KdbenchError(f"method {self.method!r} needs {need} teacher{'s' * (need > 1)}; pass --teacher")
        recipe = get_recipe(self.recipe)
        epochs = self.epochs if self.epochs is not None else recipe.epochs
        if epochs < 1 or (self.teacher_epochs is not None and self.teacher_epochs < 1):
            raise KdbenchError(f"epochs must be at least 1, got {epochs}")
        resolved = asdict(self)
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


def prepare_data(cfg: RunConfig, recipe: Recipe, device: torch.device, data_root: str | None, seed: int) -> Prepared:
    data = _dataset(cfg.dataset, str(data_root) if data_root else None)
    train_idx, val_idx = train_val_indices(data.y_train, cfg.train_subset, cfg.val_size, SPLIT_SEED)
    train = BatchStream(
        data.x_train[train_idx], data.y_train[train_idx], data.info, recipe.batch_size, seed, True, device, train_idx
    )
    test = BatchStream(data.x_test, data.y_test, data.info, EVAL_BATCH, train=False, device=device)
    val = None
    if len(val_idx):
        val = BatchStream(data.x_train[val_idx], data.y_train[val_idx], data.info, EVAL_BATCH, train=False,
                          device=device, index=val_idx)
    return Prepared(data, train, test, val)


def _teacher(
    cfg: RunConfig, resolved: dict, index: int, device: torch.device, cache: TeacherCache, data_root, progress: bool
):
    arch, seed = cfg.teachers[index], cfg.seed + TEACHER_SEED_STRIDE * index
    recipe = get_recipe(cfg.recipe)
    key = TeacherKey(
        cfg.dataset, arch, json.dumps(recipe.as_dict(), sort_keys=True), resolved["teacher_epochs"],
        cfg.train_subset, cfg.val_size, seed,
    )
    prepared = prepare_data(cfg, recipe, device, data_root, seed)
    info = prepared.data.info

    def build():
        torch.manual_seed(seed)
        return create_model(arch, info.num_classes, info.in_chans)

    def train(model):
        setup = Setup(model, [], info, lambda name: create_model(name, info.num_classes, info.in_chans),
                      prepared.train.num_samples, key.epochs, len(prepared.train), device)
        method = get_method("baseline")(setup)
        stats = fit(method, prepared.train, recipe, key.epochs, progress=progress, desc=f"teacher {arch}")
        logits, labels = metrics.predict(model, prepared.test)
        return {"top1": metrics.accuracy(logits, labels), "test_logits": logits,
                "train_time_s": stats.wall_time_s, "params": metrics.count_parameters(model)}

    return cache.get(key, build, train)


def run(
    cfg: RunConfig,
    device: str = "auto",
    results_dir: str | Path = "results/local",
    cache_dir: str | Path | None = None,
    data_root: str | Path | None = None,
    progress: bool = True,
    latency_repeats: int = 10,
) -> dict[str, Any]:
    """Run one cell and write its record; returns the record (its path is `record['path']`)."""
    resolved = cfg.resolve()
    dev = env.resolve_device(device)
    torch.manual_seed(cfg.seed)
    cache = TeacherCache(cache_dir or default_cache_dir())
    recipe, epochs = get_recipe(cfg.recipe), resolved["epochs"]
    prepared = prepare_data(cfg, recipe, dev, data_root, cfg.seed)
    info = prepared.data.info

    teachers = [_teacher(cfg, resolved, i, dev, cache, data_root, progress) for i in range(len(cfg.teachers))]
    for t in teachers:
        t.model.to(dev).eval()
    torch.manual_seed(cfg.seed)

    def make_model(name: str) -> torch.nn.Module:
        return create_model(name, info.num_classes, info.in_chans).to(dev)

    student = make_model(cfg.student)
    setup = Setup(student, [t.model for t in teachers], info, make_model, prepared.train.num_samples, epochs,
                  len(prepared.train), dev)
    method = get_method(cfg.method)(setup, **resolved["hparams"])

    task_accuracy: list[list[float]] = []
    task_classes = method.tasks(info.num_classes)

    def after_task(_t: int) -> None:
        logits, labels = metrics.predict(method.deployable(), prepared.test)
        task_accuracy.append([metrics.accuracy(logits[torch.isin(labels, torch.tensor(c))],
                                               labels[torch.isin(labels, torch.tensor(c))]) for c in task_classes])

    stats = fit(method, prepared.train, recipe, epochs, after_task if task_classes else None, progress,
                desc=f"{cfg.method} {cfg.student}")
    record = _measure(cfg, resolved, method, teachers, prepared, stats, dev, latency_repeats)
    if task_classes:
        record["extras"]["task_classes"] = task_classes
        record["extras"]["task_accuracy"] = task_accuracy
    record["path"] = str(write_record(record, results_dir))
    return record


def _measure(cfg, resolved, method, teachers, prepared, stats, dev, latency_repeats) -> dict[str, Any]:
    info = prepared.data.info
    model = method.deployable()
    logits, labels = metrics.predict(model, prepared.test)
    shape = (info.in_chans, info.image_size, info.image_size)
    teacher_logits = teachers[0].meta["test_logits"] if teachers else None
    record: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "status": "ok",
        "cell_id": cfg.cell_id(),
        "config": resolved,
        "method": cfg.method,
        "technique": method.info.technique,
        "techniques": list(method.info.techniques),
        "scheme": method.info.scheme,
        "teacher": cfg.teachers[0] if cfg.teachers else None,
        "teachers": list(cfg.teachers),
        "student": cfg.student,
        "dataset": cfg.dataset,
        "seed": cfg.seed,
        "epochs": resolved["epochs"],
        "train_samples": prepared.train.num_samples,
        "test_samples": len(labels),
        "student_top1": metrics.accuracy(logits, labels),
        "val_top1": metrics.accuracy(*metrics.predict(model, prepared.val)) if prepared.val else None,
        "teacher_top1": teachers[0].meta["top1"] if teachers else None,
        "teachers_top1": [t.meta["top1"] for t in teachers],
        "ece": metrics.expected_calibration_error(logits, labels),
        "agreement": metrics.agreement(logits, teacher_logits) if teacher_logits is not None else None,
        "student_params": metrics.count_parameters(model),
        "teacher_params": metrics.count_parameters(teachers[0].model) if teachers else None,
        "extra_params": method.extra_parameters(),
        "flops_per_image": metrics.flops_per_image(model, shape, dev),
        "deployable_bytes": method.deployable_size_bytes() or metrics.state_dict_bytes(model),
        "latency_ms_b1": metrics.latency_ms(model, shape, 1, dev, repeats=latency_repeats),
        "latency_ms_b256": metrics.latency_ms(model, shape, 256, dev, repeats=max(3, latency_repeats // 3),
                                              warmup=1),
        "train_time_s": stats.wall_time_s,
        "train_samples_per_s": stats.samples_per_s,
        "peak_memory_bytes": stats.peak_memory_bytes,
        "teacher_train_time_s": sum(t.meta["train_time_s"] for t in teachers),
        "teachers_from_cache": [t.from_cache for t in teachers],
        "epoch_losses": stats.epoch_losses,
        "extras": method.record_extras(),
        "env": env.describe(dev),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return record
