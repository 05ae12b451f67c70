"""A cell's teachers: their cache keys, and training each distinct one once (with `baseline`, on the cell's data)
before the cells that need it run."""

from __future__ import annotations

import json

import torch

from kdbench import env, metrics
from kdbench.engine import fit
from kdbench.executor import run_jobs
from kdbench.methods import Setup, get_method
from kdbench.models import create_model
from kdbench.prepare import prepare_data
from kdbench.run_config import RunConfig
from kdbench.teachers import CachedTeacher, TeacherCache, TeacherKey

TEACHER_SEED_STRIDE = 100  # teacher i is trained with seed (teacher_seed or the cell's seed) + 100 i


def teacher_key(cfg: RunConfig, index: int) -> TeacherKey:
    """The cache key of the cell's `index`-th teacher: what determines its weights, nothing else."""
    base_seed = cfg.seed if cfg.teacher_seed is None else cfg.teacher_seed
    recipe = cfg.resolved.recipe
    return TeacherKey(
        cfg.dataset,
        cfg.teachers[index],
        json.dumps(recipe.as_dict(), sort_keys=True),
        cfg.resolved.teacher_epochs,
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
    recipe = cfg.resolved.recipe
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
