"""ofd and reviewkd (kdbench.methods.ofd, reviewkd): OFD's margin against a numerical integral, its partial L2 mask
and stage weighting by hand, the batch norms it reads against the references' `get_bn_before_relu`; ReviewKD's HCL
against a direct computation, its ABF fusion and channels for several pairs, its warm-up; the methods' terms as the
references compose them, and short fits with finite losses."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.engine import RECIPES, fit
from kdbench.errors import KdbenchError
from kdbench.methods import get_method
from kdbench.methods.ofd import (
    batchnorms_before_relu,
    ofd_connector,
    ofd_loss,
    ofd_margin,
    ofd_partial_l2,
)
from kdbench.methods.preact import PreactFeatures
from kdbench.methods.reviewkd import ABF, hcl_loss
from kdbench.models import create_model
from tests.conftest import make_setup

torch.set_num_threads(1)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _setup(fashion, stream, teacher: str, student: str, epochs: int = 1):
    setup = make_setup(fashion, stream, student=student, epochs=epochs)
    model = create_model(teacher, fashion.info.num_classes, fashion.info.in_chans).eval()
    return dataclasses.replace(setup, teachers=[model])


def _scramble_batchnorms(model: nn.Module, seed: int) -> None:
    """Trained-looking batch norms: weights of either sign and biases around zero, so margins differ by channel."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.randn(m.num_features, generator=gen))
                m.bias.copy_(torch.randn(m.num_features, generator=gen))


# ---- OFD: margin, partial L2, reduction -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "weight, bias", [(1.0, 0.0), (0.5, 1.0), (-2.0, -1.0), (1.5, 2.0), (0.3, -0.2), (1.0, 3.0)]
)
def test_ofd_margin_is_the_mean_of_the_gaussian_negative_part(weight, bias):
    """E[x | x < 0] for x ~ N(bias, |weight|^2), by the trapezoid rule on a fine grid from 14 sigma below to 0."""
    s, m = abs(weight), bias
    x = torch.linspace(m - 14 * s, 0.0, 400_001, dtype=torch.float64)
    density = torch.exp(-((x - m) ** 2) / (2 * s**2))
    expected = float(torch.trapezoid(x * density, x) / torch.trapezoid(density, x))
    got = ofd_margin(torch.tensor([weight]), torch.tensor([bias]))
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(expected, rel=1e-5)
    assert float(got) < 0


def test_ofd_margin_cut_off_and_constant_channels():
    """Under 0.1 % negative mass the reference takes -3 sigma (N(3.5, 1): 0.023 %; N(3, 1): 0.135 % is above the
    cut-off); a channel with weight 0 is the constant bias: its margin is min(bias, 0), finite."""
    margin = ofd_margin(
        torch.tensor([1.0, -2.0, 1.0, 0.0, 0.0, 0.0]), torch.tensor([3.5, 7.5, 3.0, -1.0, 2.0, 0.0])
    )
    assert margin[:2].tolist() == pytest.approx([-3.0, -6.0])
    assert float(margin[2]) > -1.0  # the conditional mean, just below zero
    assert margin[3:].tolist() == pytest.approx([-1.0, 0.0, 0.0])
    assert bool(torch.isfinite(margin).all())


def test_ofd_partial_l2_by_hand():
    """Margin -1. Teacher at or below it (t = -2): clipped to -1; the student above it counts, (0.5 + 1)^2, below or
    at it (-1.5, -1) not. Teacher between margin and 0 (t = -0.5): the student above it counts, 0.5^2, below not.
    Positive teacher (t = 1): both sides count, 2^2 and 0.5^2. Teacher at 0: only a student above it, 0.3^2."""
    s = torch.tensor([0.5, -1.5, -1.0, 0.0, -0.8, 3.0, 0.5, -0.3, 0.3]).view(1, 1, 1, 9)
    t = torch.tensor([-2.0, -2.0, -2.0, -0.5, -0.5, 1.0, 1.0, 0.0, 0.0]).view(1, 1, 1, 9)
    loss = ofd_partial_l2(s, t, torch.tensor([-1.0]))
    assert loss.flatten().tolist() == pytest.approx([2.25, 0.0, 0.0, 0.25, 0.0, 4.0, 0.25, 0.0, 0.09])


