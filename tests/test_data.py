"""The bundled dataset loads offline, verified; the batch stream is seeded, augments correctly and is fast."""

from __future__ import annotations

import dataclasses

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
    with pytest.raises(
        KdbenchError, match="valid choices: cifar10, cifar100, fashion-mnist, imagenet, mnist, synthetic:"
    ):
        load_dataset("svhn")


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


def test_synthetic_stand_in_has_its_originals_shape_and_is_learnable(tmp_path):
    data = load_dataset(
        "synthetic:cifar100", tmp_path
    )  # no files: nothing is read from or written to the root
    assert not list(tmp_path.iterdir())
    assert data.info == dataclasses.replace(catalog.DATASETS["cifar100"], name="synthetic:cifar100")
    assert data.x_train.shape == (50000, 3, 32, 32) and data.x_test.shape == (10000, 3, 32, 32)
    assert data.x_train.dtype == torch.uint8 and set(data.y_train.unique().tolist()) == set(range(100))
    again = load_dataset("synthetic:cifar100")
    assert torch.equal(again.x_test, data.x_test) and torch.equal(again.y_test, data.y_test)  # fixed seed
    # learnable: the nearest class mean of the training images classifies test images far above chance (1%)
    means = torch.stack([data.x_train[data.y_train == c][:200].float().mean(0) for c in range(100)])
    x = data.x_test[:500].float()
    nearest = torch.cdist(x.flatten(1), means.flatten(1)).argmin(1)
    assert (nearest == data.y_test[:500]).float().mean() > 0.5


@pytest.mark.parametrize("name", ["synthetic:", "synthetic:imagenet", "synthetic:synthetic:mnist"])
def test_unknown_synthetic_names_list_the_valid_ones(name):
    with pytest.raises(KdbenchError, match="valid choices: .*synthetic:cifar100"):
        catalog.dataset_info(name)


def test_synthetic_teacher_file_name_has_no_colon():
    from kdbench.teachers import TeacherKey

    key = TeacherKey("synthetic:cifar100", "cifar_resnet8", "{}", 1, 64, 0, 0)
    assert ":" not in key.stem() and key.stem().startswith("synthetic-cifar100-")
