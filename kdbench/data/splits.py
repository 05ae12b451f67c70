"""Derived splits of a dataset: seeded, stratified training subsets and a held-out validation split."""

from __future__ import annotations

import torch

from kdbench.errors import KdbenchError


def stratified_indices(labels: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` indices drawn with (as near as possible) equal numbers per class, in random order."""
    classes = labels.unique()
    per_class = [torch.nonzero(labels == c).flatten() for c in classes]
    base, extra = divmod(count, len(classes))
    chosen = []
    for rank, idx in enumerate(per_class):
        take = base + (1 if rank < extra else 0)
        if take > len(idx):
            raise KdbenchError(f"cannot draw {count} stratified samples: class {int(classes[rank])} has {len(idx)}")
        chosen.append(idx[torch.randperm(len(idx), generator=generator)[:take]])
    out = torch.cat(chosen)
    return out[torch.randperm(len(out), generator=generator)]


def train_val_indices(
    labels: torch.Tensor, train_subset: int | None, val_size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the training set into a training subset and a disjoint, stratified validation set.

    The split depends only on (labels, sizes, seed), so every method and teacher of a cell sees the same images.
    """
    n = len(labels)
    if val_size < 0 or (train_subset is not None and train_subset <= 0):
        raise KdbenchError("train subset must be positive and validation size non-negative")
    if (train_subset or 0) + val_size > n:
        raise KdbenchError(f"train subset {train_subset} + validation {val_size} exceeds the {n} training images")
    gen = torch.Generator().manual_seed(10_007 * seed + 1)
    everything = torch.randperm(n, generator=gen)
    val = stratified_indices(labels, val_size, gen) if val_size else everything[:0]
    remaining = everything[~torch.isin(everything, val)]
    if train_subset is None or train_subset >= len(remaining):
        return remaining.sort().values, val
    train = remaining[stratified_indices(labels[remaining], train_subset, gen)]
    return train, val
