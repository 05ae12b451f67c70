"""Each loss against cases that can be checked by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdbench import losses


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g)


def test_kd_zero_for_identical_logits(logits):
    s, _ = logits
    assert losses.kd_loss(s, s.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_grows_with_disagreement(logits):
    s, t = logits
    near = losses.kd_loss(s, s + 0.1 * (t - s), 4.0)
    far = losses.kd_loss(s, t, 4.0)
    assert 0 < near < far


def test_kd_scales_with_t_squared_and_is_batch_mean(logits):
    s, t = logits
    for temperature in (1.0, 2.0, 4.0):
        kl_rows = (
            F.softmax(t / temperature, 1)
            * (F.log_softmax(t / temperature, 1) - F.log_softmax(s / temperature, 1))
        ).sum(1)
        expected = temperature**2 * kl_rows.mean()
        assert losses.kd_loss(s, t, temperature).item() == pytest.approx(expected.item(), rel=1e-5)


def test_kd_two_class_by_hand():
    # teacher p = (0.5, 0.5), student q = softmax(0, ln 3) = (0.25, 0.75), T = 1: KL = 0.5 ln 2 + 0.5 ln(2/3)
    s = torch.tensor([[0.0, math.log(3.0)]])
    t = torch.zeros(1, 2)
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert losses.kd_loss(s, t, 1.0).item() == pytest.approx(expected, rel=1e-6)


def test_hint_is_mean_squared_error():
    a, b = torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 2.0)
    assert losses.hint_loss(a, b).item() == pytest.approx(4.0)


def test_attention_zero_for_scaled_copy_and_pools_larger_map():
    f = torch.rand(4, 8, 8, 8)
    assert losses.attention_transfer_loss(f, 3.0 * f).item() == pytest.approx(0.0, abs=1e-7)
    big = F.interpolate(f, scale_factor=2, mode="nearest")  # average pooling recovers f exactly
    assert losses.attention_transfer_loss(big, f).item() == pytest.approx(0.0, abs=1e-7)
    assert losses.attention_transfer_loss(f, torch.rand(4, 16, 8, 8)).item() > 0


def test_attention_map_by_hand():
    f = torch.zeros(1, 2, 1, 2)
    f[0, :, 0, 0] = 1.0  # channel mean of squares: (1, 0) -> normalised (1, 0)
    assert torch.allclose(losses.attention_map(f), torch.tensor([[1.0, 0.0]]))


def test_similarity_preserving_zero_for_same_gram_and_positive_otherwise():
    f = torch.randn(6, 4, 3, 3)
    assert losses.similarity_preserving_loss(f, 2.0 * f).item() == pytest.approx(0.0, abs=1e-7)
    assert losses.similarity_preserving_loss(f, torch.randn(6, 7, 2, 2)).item() > 0


def test_rkd_invariant_to_scale_and_rotation():
    e = torch.randn(10, 5)
    q, _ = torch.linalg.qr(torch.randn(5, 5))
    assert losses.rkd_loss(3.0 * e @ q, e).item() == pytest.approx(0.0, abs=1e-5)
    assert losses.rkd_loss(torch.randn(10, 5), e).item() > 0.1


def test_pairwise_distances_by_hand():
    d = losses.pairwise_distances(torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
    assert torch.allclose(d, torch.tensor([[0.0, 5.0], [5.0, 0.0]]), atol=1e-5)


def test_pkt_zero_for_same_directions():
    e = torch.randn(8, 6)
    assert losses.pkt_loss(2.0 * e, e).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.pkt_loss(torch.randn(8, 6), e).item() > 0


def test_dkd_zero_for_identical_and_splits_target_and_non_target(logits):
    s, t = logits
    y = torch.arange(8) % 10
    assert losses.dkd_loss(s, s.clone(), y).item() == pytest.approx(0.0, abs=1e-5)
    tckd_only = losses.dkd_loss(s, t, y, alpha=1.0, beta=0.0)
    nckd_only = losses.dkd_loss(s, t, y, alpha=0.0, beta=1.0)
    both = losses.dkd_loss(s, t, y, alpha=1.0, beta=8.0)
    assert both.item() == pytest.approx((tckd_only + 8.0 * nckd_only).item(), rel=1e-5)
    # changing only the non-target logits' order leaves TCKD unchanged when the target mass is the same
    assert tckd_only > 0 and nckd_only > 0