def test_ofd_partial_l2_is_mdistillers_three_masks():
    """mdistiller OFD.py feat_loss: (s - m)^2 [s > m, t <= m] + (s - t)^2 [s > t, m < t <= 0] + (s - t)^2 [t > 0]."""
    s, t = _randn(4, 6, 3, 3, seed=1), _randn(4, 6, 3, 3, seed=2)
    margin = -_randn(6, seed=3).abs().view(1, 6, 1, 1)
    reference = (
        (s - margin) ** 2 * ((s > margin) & (t <= margin)).float()
        + (s - t) ** 2 * ((s > t) & (t > margin) & (t <= 0)).float()
        + (s - t) ** 2 * (t > 0).float()
    )
    torch.testing.assert_close(ofd_partial_l2(s, t, margin), reference)
    torch.testing.assert_close(ofd_partial_l2(s, t, margin.flatten()), reference)


def test_ofd_loss_weights_stages_and_averages_the_batch():
    """Stage i of n weighted 1 / 2^(n - 1 - i); per stage the sum over channels and positions averaged over the
    batch; a teacher map larger than its student's is average-pooled to the student's size first."""
    s = [_randn(2, 3, 4, 4, seed=4), _randn(2, 5, 2, 2, seed=5), _randn(2, 7, 1, 1, seed=6)]
    t = [_randn(2, 3, 8, 8, seed=7), _randn(2, 5, 2, 2, seed=8), _randn(2, 7, 1, 1, seed=9)]
    m = [-torch.rand(c, generator=torch.Generator().manual_seed(c)) for c in (3, 5, 7)]
    pooled = [F.avg_pool2d(t[0], 2), t[1], t[2]]
    per_stage = [float(ofd_partial_l2(a, b, c).sum()) / 2 for a, b, c in zip(s, pooled, m, strict=True)]
    expected = per_stage[0] / 4 + per_stage[1] / 2 + per_stage[2]
    assert float(ofd_loss(s, t, m)) == pytest.approx(expected, rel=1e-6)


def test_ofd_connector_as_the_reference():
    """A 1x1 convolution without bias, weights N(0, 2 / c_out), then batch norm at weight 1, bias 0."""
    torch.manual_seed(0)
    conv, bn = ofd_connector(64, 200)
    assert (conv.kernel_size, conv.in_channels, conv.out_channels, conv.bias) == ((1, 1), 64, 200, None)
    assert float(conv.weight.detach().std()) == pytest.approx(math.sqrt(2 / 200), rel=0.05)
    assert isinstance(bn, nn.BatchNorm2d) and bool((bn.weight == 1).all()) and bool((bn.bias == 0).all())


def _expected_batchnorms(name: str, model: nn.Module) -> list[nn.Module | None]:
    """RepDistiller's / mdistiller's get_bn_before_relu, stage by stage (kdbench's stems added)."""
    if name == "cifar_resnet8":
        return [model.bn1] + [getattr(model, f"layer{i}")[-1].bn2 for i in (1, 2, 3)]
    if name == "cifar_wrn_16_1":
        return [model.block1[0].bn1, model.block2[0].bn1, model.block3[0].bn1, model.bn_out]
    if name == "cifar_vgg8":
        return [getattr(model, f"block{i}")[-2] for i in range(5)]
    if name == "cifar_mobilenetv2":
        return [model.conv1[1]] + [model.blocks[i][-1].conv[-1] for i in (1, 2, 4, 6)]
    if name == "cifar_shufflenetv1":
        return [model.bn1] + [getattr(model, f"layer{i}")[-1].bn3 for i in (1, 2, 3)]
    return [model.bn1, None, None, None]  # cifar_shufflenetv2: the references support no ShuffleNet teacher


