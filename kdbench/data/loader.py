"""Batches from in-memory tensors, with augmentation done on whole batches on the run's device.

Why not a DataLoader: on a 2-core CPU, per-sample PIL transforms and worker processes cost more than the small
networks' training step. Here an epoch's order, crop offsets and flips are drawn from one generator seeded by
(seed, epoch) on the CPU, so the augmentation stream is the same on every device and can be replayed exactly.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch

from kdbench.data.catalog import DatasetInfo


@dataclass
class Batch:
    """One training or evaluation batch: normalised images, labels and their indices into the source split.

    `view` names the exact augmented pixels, (stream digest, epoch, batch number), for caches of teacher outputs
    (`kdbench.teacher_outputs`); None (synthetic or hand-made inputs) means "compute, never look up".
    """

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    view: tuple[str, int, int] | None = None

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Augmentation:
    """One epoch's augmentation draws for the whole split: order, crop offsets and flips."""

    order: torch.Tensor
    offsets: torch.Tensor  # (N, 2) row/column offsets into the padded image
    flips: torch.Tensor  # (N,) bool


def normalize(x: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    """uint8 or [0, 1] images to the dataset's standardised float inputs."""
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x
    mean = torch.tensor(info.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(info.std, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def random_crop_flip(
    x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int
) -> torch.Tensor:
    """Zero-pad by `padding`, crop back to size at per-sample offsets, mirror where `flips` is set.

    Equivalent to torchvision's RandomCrop(size, padding) + RandomHorizontalFlip applied image by image, done
    with one gather for the batch.
    """
    n, _, h, w = x.shape
    if padding:
        padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
        rows = (offsets[:, 0, None] + torch.arange(h, device=x.device)).view(n, 1, h, 1)
        cols = (offsets[:, 1, None] + torch.arange(w, device=x.device)).view(n, 1, 1, w)
        batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
        chan = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
        x = padded[batch, chan, rows, cols]
    return torch.where(flips.view(n, 1, 1, 1), x.flip(3), x)


class BatchStream:
    """Seeded batches over a fixed set of samples held on the device.

    `epoch(e)` yields the same batches, in the same order, with the same augmentation, for the same (seed, e).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        info: DatasetInfo,
        batch_size: int,
        seed: int = 0,
        train: bool = True,
        device: torch.device | str = "cpu",
        index: torch.Tensor | None = None,
        augment: str = "crop+flip",
    ) -> None:
        self.info = info
        self.augment = (
            augment  # which of the dataset's augmentations training applies (kdbench.engine.AUGMENTATIONS)
        )
        self.padding = info.crop_padding if "crop" in augment else 0
        self.flip = info.flip and "flip" in augment
        self.batch_size = batch_size
        self.seed = seed
        self.train = train
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.index = (index if index is not None else torch.arange(len(labels))).to(self.device)

    def __len__(self) -> int:
        """Batches per epoch. Training drops the last partial batch (a tiny batch gives noisy batch-norm
        statistics); the order changes every epoch, so no sample is always the one left out."""
        n = len(self.labels)
        return n // self.batch_size if self.train and n >= self.batch_size else -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    @functools.cached_property
    def digest(self) -> str:
        """Names the stream by everything that determines its batches' pixels: the images, which samples, labels,
        seed, batch size, train/eval, the dataset's augmentation and normalisation, and the device the pixels are
        computed on. Equal digests give equal batches for every (epoch, batch number). A stream is not changed
        after it is built (`subset` builds a new one)."""
        spec = {
            "info": asdict(self.info),
            "batch_size": self.batch_size,
            "seed": self.seed,
            "train": self.train,
            "augment": [self.padding, self.flip],
            "device": self.device.type,
            "images": [str(self.images.dtype), list(self.images.shape)],
        }
        h = hashlib.sha256(json.dumps(spec, sort_keys=True).encode())
        for tensor in (self.images, self.index, self.labels):
            h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
        return h.hexdigest()[:24]

    def augmentation(self, epoch: int) -> Augmentation:
        """The epoch's draws, from a CPU generator so they do not depend on the device."""
        gen = torch.Generator().manual_seed(1_000_003 * self.seed + epoch)
        n, pad = len(self.labels), self.padding
        order = torch.randperm(n, generator=gen)
        offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen)
        flips = torch.rand(n, generator=gen) < 0.5 if self.flip else torch.zeros(n, dtype=torch.bool)
        return Augmentation(order, offsets, flips)

    def epoch(self, epoch: int = 0) -> Iterator[Batch]:
        if not self.train:  # the same batches whatever the epoch
            for number, start in enumerate(range(0, len(self.labels), self.batch_size)):
                sl = slice(start, start + self.batch_size)
                yield Batch(
                    normalize(self.images[sl], self.info),
                    self.labels[sl],
                    self.index[sl],
                    (self.digest, 0, number),
                )
            return
        aug = self.augmentation(epoch)
        order, offsets, flips = (t.to(self.device) for t in (aug.order, aug.offsets, aug.flips))
        for b in range(len(self)):
            pick = order[b * self.batch_size : (b + 1) * self.batch_size]
            x = random_crop_flip(self.images[pick].float() / 255.0, offsets[pick], flips[pick], self.padding)
            yield Batch(normalize(x, self.info), self.labels[pick], self.index[pick], (self.digest, epoch, b))

    def subset(self, keep: torch.Tensor) -> BatchStream:
        """A stream over the samples where boolean mask `keep` is set (e.g. one task's classes)."""
        keep = keep.to(self.device)
        return BatchStream(
            self.images[keep],
            self.labels[keep],
            self.info,
            self.batch_size,
            self.seed,
            self.train,
            self.device,
            self.index[keep],
            self.augment,
        )
