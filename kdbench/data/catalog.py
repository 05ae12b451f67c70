"""The datasets kdbench knows, loaded once into uint8 tensors.

Fashion-MNIST ships with the package (the original IDX files, MIT-licensed, see fashion_mnist/LICENSE), so
the default run needs no network. CIFAR-10/100 and MNIST come through torchvision: from a local root when
the files are there, downloaded otherwise. `synthetic:<name>` is any of them in shape only (channels, size,
classes, split sizes), with images made from a fixed seed: for plumbing checks and speed measurements where the
real files are absent (a GPU machine without a network, CI).
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torchvision
from torchvision.datasets import ImageFolder

from kdbench.errors import KdbenchError, unknown
from kdbench.results import atomic_write_bytes


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and the augmentation need to know about a dataset."""

    name: str
    num_classes: int
    in_chans: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int  # random-crop padding used in training (RepDistiller: 4 for CIFAR)
    flip: bool  # horizontal flip is label-preserving for this dataset


DATASETS: dict[str, DatasetInfo] = {
    # Fashion-MNIST statistics over the 60k training images; pad 2 keeps the crop at 1/7 of the side like CIFAR's 4/32.
    "fashion-mnist": DatasetInfo("fashion-mnist", 10, 1, 28, (0.2860,), (0.3530,), 2, True),
    "mnist": DatasetInfo("mnist", 10, 1, 28, (0.1307,), (0.3081,), 2, False),
    # CIFAR statistics as in RepDistiller's cifar100.py / the torchvision reference.
    "cifar10": DatasetInfo("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 4, True),
    "cifar100": DatasetInfo(
        "cifar100", 100, 3, 32, (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761), 4, True
    ),
}

# folder datasets (kdbench.data.folder): too large for memory, read from a local root only (no download), in an
# ImageFolder layout under root/<folder>/train and root/<folder>/val; ImageNet's statistics
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FOLDER_DATASETS: dict[str, DatasetInfo] = {
    "tiny-imagenet": DatasetInfo("tiny-imagenet", 200, 3, 64, IMAGENET_MEAN, IMAGENET_STD, 0, True),
    "imagenet": DatasetInfo("imagenet", 1000, 3, 224, IMAGENET_MEAN, IMAGENET_STD, 0, True),
}
FOLDERS = {"tiny-imagenet": "tiny-imagenet-200", "imagenet": "imagenet"}
SYNTHETIC = "synthetic:"
# the real datasets' split sizes, which their synthetic stand-ins copy
SPLIT_SIZES = {
    "fashion-mnist": (60000, 10000),
    "mnist": (60000, 10000),
    "cifar10": (50000, 10000),
    "cifar100": (50000, 10000),
}
SYNTHETIC_SEED = 0


def dataset_names() -> list[str]:
    """The valid dataset names, the synthetic stand-ins included, for error messages and --help."""
    return [*DATASETS, *FOLDER_DATASETS, *(SYNTHETIC + name for name in DATASETS)]


def dataset_info(name: str) -> DatasetInfo:
    """A dataset's description; a synthetic stand-in's is its original's under its own name. An unknown name
    raises naming the valid ones."""
    if name in FOLDER_DATASETS:
        return FOLDER_DATASETS[name]
    base = name.removeprefix(SYNTHETIC)
    if base not in DATASETS:
        raise unknown("dataset", name, dataset_names())
    return DATASETS[base] if base == name else replace(DATASETS[base], name=name)


# SHA-256 of the bundled Fashion-MNIST files (Debian's dataset-fashion-mnist; the IDX payload is the original data).
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}


@dataclass
class TensorData:
    """A whole dataset as uint8 NCHW images and int64 labels, ready to be moved to a device; for a folder
    dataset, its image files in place of the pixels (`FolderImages`)."""

    info: DatasetInfo
    x_train: torch.Tensor | FolderImages
    y_train: torch.Tensor
    x_test: torch.Tensor | FolderImages
    y_test: torch.Tensor


class FolderImages:
    """A dataset split's image files: what a `TensorData` holds in place of a pixel tensor for a folder dataset.
    Indexing with an index tensor or boolean mask gives the files of those samples."""

    def __init__(self, paths: np.ndarray) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: torch.Tensor) -> FolderImages:
        return FolderImages(self.paths[np.asarray(index.cpu())])


def read_split(root: Path, split: str) -> tuple[FolderImages, torch.Tensor, list[str]]:
    """The files and labels of `root/split` (ImageFolder: classes are the sorted folder names)."""
    folder = root / split
    if not folder.is_dir():
        raise KdbenchError(
            f"no {folder}: a folder dataset needs train/ and val/ with one subfolder of images per class "
            "(Tiny-ImageNet's val/ must first be sorted into class folders by its val_annotations.txt)"
        )
    found = ImageFolder(str(folder), loader=str)  # the loader is never called: only the file list is read
    paths = np.array([p for p, _ in found.samples])
    return FolderImages(paths), torch.tensor([c for _, c in found.samples], dtype=torch.long), found.classes


def default_root() -> Path:
    """Where datasets live: $KDBENCH_DATA, else data/ in kdbench's cache folder ($KDBENCH_CACHE, else
    ~/.cache/kdbench), so that moving the cache moves everything kdbench unpacks or downloads with it."""
    if os.environ.get("KDBENCH_DATA"):
        return Path(os.environ["KDBENCH_DATA"]).expanduser()
    from kdbench.run_config import default_cache_dir  # at call time: it imports this package

    return default_cache_dir() / "data"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bundled_fashion_mnist_dir() -> Path:
    return Path(str(resources.files("kdbench.data") / "fashion_mnist"))


