"""One KD epoch of kdbench against the same epoch in a plain PyTorch loop written like RepDistiller's train_distill,
run by hand (not by CI) on an idle machine:

    python benchmarks/kd_epoch_vs_reference.py --threads 2 --workers 2 --images 2560 --repeats 5

Both train cifar_resnet20 from a live (frozen, forward-only) cifar_resnet56 teacher with batch 64 on CIFAR-100-shaped
data generated in memory (uniform random 3x32x32 uint8 images, 100 classes): KL at T=4 times T^2 weighted 0.9 plus
cross-entropy weighted 0.1, SGD lr 0.05, momentum 0.9, weight decay 5e-4.

- kdbench: `kdbench.engine.fit` for one epoch of the `kd` method on a `BatchStream` (whole-batch augmentation on the
  device), in each (precision, memory format) of `kdbench.bench.CONFIGS` this CPU runs (`kdbench.fastpaths`),
  with the teacher live and with its outputs shared through the on-disk cache as grid cells share them;
- reference: a `Dataset` of HWC uint8 images with torchvision's per-sample RandomCrop(32, padding=4),
  RandomHorizontalFlip, ToTensor and Normalize, a `DataLoader` with worker processes (started each epoch, as
  RepDistiller's are), the teacher under `no_grad`, and RepDistiller's per-batch loss and top-1/top-5 bookkeeping.

One untimed warm-up epoch each, then `--repeats` rounds in each of which every loop trains one timed epoch
(interleaved, so drifting load hits them alike). Reported: the median samples per second of each, and its ratio to
the reference. The table, with the machine, is written atomically to --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from kdbench import env, fastpaths
from kdbench.bench import config_label, runnable_configs
from kdbench.data.catalog import DATASETS, DatasetInfo
from kdbench.data.loader import BatchStream
from kdbench.engine import RECIPES, fit
from kdbench.methods import Setup, get_method
from kdbench.models import create_model
from kdbench.results import atomic_write_text
from kdbench.teacher_outputs import TeacherOutputCache

TEACHER, STUDENT = "cifar_resnet56", "cifar_resnet20"
BATCH, LR, MOMENTUM, WEIGHT_DECAY = 64, 0.05, 0.9, 5e-4  # RepDistiller's CIFAR-100 recipe
TEMPERATURE, CE_WEIGHT, KD_WEIGHT = 4.0, 0.1, 0.9  # RepDistiller train_student.py: -r 0.1 -a 0.9, kd_T 4
INFO = dataclasses.replace(DATASETS["cifar100"], name="cifar100-synthetic")

Epoch = Callable[[], int]  # trains one epoch, returns the samples it trained on


def synthetic_data(images: int, info: DatasetInfo, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform random uint8 images (N, C, H, W) and labels: CIFAR-100's shapes, no download."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(
        0, 256, (images, info.in_chans, info.image_size, info.image_size), dtype=torch.uint8, generator=gen
    )
    return x, torch.randint(0, info.num_classes, (images,), generator=gen)


def models(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """A teacher and a student, built alike for both loops (untrained: a forward costs the same)."""
    torch.manual_seed(seed)
    return create_model(TEACHER, INFO.num_classes, INFO.in_chans), create_model(
        STUDENT, INFO.num_classes, INFO.in_chans
    )


# ---- kdbench -------------------------------------------------------------------------------------------------------
def kdbench_epoch(
    x: torch.Tensor, y: torch.Tensor, precision: str, memory_format: str, shared_in: Path | None = None
) -> Epoch:
    """One epoch of kdbench's `kd` through the engine's own loop: teacher forward live, or (`shared_in`, a folder)
    teacher outputs shared as grid cells share them: the untimed warm-up epoch writes them to the folder, and
    each timed epoch starts from an empty cache object that reads them back from disk, as a later cell would."""
    teacher, student = models()
    for model in (teacher.eval(), student):
        fastpaths.prepare_model(model, memory_format, precision)
    stream = BatchStream(x, y, INFO, BATCH, seed=0)
    recipe = dataclasses.replace(RECIPES["cifar"], epochs=1)
    setup = Setup(
        student,
        [teacher],
        INFO,
        lambda name: create_model(name, INFO.num_classes, INFO.in_chans),
        stream.num_samples,
        1,
        len(stream),
        recipe=recipe,
        precision=precision,
        memory_format=memory_format,
    )
    method = fastpaths.to_layout(
        get_method("kd")(setup, temperature=TEMPERATURE, ce_weight=CE_WEIGHT, kd_weight=KD_WEIGHT),
        memory_format,
    )
    if shared_in is None:
        return lambda: fit(method, stream, recipe, 1, progress=False).samples

    def epoch() -> int:
        cache = TeacherOutputCache(teacher, f"bench-{precision}-{memory_format}", shared_in)
        setup.output_caches = [cache]
        samples = fit(method, stream, recipe, 1, progress=False).samples
        cache.flush()
        return samples

    return epoch


# ---- the reference: RepDistiller's train_distill, KD only --------------------------------------------------------
class ImageData(Dataset):
    """HWC uint8 images with per-sample PIL transforms, as torchvision's CIFAR100 dataset serves them."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, info: DatasetInfo) -> None:
        self.images = np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())
        self.labels = y.tolist()
        self.transform = transforms.Compose(
            [
                transforms.RandomCrop(32, padding=4),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(info.mean, info.std),
            ]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def distill_kl(y_s: torch.Tensor, y_t: torch.Tensor, temperature: float) -> torch.Tensor:
    """RepDistiller's DistillKL."""
    p_s = F.log_softmax(y_s / temperature, dim=1)
    p_t = F.softmax(y_t / temperature, dim=1)
    return F.kl_div(p_s, p_t, reduction="sum") * temperature**2 / y_s.shape[0]


def topk_correct(output: torch.Tensor, target: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[float]:
    """RepDistiller's `accuracy`: top-k precision of the batch, in percent."""
    pred = output.topk(max(ks), 1, True, True).indices.t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum().item() * 100.0 / target.shape[0] for k in ks]


def reference_epoch(x: torch.Tensor, y: torch.Tensor, workers: int) -> Epoch:
    """One epoch of RepDistiller's train_distill with the KD criterion (its other criteria left out)."""
    teacher, student = models()
    teacher.eval()
    loader = DataLoader(ImageData(x, y, INFO), batch_size=BATCH, shuffle=True, num_workers=workers)
    optimizer = torch.optim.SGD(student.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)

    def epoch() -> int:
        student.train()
        losses, top1, seen = (
            [],
            [],
            0,
        )  # RepDistiller's AverageMeters: a host read of loss and accuracy per batch
        for images, target in loader:
            images = images.float()
            logit_s = student(images)
            with torch.no_grad():
                logit_t = teacher(images)
            loss = CE_WEIGHT * F.cross_entropy(logit_s, target) + KD_WEIGHT * distill_kl(
                logit_s, logit_t, TEMPERATURE
            )
            losses.append(loss.item())
            top1.append(topk_correct(logit_s, target)[0])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(target)
        return seen

    return epoch


# ---- timing and the report -----------------------------------------------------------------------------------------
def timed(epochs: dict[str, Epoch], repeats: int) -> dict[str, list[float]]:
    """Samples per second of every epoch: one untimed warm-up each, then `repeats` interleaved rounds."""
    for epoch in epochs.values():
        epoch()
    rates: dict[str, list[float]] = {name: [] for name in epochs}
    for _ in range(repeats):
        for name, epoch in epochs.items():
            start = time.perf_counter()
            samples = epoch()
            rates[name].append(samples / (time.perf_counter() - start))
    return rates


def report(rates: dict[str, list[float]], args: argparse.Namespace) -> str:
    reference = statistics.median(rates["reference"])
    rows = [
        {
            "loop": name,
            "samples_per_s": statistics.median(r),
            "min": min(r),
            "max": max(r),
            "vs_reference": statistics.median(r) / reference,
        }
        for name, r in rates.items()
    ]
    table = pd.DataFrame(rows).round({"samples_per_s": 1, "min": 1, "max": 1, "vs_reference": 2})
    cpu = torch.device("cpu")
    return "\n".join(
        [
            "# One KD epoch: kdbench against a RepDistiller-style PyTorch loop",
            "",
            f"{TEACHER} → {STUDENT}, live teacher, batch {BATCH}, {args.images} random CIFAR-100-shaped images "
            f"(uint8 3x32x32, 100 classes) generated in memory; KL T={TEMPERATURE:g} x T² weight {KD_WEIGHT} + CE "
            f"{CE_WEIGHT}; SGD lr {LR}, momentum {MOMENTUM}, weight decay {WEIGHT_DECAY}. One untimed warm-up epoch each, "
            f"then the median (min, max) of {args.repeats} interleaved timed epochs. Reference: torchvision per-sample "
            f"transforms, DataLoader with {args.workers} workers. Written by benchmarks/kd_epoch_vs_reference.py.",
            "",
            f"Machine: {env.cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
            f"bf16 kernels: {'yes' if env.bf16_supported(cpu) else 'no'}, measured {time.strftime('%Y-%m-%d %H:%M %Z')}.",
            "",
            table.to_markdown(index=False),
            "",
        ]
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2560)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--threads", type=int, default=torch.get_num_threads(), help="torch threads (default: torch's)"
    )
    p.add_argument("--workers", type=int, default=2, help="the reference DataLoader's worker processes")
    p.add_argument("--out", type=Path, default=Path("results/perf/kd_epoch_vs_reference.md"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x, y = synthetic_data(args.images, INFO)
    epochs = {"reference": reference_epoch(x, y, args.workers)}
    shared = Path(tempfile.mkdtemp(prefix="kdbench-shared-outputs-"))
    for precision, layout in runnable_configs(torch.device("cpu")):
        epochs[f"kdbench {config_label(precision, layout)}"] = kdbench_epoch(x, y, precision, layout)
        epochs[f"kdbench {config_label(precision, layout)}, shared teacher outputs"] = kdbench_epoch(
            x, y, precision, layout, shared
        )
    text = report(timed(epochs, args.repeats), args)
    print(text)
    atomic_write_text(args.out, text)
    shutil.rmtree(shared, ignore_errors=True)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
