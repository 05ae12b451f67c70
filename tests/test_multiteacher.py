"""multiteacher: the mean target is the mean of the softened teachers, confidence weights are CA-MKD's, and with
identical teachers the method is exactly kd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdbench.errors import KdbenchError
from kdbench.losses import kd_loss
from kdbench.methods import get_method
from kdbench.methods.multiteacher import confidence_weights, soft_target
from tests.conftest import make_setup

torch.set_num_threads(1)  # 2 threads on a shared 2-core machine spin: one is many times faster


def test_mean_target_is_the_mean_of_softened_teacher_outputs():
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(5, 7, generator=g) * 3 for _ in range(3)]
    y = torch.randint(0, 7, (5,), generator=g)
    target = soft_target(logits, y, 4.0, "mean")
    expected = (F.softmax(logits[0] / 4, 1) + F.softmax(logits[1] / 4, 1) + F.softmax(logits[2] / 4, 1)) / 3
    assert torch.allclose(target, expected, atol=1e-6)
    assert torch.allclose(target.sum(1), torch.ones(5))


def test_confidence_weights_sum_to_one_and_favour_the_teacher_with_lower_cross_entropy():
    y = torch.tensor([0, 1, 2])
    good = F.one_hot(y, 4).float() * 5.0  # confident and right
    bad = F.one_hot((y + 1) % 4, 4).float() * 5.0  # confident and wrong
    middle = torch.zeros(3, 4)  # uniform
    w = confidence_weights([bad, good, middle], y)
    assert w.shape == (3, 3)
    assert torch.allclose(w.sum(0), torch.ones(3))
    assert (w[1] > w[2]).all() and (w[2] > w[0]).all()

    # two teachers: CA-MKD's (1 - softmax(CE)) / (K - 1) is the softmax of minus the cross-entropy
    w2 = confidence_weights([bad, good], y)
    ce = torch.stack([F.cross_entropy(bad, y, reduction="none"), F.cross_entropy(good, y, reduction="none")])
    assert torch.allclose(w2, F.softmax(-ce, dim=0), atol=1e-6)

    target = soft_target([bad, good], y, 1.0, "confidence")
    assert (target.argmax(1) == y).all()  # the weighted target follows the right teacher


def test_two_identical_teachers_give_kd(fashion, tiny_stream):
    batch = next(tiny_stream.epoch(0))
    setup = make_setup(fashion, tiny_stream, teachers=2)
    setup.teachers[1].load_state_dict(setup.teachers[0].state_dict())
    for weighting in ("mean", "confidence"):
        method = get_method("multiteacher")(setup, weighting=weighting).eval()
        terms = method.loss_terms(batch)
        logits = method.student(batch.x)
        expected = 0.9 * kd_loss(logits, method.teacher_outputs(batch.x).logits, 4.0)
        assert torch.allclose(terms["kd"], expected, rtol=1e-5)


def test_different_teachers_change_the_target(fashion, tiny_stream):
    batch = next(tiny_stream.epoch(0))
    setup = make_setup(fashion, tiny_stream, teachers=2)
    method = get_method("multiteacher")(setup).eval()
    logits = method.student(batch.x)
    only_first = 0.9 * kd_loss(logits, method.teacher_outputs(batch.x, 0).logits, 4.0)
    assert not torch.allclose(method.loss_terms(batch)["kd"], only_first, rtol=1e-3)


def test_bad_weighting_names_the_choices(fashion, tiny_stream):
    setup = make_setup(fashion, tiny_stream, teachers=2)
    with pytest.raises(KdbenchError, match="confidence, mean"):
        get_method("multiteacher")(setup, weighting="median")
