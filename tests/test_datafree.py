"""Data-free KD: through a few real engine steps, the student never receives a dataset image and the methods
never read `batch.x`; the generator / the synthesis does the work and leaves the teacher untouched."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from kdbench.data import BatchStream, normalize
from kdbench.engine import RECIPES, fit
from kdbench.methods import get_method
from kdbench.methods.datafree import BNStatistics
from tests.conftest import make_setup


class NoImages:
    """A batch whose images cannot be read: only the labels, indices and size are there."""

    def __init__(self, batch) -> None:
        self.y, self.index = batch.y, batch.index

    @property
    def x(self):
        raise AssertionError("a data-free method read batch.x")

    def __len__(self) -> int:
        return len(self.y)


class ImageFreeStream(BatchStream):
    def epoch(self, epoch: int = 0):
        for batch in super().epoch(epoch):
            yield NoImages(batch)


@pytest.fixture
def streams(fashion):
    args = (fashion.x_train[:32], fashion.y_train[:32], fashion.info)
    return BatchStream(*args, batch_size=16, seed=0), ImageFreeStream(*args, batch_size=16, seed=0)


def _dataset_images(stream: BatchStream) -> torch.Tensor:
    """Every image the stream could hand out in epoch 0: augmented batches and the plain normalised images."""
    augmented = [b.x for b in stream.epoch(0)]
    return torch.cat([*augmented, normalize(stream.images, stream.info)]).flatten(1)


HPARAMS = {"dafl": {}, "deepinversion": {"pool_size": 24, "synthesis_batch": 16, "synthesis_steps": 3}}


@pytest.mark.parametrize("name", ["dafl", "deepinversion"])
def test_student_never_sees_a_dataset_image(fashion, streams, name):
    plain, guarded = streams
    method = get_method(name)(make_setup(fashion, plain), **HPARAMS[name])
    inputs = []
    method.student.register_forward_pre_hook(lambda _m, inp: inputs.append(inp[0].detach().flatten(1)))
    teacher_before = {k: v.clone() for k, v in method.teacher.state_dict().items()}
    stats = fit(method, guarded, RECIPES["cpu"], epochs=1, progress=False)  # reading batch.x would raise
    assert stats.samples == 32 and inputs
    seen = torch.cat(inputs)
    assert seen.shape[1] == 28 * 28
    nearest = torch.cdist(seen, _dataset_images(plain)).min()
    assert nearest > 1e-3, "the student received a dataset image"
    # the frozen teacher was neither changed nor given gradients
    assert all(torch.equal(v, method.teacher.state_dict()[k]) for k, v in teacher_before.items())
    assert all(p.grad is None for p in method.teacher.parameters())


def test_dafl_trains_its_generator_as_extra_parameters(fashion, streams):
    plain, guarded = streams
    method = get_method("dafl")(make_setup(fashion, plain))
    gen = method.generator
    assert method.auxiliary_parameters() == list(gen.parameters())
    assert method.extra_parameters() == sum(p.numel() for p in gen.parameters())
    before = gen.l1.weight.detach().clone()
    stats = fit(method, guarded, RECIPES["cpu"], epochs=1, progress=False)
    assert not torch.equal(before, gen.l1.weight), "the auxiliary (generator) step did not update it"
    assert {"aux_one_hot", "aux_activation", "aux_entropy", "kd"} <= set(stats.epoch_losses[0])
    images = method.generate(8)
    assert images.shape == (8, 1, 28, 28)
    assert method.record_extras()["generated_samples"] == 32


def test_deepinversion_matches_batch_norm_statistics(fashion, streams):
    plain, guarded = streams
    method = get_method("deepinversion")(
        make_setup(fashion, plain), pool_size=1000, synthesis_batch=16, synthesis_steps=8
    )
    fit(method, guarded, RECIPES["cpu"], epochs=1, progress=False)
    extras = method.record_extras()
    assert extras["pool_size"] == 32 == len(method.pool)  # capped at the real training split's size
    assert extras["synthesis_time_s"] > 0 and extras["synthesis_steps"] == 8
    # the synthesised pool is closer to the teacher's BN statistics than the noise it started from
    bn = BNStatistics(method.teacher)
    with torch.no_grad():
        method.teacher(method.pool[:16])
        synthesised = float(bn.pop())
        method.teacher(torch.randn_like(method.pool[:16]))
        noise = float(bn.pop())
    bn.close()
    assert synthesised < noise


def test_deepinversion_pool_order_and_augmentation_follow_the_seed(fashion, streams):
    """The synthetic pool is replayed in an order and with flips drawn from the cell's seed: seeds of a grid must
    not all see the same sequence (they did when the draws were seeded by the task index alone)."""
    plain, _ = streams

    def draws(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        setup = dataclasses.replace(make_setup(fashion, plain), seed=seed)
        method = get_method("deepinversion")(setup, **HPARAMS["deepinversion"])
        method.pool = torch.zeros(24, 1, 28, 28)
        method.on_epoch_start(0)
        return method.order.clone(), method._flips.clone()

    same, again, other = draws(0), draws(0), draws(1)
    assert all(torch.equal(a, b) for a, b in zip(same, again, strict=True))
    assert not torch.equal(same[0], other[0])


def test_dafl_entropy_stays_finite_when_a_class_probability_underflows(fashion, streams):
    plain, _ = streams
    method = get_method("dafl")(make_setup(fashion, plain))
    with torch.no_grad():
        method.teacher.get_classifier().bias[0] = -1e4  # class 0's probability: exp(-1e4) is 0 in float32
    terms = method.auxiliary_loss(next(iter(plain.epoch(0))))
    assert all(torch.isfinite(t) for t in terms.values()), terms
    sum(terms.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in method.generator.parameters() if p.grad is not None)
