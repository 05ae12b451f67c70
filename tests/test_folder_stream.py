"""Folder datasets (ImageFolder layout, read by DataLoader workers): the stream replays its augmented batches exactly,
and a cell trains on one end to end, its teachers' outputs shared between cells through the view-keyed cache."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from kdbench.data import catalog
from kdbench.data.catalog import FolderImages, load_dataset, read_split
from kdbench.data.folder import FolderStream, make_stream
from kdbench.errors import KdbenchError
from kdbench.runner import RunConfig, run

CLASSES = ("ant", "bee", "cat")


@pytest.fixture
def folder_root(tmp_path, monkeypatch):
    """A three-class 'tiny-imagenet' of 40x48 colour images: 8 a class for training, 2 for validation."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 2)):
        for c, name in enumerate(CLASSES):
            folder = tmp_path / "tiny-imagenet-200" / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(rng.normal(60 + 70 * c, 30, (40, 48, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    info = dataclasses.replace(
        catalog.FOLDER_DATASETS["tiny-imagenet"], num_classes=len(CLASSES), image_size=32
    )
    monkeypatch.setitem(catalog.FOLDER_DATASETS, "tiny-imagenet", info)
    return tmp_path


def _pixels(stream: FolderStream, epoch: int) -> list[torch.Tensor]:
    return [b.x for b in stream.epoch(epoch)]


def test_folder_stream_replays_each_epoch_and_keeps_the_interface(folder_root):
    data = load_dataset("tiny-imagenet", folder_root)
    assert isinstance(data.x_train, FolderImages) and len(data.x_train) == 24 and len(data.x_test) == 6
    assert data.y_train.tolist() == [c for c in range(3) for _ in range(8)]
    stream = make_stream(data.x_train, data.y_train, data.info, 8, seed=1, workers=2)
    assert isinstance(stream, FolderStream) and len(stream) == 3 and stream.num_samples == 24
    first, again, other = _pixels(stream, 0), _pixels(stream, 0), _pixels(stream, 1)
    assert first[0].shape == (8, 3, 32, 32) and first[0].dtype == torch.float32
    assert all(
        torch.equal(a, b) for a, b in zip(first, again, strict=True)
    )  # same seed and epoch: same pixels
    assert not torch.equal(first[0], other[0])
    assert make_stream(data.x_train, data.y_train, data.info, 8, seed=1, workers=1).digest != stream.digest
    views = [b.view for b in stream.epoch(2)]
    assert views == [(stream.digest, 2, b) for b in range(3)]
    bees = stream.subset(data.y_train == 1)
    assert bees.num_samples == 8 and all((b.y == 1).all() for b in bees.epoch(0))
    test = make_stream(data.x_test, data.y_test, data.info, 4, train=False, workers=0)
    assert [len(b) for b in test.epoch(0)] == [4, 2] and torch.equal(_pixels(test, 0)[0], _pixels(test, 5)[0])


def test_a_cell_trains_on_a_folder_dataset_and_shares_teacher_outputs(folder_root, tmp_path):
    common = dict(student="cifar_resnet8", teachers=("cifar_resnet8",), dataset="tiny-imagenet", epochs=1)
    where = dict(
        device="cpu", results_dir=tmp_path / "res", cache_dir=tmp_path / "cache", data_root=folder_root
    )
    kd = run(RunConfig(method="kd", **common), progress=False, latency_repeats=2, **where)
    assert kd["status"] == "ok" and kd["train_samples"] == 24 and kd["test_samples"] == 6
    dkd = run(RunConfig(method="dkd", **common), progress=False, latency_repeats=2, **where)
    assert dkd["teacher_output_cache"]["hits"] > 0  # the same augmented views: kd's teacher outputs served


def test_a_missing_or_mismatched_folder_says_what_it_needs(folder_root, tmp_path):
    with pytest.raises(KdbenchError, match="train/ and val/ with one subfolder of images per class"):
        read_split(tmp_path / "nowhere", "train")
    (folder_root / "tiny-imagenet-200" / "val" / "cat").rename(
        folder_root / "tiny-imagenet-200" / "val" / "dog"
    )
    with pytest.raises(KdbenchError, match="the same under train/ and val/"):
        load_dataset("tiny-imagenet", folder_root)
