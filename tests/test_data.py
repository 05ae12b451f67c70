"""The bundled dataset loads offline, verified; the batch stream is seeded, augments correctly and is fast."""

from __future__ import annotations

import pytest
import torch

from kdbench.data import BatchStream, catalog, load_dataset, train_val_indices
from kdbench.data.loader import random_crop_flip
from kdbench.errors import KdbenchError


def test_bundled_fashion_mnist_is_the_original(fashion):
    assert fashion.x_train.shape == (60000, 1, 28, 28) and fashion.x_test.shape == (10000, 1, 28, 28)
    assert fashion.y_train[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert fashion.x_train.float().div(255).mean().item() == pytest.approx(0.2860, abs=1e-3)


def test_checksums_of_shipped_files_match():
    folder = catalog.bundled_fashion_mnist_dir()
    for name, digest in catalog.FASHION_MNIST_SHA256.items():
        assert catalog.sha256(folder / name) == digest


def test_corrupt_bundled_file_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setitem(catalog.FASHION_MNIST_SHA256, "t10k-labels-idx1-ubyte.gz", "0" * 64)
    with pytest.raises(KdbenchError, match="SHA-256"):
        load_dataset("fashion-mnist", tmp_path)
    assert not list(tmp_path.rglob("*.tmp*")), "a half-written file was left behind"


def test_unknown_dataset_names_choices():
    with pytest.raises(KdbenchError, match="valid choices: cifar10, cifar100, fashion-mnist, mnist"):
        load_dataset("imagenet")


def test_missing_offline_dataset_says_where_to_put_it(tmp_path, monkeypatch):
    import torchvision

    def refuse(*args, **kwargs):
        raise RuntimeError("no network")

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", refuse)
    with pytest.raises(KdbenchError, match=str(tmp_path)):
        load_dataset("cifar10", tmp_path)


def test_stream_is_seeded_and_replayable(fashion):
    s = BatchStream(fashion.x_train[:256], fashion.y_train[:256], fashion.info, 64, seed=3)
    a = [b.x for b in s.epoch(1)]
    b = [b.x for b in s.epoch(1)]
    c = [b.x for b in s.epoch(2)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])
    assert len(a) == 4


def test_crop_and_flip_match_per_image_reference():
    x = torch.rand(3, 1, 6, 6)
    offsets = torch.tensor([[0, 0], [2, 1], [4, 4]])
    flips = torch.tensor([False, True, False])
    out = random_crop_flip(x, offsets, flips, padding=2)
    for i in range(3):
        padded = torch.nn.functional.pad(x[i], (2, 2, 2, 2))
        r, c = offsets[i].tolist()
        ref = padded[:, r : r + 6, c : c + 6]
        ref = ref.flip(2) if flips[i] else ref
        assert torch.equal(out[i], ref)


def test_train_val_split_is_disjoint_stratified_and_fixed(fashion):
    train, val = train_val_indices(fashion.y_train, 1000, 500, seed=0)
    assert len(train) == 1000 and len(val) == 500
    assert not set(train.tolist()) & set(val.tolist())
    assert torch.bincount(fashion.y_train[train], minlength=10).tolist() == [100] * 10
    again, _ = train_val_indices(fashion.y_train, 1000, 500, seed=0)
    assert torch.equal(train, again)
    with pytest.raises(KdbenchError):
        train_val_indices(fashion.y_train, 60000, 500, seed=0)
