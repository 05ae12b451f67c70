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
            raise KdbenchError(
                f"cannot draw {count} stratified samples: class {int(classes[rank])} has {len(idx)}"
            )
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
        raise KdbenchError(
            f"train subset {train_subset} + validation {val_size} exceeds the {n} training images"
        )
    gen = torch.Generator().manual_seed(10_007 * seed + 1)
    everything = torch.randperm(n, generator=gen)
    val = stratified_indices(labels, val_size, gen) if val_size else everything[:0]
    remaining = everything[~torch.isin(everything, val)]
    if train_subset is None or train_subset >= len(remaining):
        return remaining.sort().values, val
    train = remaining[stratified_indices(labels[remaining], train_subset, gen)]
    return train, val


def symmetric_label_noise(labels: torch.Tensor, rate: float, num_classes: int, seed: int) -> torch.Tensor:
    """Replace a `rate` fraction of labels with a uniformly drawn *different* class (symmetric noise)."""
    if not 0.0 <= rate < 1.0:
        raise KdbenchError(f"label noise must be in [0, 1), got {rate}")
    if rate == 0:
        return labels
    gen = torch.Generator().manual_seed(20_011 * seed + 7)
    flip = torch.rand(len(labels), generator=gen) < rate
    shift = torch.randint(1, num_classes, (len(labels),), generator=gen)
    return torch.where(flip, (labels + shift) % num_classes, labels)


def long_tailed_indices(
    labels: torch.Tensor, indices: torch.Tensor, ratio: float, num_classes: int
) -> torch.Tensor:
    """Keep an exponentially decaying share of each class (Cui et al. 2019): class c keeps
    n_max · ratio^(-c / (C - 1)) of its samples, so the largest class has `ratio` times the smallest."""
    if ratio < 1:
        raise KdbenchError(f"imbalance ratio must be at least 1, got {ratio}")
    if ratio == 1:
        return indices
    sub = labels[indices]
    n_max = int(torch.bincount(sub, minlength=num_classes).max())
    keep = []
    for c in range(num_classes):
        members = indices[sub == c]
        count = max(1, int(n_max * ratio ** (-c / (num_classes - 1))))
        keep.append(members[:count])
    return torch.cat(keep).sort().values