@pytest.mark.parametrize(
    "name",
    [
        "cifar_resnet8",
        "cifar_wrn_16_1",
        "cifar_vgg8",
        "cifar_mobilenetv2",
        "cifar_shufflenetv1",
        "cifar_shufflenetv2",
    ],
)
def test_batchnorms_before_relu_are_the_references(name):
    model = create_model(name, 10, 3)
    found = batchnorms_before_relu(model, torch.zeros(2, 3, 32, 32))
    expected = _expected_batchnorms(name, model)
    assert len(found) == len(expected)
    assert all(a is b for a, b in zip(found, expected, strict=True)), name
    assert model.training  # the probe restored the mode


def test_batchnorms_before_relu_of_a_timm_resnet():
    """timm's blocks add their shortcut in place onto bn2's output, which then enters act2: bn2 is found."""
    model = create_model("resnet18", 10, 3)
    found = batchnorms_before_relu(model, torch.zeros(2, 3, 32, 32))
    assert found == [model.bn1] + [getattr(model, f"layer{i}")[-1].bn2 for i in (1, 2, 3, 4)]


# ---- OFD: the method ------------------------------------------------------------------------------------------


def test_ofd_term_as_the_reference(fashion, tiny_stream):
    """Margins from the teacher's layerK[-1].bn2 (resnet14); the term is 0.001 x ofd_loss of the connected student
    pre-activations of stages[1:] against the teacher's (mdistiller preact_feats[1:]); ce unweighted."""
    setup = make_setup(fashion, tiny_stream)
    _scramble_batchnorms(setup.teachers[0], seed=10)
    method = get_method("ofd")(setup)
    teacher = method.teacher
    for i, margin in enumerate(method.margins()):
        bn = getattr(teacher, f"layer{i + 1}")[-1].bn2
        torch.testing.assert_close(margin, ofd_margin(bn.weight, bn.bias).view(1, -1, 1, 1))
    assert len({round(float(v), 4) for v in method.margins()[0].flatten()}) > 1
    method.eval()  # the same batch statistics in both forward passes
    batch = next(iter(tiny_stream.epoch(0)))
    terms = method.loss_terms(batch)
    example = torch.zeros(2, 1, 28, 28)
    out, s = PreactFeatures(method.student, example)(batch.x)
    with torch.no_grad():
        _, t = PreactFeatures(teacher, example)(batch.x)
    expected = ofd_loss(
        [c(a) for c, a in zip(method.connectors, s[1:], strict=True)], t[1:], method.margins()
    )
    torch.testing.assert_close(terms["ofd"], 1e-3 * expected)
    torch.testing.assert_close(terms["ce"], F.cross_entropy(out.logits, batch.y))
    assert method.extra_parameters() == sum(p.numel() for p in method.connectors.parameters())


def test_ofd_pairs_the_deepest_stages(fashion, tiny_stream):
    """MobileNetV2 (stem + 4 stages) under resnet14 (stem + 3): its last three stages are connected to the
    teacher's three (mdistiller _align_list), each margin of the matching teacher stage's channels."""
    method = get_method("ofd")(make_setup(fashion, tiny_stream, student="cifar_mobilenetv2"))
    assert [(c[0].in_channels, c[0].out_channels) for c in method.connectors] == [
        (16, 16),
        (48, 32),
        (160, 64),
    ]
    assert [m.shape[1] for m in method.margins()] == [16, 32, 64]
    batch = next(iter(tiny_stream.epoch(0)))
    assert math.isfinite(float(method.loss_terms(batch)["ofd"].detach()))


def test_ofd_teacher_without_batch_norms_is_a_one_line_error(fashion, tiny_stream):
    with pytest.raises(KdbenchError, match="ofd needs the batch norm before the last ReLU") as err:
        get_method("ofd")(_setup(fashion, tiny_stream, "cifar_shufflenetv2", "cifar_resnet8"))
    assert "\n" not in str(err.value)


# ---- ReviewKD: HCL, ABF ---------------------------------------------------------------------------------------


