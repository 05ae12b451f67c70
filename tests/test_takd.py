"""takd: the assistant is distilled from the teacher before the student's first step, then frozen, counted as a
training-time extra, and it (not the teacher) is what the student is distilled from."""

from __future__ import annotations

import torch

from kdbench.engine import RECIPES, fit
from kdbench.losses import kd_loss
from kdbench.methods import get_method
from tests.conftest import make_setup


def test_assistant_is_trained_then_frozen_and_teaches(fashion, tiny_stream):
    method = get_method("takd")(make_setup(fashion, tiny_stream), assistant="cifar_resnet8")
    before = [p.detach().clone() for p in method.assistant.parameters()]
    stats = fit(method, tiny_stream, RECIPES["cpu"], epochs=1, progress=False)

    after = list(method.assistant.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True)), (
        "the assistant was not trained"
    )
    assert not any(p.requires_grad for p in after)
    trainable = {id(p) for p in method.trainable_parameters()}
    assert not trainable & {id(p) for p in after}, "the student's optimiser must not update the assistant"
    assert method.extra_parameters() == sum(p.numel() for p in after)
    method.train()
    assert not method.assistant.training, "a trained assistant keeps its batch-norm statistics"

    extras = method.record_extras()
    assert extras["assistant"] == "cifar_resnet8" and extras["assistant_epochs"] == 1
    assert 0 < extras["assistant_train_time_s"] <= stats.wall_time_s  # inside the method's timed training

    batch = next(iter(tiny_stream.epoch(0)))
    method.eval()
    with torch.no_grad():
        terms = method.loss_terms(batch)
        expected = method.hp["kd_weight"] * kd_loss(
            method.student(batch.x), method.assistant(batch.x), method.hp["temperature"]
        )
    torch.testing.assert_close(terms["kd"], expected)


def test_assistant_epochs_override(fashion, tiny_stream):
    method = get_method("takd")(
        make_setup(fashion, tiny_stream, epochs=1), assistant="cifar_resnet8", assistant_epochs=2
    )
    fit(method, tiny_stream, RECIPES["cpu"], epochs=1, progress=False)
    assert method.record_extras()["assistant_epochs"] == 2