def _unpack_bundled_fashion_mnist(root: Path, src: Path) -> None:
    """Verify the bundled .gz files and place the IDX files where torchvision looks for them.

    torchvision's own md5 check would reject these recompressed .gz files and try the network, so we check our
    own SHA-256 sums and hand torchvision the decompressed files, which it accepts with download=False. Every
    file is checked before any is written, and each is written atomically, so a bad file leaves nothing behind.
    """
    raw = root / "FashionMNIST" / "raw"
    missing = [name for name in FASHION_MNIST_SHA256 if not (raw / name[: -len(".gz")]).exists()]
    fix = "reinstall kdbench, or restore the file with git in a source checkout"
    for name in missing:
        try:
            got, expected = sha256(src / name), FASHION_MNIST_SHA256[name]
        except OSError as exc:
            raise KdbenchError(
                f"cannot read Fashion-MNIST file {src / name} ({exc.strerror}); {fix}"
            ) from None
        if got != expected:
            raise KdbenchError(
                f"Fashion-MNIST file {src / name} does not match its checksum (SHA-256 {got[:12]}..., "
                f"expected {expected[:12]}...): it is corrupt; {fix}"
            )
    for name in missing:
        with gzip.open(src / name, "rb") as fh:
            atomic_write_bytes(raw / name[: -len(".gz")], fh.read())


def _as_nchw(data: torch.Tensor | np.ndarray) -> torch.Tensor:
    """torchvision keeps MNIST as (N, H, W) tensors and CIFAR as (N, H, W, C) arrays; make both NCHW uint8."""
    t = torch.as_tensor(data)
    return t.unsqueeze(1).contiguous() if t.ndim == 3 else t.permute(0, 3, 1, 2).contiguous()


_TORCHVISION = {
    "fashion-mnist": torchvision.datasets.FashionMNIST,
    "mnist": torchvision.datasets.MNIST,
    "cifar10": torchvision.datasets.CIFAR10,
    "cifar100": torchvision.datasets.CIFAR100,
}


def _torchvision_split(name: str, root: Path, train: bool):
    cls = _TORCHVISION[name]
    try:
        return cls(str(root), train=train, download=False)
    except RuntimeError:
        pass  # not present locally: try the download for users with a network
    try:
        return cls(str(root), train=train, download=True)
    except Exception as exc:  # network refused, DNS failure, partial file...
        raise KdbenchError(
            f"dataset {name!r} is not in {root} and could not be downloaded ({type(exc).__name__}); "
            f"put torchvision's {cls.__name__} files under {root} (or pass --data-root / set KDBENCH_DATA)"
        ) from None


def load_dataset(name: str, root: str | Path | None = None, bundled: str | Path | None = None) -> TensorData:
    """Load a whole dataset into memory as tensors (all of kdbench's datasets fit: at most 180 MB).

    `bundled`: where Fashion-MNIST's .gz files are read from when `root` lacks them (default: the package's)."""
    info = dataset_info(name)
    if name in FOLDER_DATASETS:
        folder = (Path(root).expanduser() if root else default_root()) / FOLDERS[name]
        (x_train, y_train, classes), (x_test, y_test, val_classes) = (
            read_split(folder, "train"),
            read_split(folder, "val"),
        )
        if len(classes) != info.num_classes or val_classes != classes:
            raise KdbenchError(
                f"{folder} must have {info.num_classes} class folders, the same under train/ and val/; "
                f"found {len(classes)} and {len(val_classes)}"
            )
        return TensorData(info, x_train, y_train, x_test, y_test)
    if name.startswith(SYNTHETIC):
        return synthetic_dataset(info, *SPLIT_SIZES[name.removeprefix(SYNTHETIC)])
    root = Path(root).expanduser() if root else default_root()
    if name == "fashion-mnist" and not (root / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte").exists():
        _unpack_bundled_fashion_mnist(root, Path(bundled) if bundled else bundled_fashion_mnist_dir())
    train, test = _torchvision_split(name, root, True), _torchvision_split(name, root, False)
    return TensorData(
        info=info,
        x_train=_as_nchw(train.data),
        y_train=torch.as_tensor(train.targets, dtype=torch.long),
        x_test=_as_nchw(test.data),
        y_test=torch.as_tensor(test.targets, dtype=torch.long),
    )


def synthetic_dataset(info: DatasetInfo, n_train: int, n_test: int, seed: int = SYNTHETIC_SEED) -> TensorData:
    """Images in `info`'s shape from a fixed seed, learnable but not trivially: each class has a blocky prototype
    (random 4x4-pixel blocks), and an image is the mean of its class's prototype and uniform noise. Unlike random
    labels on noise (torchvision's FakeData), a model trained on it leaves chance, so a plumbing run exercises the
    same paths as a real one (no collapse warnings, teachers better than students)."""
    g = torch.Generator().manual_seed(seed)
    side, block = info.image_size, 4
    coarse = torch.randint(
        0, 256, (info.num_classes, info.in_chans, -(-side // block), -(-side // block)), generator=g
    )
    prototypes = (
        coarse.repeat_interleave(block, 2).repeat_interleave(block, 3)[..., :side, :side].to(torch.int16)
    )

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, info.num_classes, (n,), generator=g)
        noise = torch.randint(0, 256, (n, info.in_chans, side, side), generator=g, dtype=torch.int16)
        return ((prototypes[y] + noise) // 2).to(torch.uint8), y

    x_train, y_train = split(n_train)
    x_test, y_test = split(n_test)
    return TensorData(info, x_train, y_train, x_test, y_test)
