"""The data side of a run: the cell's training split (subset, imbalance, label noise), its validation and test
streams, all fixed by the config and not by the seed, on the run's device."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from kdbench.data import BatchStream, TensorData, load_dataset, train_val_indices
from kdbench.data.folder import FolderStream, make_stream
from kdbench.data.splits import long_tailed_indices, stratified_indices, symmetric_label_noise
from kdbench.engine import Recipe
from kdbench.run_config import RunConfig

SPLIT_SEED = (
    0  # the training subset and validation split are the same for every seed: seeds vary init and order
)
EVAL_BATCH = 1000


@functools.lru_cache(maxsize=4)
def _dataset(name: str, root: str | None) -> TensorData:
    return load_dataset(name, root)


@dataclass
class Prepared:
    """The data side of a run: streams over the split, on the run's device."""

    data: TensorData
    train: BatchStream | FolderStream
    test: BatchStream | FolderStream
    val: BatchStream | FolderStream | None


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
    train = make_stream(
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
    test = make_stream(
        data.x_test[test_idx], data.y_test[test_idx], data.info, EVAL_BATCH, train=False, device=device
    )
    val = None
    if len(val_idx):
        val = make_stream(
            data.x_train[val_idx],
            data.y_train[val_idx],
            data.info,
            EVAL_BATCH,
            train=False,
            device=device,
            index=val_idx,
        )
    return Prepared(data, train, test, val)
