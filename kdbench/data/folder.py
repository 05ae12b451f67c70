"""Datasets too large for memory (Tiny-ImageNet, ImageNet): image files in an ImageFolder layout (one folder per
class under `train/` and `val/`), read and augmented per sample by DataLoader workers with torchvision's transforms
v2, behind the interface of the in-memory `BatchStream`, so methods, the engine and the teacher-output cache do not
see the difference.

Replay. An epoch's order comes from a generator seeded by (seed, epoch), as in memory; each worker's random
augmentation from torch's generator, which the DataLoader seeds from a generator seeded the same way, and batches go
to workers in turn. So for the same (seed, epoch, number of workers) every batch has the same pixels, and the
stream's digest, which names the teacher-output cache, includes the number of workers.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from kdbench.data.catalog import DatasetInfo, FolderImages
from kdbench.data.loader import Batch, BatchStream, normalize

DEFAULT_WORKERS = 8  # DataLoader processes decoding and augmenting, at most one per core
# evaluation: resize the short side to this times the crop, then centre-crop (ImageNet's)
RESIZE_RATIO = 256 / 224


class _Files(Dataset):
    def __init__(self, paths: np.ndarray, transform: v2.Transform) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(decode_image(str(self.paths[i]), mode=ImageReadMode.RGB))


def _seed_worker(_worker_id: int) -> None:
    """numpy's generator from the worker's torch seed (torch's is already seeded by the DataLoader)."""
    np.random.seed(torch.initial_seed() % 2**32)


class FolderStream:
    """Seeded batches of image files, augmented by `workers` DataLoader processes: `BatchStream`'s interface."""

    def __init__(
        self,
        images: FolderImages,
        labels: torch.Tensor,
        info: DatasetInfo,
        batch_size: int,
        seed: int = 0,
        train: bool = True,
        device: torch.device | str = "cpu",
        index: torch.Tensor | None = None,
        augment: str = "crop+flip",
        workers: int | None = None,
    ) -> None:
        self.images, self.info, self.batch_size, self.seed = images, info, batch_size, seed
        self.train, self.augment = train, augment
        self.workers = min(DEFAULT_WORKERS, os.cpu_count() or 1) if workers is None else workers
        self.device = torch.device(device)
        self.labels = labels.to(self.device)
        self.index = (index if index is not None else torch.arange(len(labels))).to(self.device)
        size = info.image_size
        if train:
            steps = [
                v2.RandomResizedCrop(size, antialias=True) if "crop" in augment else v2.Resize((size, size))
            ]
            steps += [v2.RandomHorizontalFlip()] if info.flip and "flip" in augment else []
        else:
            steps = [v2.Resize(round(size * RESIZE_RATIO), antialias=True), v2.CenterCrop(size)]
        self.transform = v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True)])

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.train and n >= self.batch_size else -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    @functools.cached_property
    def digest(self) -> str:
        """Names the stream by what determines its pixels: the files, labels, indices, seed, batch size,
        train/eval, augmentation, the number of workers and the device."""
        spec = {
            "info": asdict(self.info),
            "batch_size": self.batch_size,
            "seed": self.seed,
            "train": self.train,
            "augment": self.augment,
            "workers": self.workers,
            "device": self.device.type,
        }
        h = hashlib.sha256(json.dumps(spec, sort_keys=True).encode())
        h.update("\n".join(self.images.paths.tolist()).encode())
        for tensor in (self.index, self.labels):
            h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
        return h.hexdigest()[:24]

    def _generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(1_000_003 * self.seed + epoch)

    def epoch(self, epoch: int = 0) -> Iterator[Batch]:
        n = len(self.labels)
        order = torch.randperm(n, generator=self._generator(epoch)) if self.train else torch.arange(n)
        batches = [order[b * self.batch_size : (b + 1) * self.batch_size] for b in range(len(self))]
        loader = DataLoader(
            _Files(self.images.paths, self.transform),
            batch_sampler=[b.tolist() for b in batches],
            num_workers=self.workers,
            worker_init_fn=_seed_worker,
            generator=self._generator(epoch),
            pin_memory=self.device.type == "cuda",
        )
        for number, (x, pick) in enumerate(zip(loader, batches, strict=True)):
            pick = pick.to(self.device)
            x = normalize(x.to(self.device, non_blocking=True), self.info)
            yield Batch(
                x, self.labels[pick], self.index[pick], (self.digest, epoch if self.train else 0, number)
            )

    def subset(self, keep: torch.Tensor) -> FolderStream:
        """A stream over the samples where boolean mask `keep` is set."""
        keep = keep.to(self.device)
        return FolderStream(
            self.images[keep],
            self.labels[keep],
            self.info,
            self.batch_size,
            self.seed,
            self.train,
            self.device,
            self.index[keep],
            self.augment,
            self.workers,
        )


def make_stream(
    images: torch.Tensor | FolderImages,
    labels: torch.Tensor,
    info: DatasetInfo,
    batch_size: int,
    seed: int = 0,
    train: bool = True,
    device: torch.device | str = "cpu",
    index: torch.Tensor | None = None,
    augment: str = "crop+flip",
    workers: int | None = None,
) -> BatchStream | FolderStream:
    """The stream for a split: in memory for pixel tensors, read by `workers` processes for image files."""
    if isinstance(images, FolderImages):
        return FolderStream(images, labels, info, batch_size, seed, train, device, index, augment, workers)
    return BatchStream(images, labels, info, batch_size, seed, train, device, index, augment)
