"""Shared fixtures: a tiny bundled-data setup so every method can run a few real steps in well under a second."""

from __future__ import annotations

import os

import pytest
import torch

from kdbench.data import BatchStream, load_dataset
from kdbench.methods import Setup
from kdbench.models import create_model

torch.set_num_threads(1)  # tiny batches: one thread is faster and leaves the other core free


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Teachers and unpacked data go to a temporary cache, never the user's ~/.cache/kdbench; a cache the caller
    set ($KDBENCH_CACHE, $KDBENCH_DATA: e.g. one kept warm between runs) is used as it is."""
    patch = pytest.MonkeyPatch()
    for var, name in (("KDBENCH_CACHE", "cache"), ("KDBENCH_DATA", "data")):
        if not os.environ.get(var):
            patch.setenv(var, str(tmp_path_factory.mktemp(name)))
    yield
    patch.undo()


TINY_TEACHER = "cifar_resnet14"
TINY_STUDENT = "cifar_resnet8"


@pytest.fixture(scope="session")
def fashion():
    return load_dataset("fashion-mnist")


@pytest.fixture
def tiny_stream(fashion):
    """64 Fashion-MNIST training images, batches of 16, augmented."""
    return BatchStream(fashion.x_train[:64], fashion.y_train[:64], fashion.info, batch_size=16, seed=0)


def make_setup(fashion, stream, teachers: int = 1, student: str = TINY_STUDENT, epochs: int = 1) -> Setup:
    info = fashion.info

    def make(name: str):
        return create_model(name, info.num_classes, info.in_chans)

    torch.manual_seed(0)
    return Setup(
        student=make(student),
        teachers=[make(TINY_TEACHER).eval() for _ in range(teachers)],
        data=info,
        make_model=make,
        num_train=stream.num_samples,
        epochs=epochs,
        steps_per_epoch=len(stream),
    )