def _adaptive_mean(x: torch.Tensor, level: int) -> torch.Tensor:
    """Adaptive average pooling written out: window i spans [floor(i h / l), ceil((i + 1) h / l))."""
    h, w = x.shape[-2:]
    rows = [(i * h // level, -(-(i + 1) * h // level)) for i in range(level)]
    cols = [(j * w // level, -(-(j + 1) * w // level)) for j in range(level)]
    return torch.stack(
        [torch.stack([x[..., a:b, c:d].mean((-2, -1)) for c, d in cols], -1) for a, b in rows], -2
    )


def test_hcl_by_direct_computation():
    """8x8: full size weight 1, then 4x4, 2x2, 1x1 at 1/2, 1/4, 1/8, over 1.875; 7x7 the same (overlapping windows);
    4x4: 4 is not smaller, so 2x2 at 1/2 and 1x1 at 1/4, over 1.75; 1x1 (the pooled embedding): the MSE alone."""
    fs = [
        _randn(2, 3, 8, 8, seed=11),
        _randn(2, 4, 7, 7, seed=12),
        _randn(2, 5, 4, 4, seed=13),
        _randn(2, 6, 1, 1, seed=14),
    ]
    ft = [_randn(*f.shape, seed=20 + i) for i, f in enumerate(fs)]

    def mse(a, b):
        return float(((a - b) ** 2).mean())

    def level(a, b, levels):
        terms = [mse(a, b)] + [
            mse(_adaptive_mean(a, k), _adaptive_mean(b, k)) / 2 ** (i + 1) for i, k in enumerate(levels)
        ]
        return sum(terms) / (1 + sum(1 / 2 ** (i + 1) for i in range(len(levels))))

    expected = (
        level(fs[0], ft[0], (4, 2, 1))
        + level(fs[1], ft[1], (4, 2, 1))
        + level(fs[2], ft[2], (2, 1))
        + mse(fs[3], ft[3])
    )
    assert float(hcl_loss(fs, ft)) == pytest.approx(expected, rel=1e-6)
    assert float(hcl_loss(ft, ft)) == 0.0


def test_abf_fuses_by_attention():
    """Residual resized (nearest) to the student's map, mixed by the sigmoid of a 1x1 conv over both, resized to
    the teacher's size, then the 3x3 conv + BN; the deepest level (no fuse) has no attention."""
    torch.manual_seed(0)
    abf = ABF(6, 4, 5, fuse=True).eval()
    x, residual = _randn(2, 6, 4, 4, seed=30), _randn(2, 4, 2, 2, seed=31)
    out, fused = abf(x, residual, (8, 8))
    with torch.no_grad():
        a = abf.conv1(x)
        r = residual.repeat_interleave(2, 2).repeat_interleave(2, 3)
        att = torch.sigmoid(abf.att_conv[0](torch.cat([a, r], 1)))
        mixed = a * att[:, 0:1] + r * att[:, 1:2]
        up = mixed.repeat_interleave(2, 2).repeat_interleave(2, 3)
    torch.testing.assert_close(fused, up)
    torch.testing.assert_close(out, abf.conv2(up))
    assert out.shape == (2, 5, 8, 8) and fused.shape == (2, 4, 8, 8)
    assert ABF(6, 4, 5, fuse=False).att_conv is None


def _feature_channels(model: nn.Module) -> list[int]:
    return [e["num_chs"] for e in model.feature_info]


@pytest.mark.parametrize(
    "teacher, student",
    [
        ("cifar_resnet20", "cifar_resnet8"),
        ("cifar_mobilenetv2", "cifar_resnet8"),
        ("cifar_wrn_16_2", "cifar_resnet8"),
        ("cifar_resnet20", "cifar_mobilenetv2"),
    ],
)
def test_review_fusion_fits_any_pair(teacher, student, fashion, tiny_stream):
    """Channels from the architectures' feature_info stages (the deepest paired, the stem left out) and their
    embedding; mid = min(512, the student's embedding); every output has its teacher level's shape."""
    method = get_method("reviewkd")(_setup(fashion, tiny_stream, teacher, student))
    s_model, t_model = method.student, method.teacher
    n = min(len(s_model.feature_info), len(t_model.feature_info)) - 1
    in_channels = _feature_channels(s_model)[-n:] + [s_model.num_features]
    out_channels = _feature_channels(t_model)[-n:] + [t_model.num_features]
    abfs = method.fusion.abfs
    assert [a.conv1[0].in_channels for a in abfs] == in_channels
    assert [a.conv2[0].out_channels for a in abfs] == out_channels
    assert {a.conv1[0].out_channels for a in abfs} == {min(512, s_model.num_features)}
    assert [a.att_conv is not None for a in abfs] == [True] * n + [False]
    batch = next(iter(tiny_stream.epoch(0)))
    out = method.student_outputs(batch.x)
    t_out = method.teacher_outputs(batch, features=True)
    levels_s = out.stages[-n:] + [out.embedding[:, :, None, None]]
    levels_t = t_out.stages[-n:] + [t_out.embedding[:, :, None, None]]
    results = method.fusion(levels_s, [f.shape[-2:] for f in levels_t])
    assert [r.shape for r in results] == [f.shape for f in levels_t]


def test_reviewkd_term_as_the_reference(fashion, tiny_stream):
    """5 x warm-up x HCL(fusion of the student's stages[1:] and embedding, the teacher's pre-activations of
    stages[1:] and its embedding); ce unweighted; the fusion is the only extra trained module."""
    setup = make_setup(fashion, tiny_stream, epochs=240)
    _scramble_batchnorms(setup.teachers[0], seed=40)
    method = get_method("reviewkd")(setup)
    method.eval()
    method.epoch = 4
    batch = next(iter(tiny_stream.epoch(0)))
    terms = method.loss_terms(batch)
    out = method.student_outputs(batch.x)
    with torch.no_grad():
        _, t = PreactFeatures(method.teacher, torch.zeros(2, 1, 28, 28))(batch.x)
    teacher = [*t[1:], method.teacher_outputs(batch, features=True).embedding[:, :, None, None]]
    results = method.fusion(
        [*out.stages[1:], out.embedding[:, :, None, None]], [f.shape[-2:] for f in teacher]
    )
    torch.testing.assert_close(terms["reviewkd"], 5.0 * (5 / 20) * hcl_loss(results, teacher))
    torch.testing.assert_close(terms["ce"], F.cross_entropy(out.logits, batch.y))
    assert method.extra_parameters() == sum(p.numel() for p in method.fusion.parameters())


@pytest.mark.parametrize(
    "epochs, fraction, factors",
    [
        (
            240,
            20 / 240,
            {0: 1 / 20, 9: 0.5, 18: 19 / 20, 19: 1.0, 100: 1.0},
        ),  # mdistiller: min(epoch / 20, 1), from 1
        (10, 20 / 240, {0: 1.0}),  # 10 epochs: the warm-up is 5/6 of one
        (4, 0.5, {0: 0.5, 1: 1.0}),
        (4, 0.0, {0: 1.0}),
    ],
)
def test_reviewkd_warmup(epochs, fraction, factors, fashion, tiny_stream):
    method = get_method("reviewkd")(make_setup(fashion, tiny_stream, epochs=epochs), warmup_fraction=fraction)
    for epoch, factor in factors.items():
        method.epoch = epoch
        assert method.warmup_factor() == pytest.approx(factor)


def test_reviewkd_mid_channels_are_capped(fashion, tiny_stream):
    method = get_method("reviewkd")(make_setup(fashion, tiny_stream), max_mid_channel=8)
    assert {a.conv1[0].out_channels for a in method.fusion.abfs} == {8}


# ---- both -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ofd", "reviewkd"])
@pytest.mark.parametrize("hp", [{}, {"kd_weight": 0.9}])
def test_short_fit_has_finite_losses(name, hp, fashion, tiny_stream):
    """Two epochs through the engine: every term finite in both; "+KD" (kd_weight) adds plus_kd."""
    setup = make_setup(fashion, tiny_stream, epochs=2)
    stats = fit(get_method(name)(setup, **hp), tiny_stream, RECIPES["cpu"], epochs=2, progress=False)
    losses = [value for epoch in stats.epoch_losses for value in epoch.values()]
    assert len(stats.epoch_losses) == 2 and all(map(math.isfinite, losses)), stats.epoch_losses
    assert set(stats.epoch_losses[-1]) == {"ce", name, *(["plus_kd"] if hp else [])}
