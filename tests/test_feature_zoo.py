"""vid, nst, fsp, ab, ft (kdbench.methods.feature_zoo, feature_init) and pre-activation features (preact): each loss
against a direct hand computation of its paper's formula, RepDistiller's modules and stage choices, the init stage
(what it trains and leaves alone, how long it runs, that it is timed), pre-activations on every registered CIFAR
architecture, and short fits with finite losses."""

from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.engine import RECIPES, begin_training, fit
from kdbench.errors import KdbenchError
from kdbench.methods import get_method
from kdbench.methods.feature_zoo import (
    Paraphraser,
    VIDRegressor,
    ab_layer_loss,
    ab_loss,
    fsp_loss,
    fsp_matrix,
    ft_loss,
    nst_loss,
    paired,
    translator,
    vid_loss,
)
from kdbench.methods.preact import PreactFeatures
from kdbench.models import KDBENCH_MODELS, create_model
from kdbench.models.features import forward_with_features, stage_channels
from kdbench.profiles import PROFILES, all_cells, left_out
from tests.conftest import make_setup

torch.set_num_threads(1)

NAMES = ["vid", "nst", "fsp", "ab", "ft"]


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---- pure losses by hand --------------------------------------------------------------------------------------


def test_vid_loss_by_hand():
    """Two channels at one position: 1/2 ((1 - 0)^2 / 2 + ln 2) and 1/2 ((2 - 4)^2 / 0.5 + ln 0.5), averaged."""
    mean = torch.tensor([1.0, 2.0]).view(1, 2, 1, 1)
    target = torch.tensor([0.0, 4.0]).view(1, 2, 1, 1)
    expected = (0.5 * (1 / 2 + math.log(2)) + 0.5 * (4 / 0.5 + math.log(0.5))) / 2
    assert float(vid_loss(mean, target, torch.tensor([2.0, 0.5]))) == pytest.approx(expected, abs=1e-6)


def test_vid_loss_is_the_gaussian_nll_without_its_constant():
    mean, target, var = _randn(3, 4, 2, 2, seed=1), _randn(3, 4, 2, 2, seed=2), _randn(4, seed=3).exp()
    nll = -torch.distributions.Normal(mean, var.sqrt().view(1, -1, 1, 1)).log_prob(target).mean()
    torch.testing.assert_close(vid_loss(mean, target, var), nll - 0.5 * math.log(2 * math.pi))


def test_vid_regressor_as_repdistiller():
    """VIDLoss(s, t, t): 1x1 convs s -> t -> t -> t without bias; the variance starts at init_pred_var; a larger
    student map is pooled to the teacher's size first."""
    reg = VIDRegressor(8, 6, 6, init_pred_var=5.0, eps=1e-5)
    assert [(m.in_channels, m.out_channels, m.bias) for m in reg.regressor if isinstance(m, nn.Conv2d)] == [
        (8, 6, None),
        (6, 6, None),
        (6, 6, None),
    ]
    torch.testing.assert_close(reg.variance(), torch.full((6,), 5.0))
    s, t = _randn(2, 8, 4, 4, seed=4), _randn(2, 6, 2, 2, seed=5)
    expected = vid_loss(reg.regressor(F.avg_pool2d(s, 2)), t, reg.variance())
    torch.testing.assert_close(reg(s, t), expected)


def test_nst_loss_by_hand():
    """Student channel [3, 4] -> [0.6, 0.8]; teacher channels [1, 0] and [0, 1]. k = (x.y)^2:
    mean k(t, t) = 1/2, k(s, s) = 1, mean k(s, t) = (0.36 + 0.64) / 2; MMD^2 = 1/2 + 1 - 2 * 1/2."""
    s = torch.tensor([3.0, 4.0]).view(1, 1, 1, 2)
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 2, 1, 2)
    assert float(nst_loss(s, t)) == pytest.approx(0.5, abs=1e-6)
    assert float(nst_loss(t, t)) == pytest.approx(0.0, abs=1e-6)


def test_nst_loss_by_loops():
    """The MMD of eq. 7 written out sample by sample and channel pair by channel pair, after pooling the student's
    4x4 maps to the teacher's 2x2."""
    f_s, f_t = _randn(2, 3, 4, 4, seed=6), _randn(2, 5, 2, 2, seed=7)
    pooled = F.avg_pool2d(f_s, 2)
    total = 0.0
    for n in range(2):
        s = [pooled[n, i].flatten() / pooled[n, i].norm() for i in range(3)]
        t = [f_t[n, j].flatten() / f_t[n, j].norm() for j in range(5)]
        k_tt = sum(float(a @ b) ** 2 for a in t for b in t) / 25
        k_ss = sum(float(a @ b) ** 2 for a in s for b in s) / 9
        k_st = sum(float(a @ b) ** 2 for a in s for b in t) / 15
        total += k_tt + k_ss - 2 * k_st
    assert float(nst_loss(f_s, f_t)) == pytest.approx(total / 2, abs=1e-5)


def test_fsp_by_hand():
    """Bottom map [1, 2], top maps [3, 4] and [0, 1]: G = [(3 + 8) / 2, (0 + 2) / 2]; against a zero teacher the
    loss is the mean of their squares."""
    bottom = torch.tensor([1.0, 2.0]).view(1, 1, 1, 2)
    top = torch.tensor([[3.0, 4.0], [0.0, 1.0]]).view(1, 2, 1, 2)
    torch.testing.assert_close(fsp_matrix(bottom, top), torch.tensor([[[5.5], [1.0]]]))
    zero = [torch.zeros_like(bottom), torch.zeros_like(top)]
    assert float(fsp_loss([bottom, top], zero)) == pytest.approx((5.5**2 + 1.0) / 2, abs=1e-6)


def test_fsp_loss_by_loops():
    """Three stages (the first at twice the size, pooled): G_ij = mean_hw top_i bottom_j per pair, squared
    differences averaged per pair and summed over the two pairs."""
    s = [_randn(2, 3, 4, 4, seed=8), _randn(2, 4, 2, 2, seed=9), _randn(2, 5, 2, 2, seed=10)]
    t = [_randn(2, 3, 4, 4, seed=11), _randn(2, 4, 2, 2, seed=12), _randn(2, 5, 2, 2, seed=13)]

    def gram(bottom, top):
        if bottom.shape[2] > top.shape[2]:
            bottom = F.avg_pool2d(bottom, 2)
        return torch.tensor(
            [
                [
                    [float((top[n, i] * bottom[n, j]).mean()) for j in range(bottom.shape[1])]
                    for i in range(top.shape[1])
                ]
                for n in range(2)
            ]
        )

    expected = sum(float((gram(s[k], s[k + 1]) - gram(t[k], t[k + 1])).pow(2).mean()) for k in range(2))
    assert float(fsp_loss(s, t)) == pytest.approx(expected, abs=1e-5)


def test_ab_layer_loss_by_hand():
    """Margin 1. Teacher off (t <= 0): s = -2 is past -m (0), -0.5 -> 0.5^2, 0.5 -> 1.5^2, 2 -> 3^2; teacher on
    (t > 0): 0.5 -> (0.5 - 1)^2, -0.5 -> (-1.5)^2, 2 is past m (0). Sum 14."""
    s = torch.tensor([-2.0, -0.5, 0.5, 2.0, 0.5, -0.5, 2.0]).view(1, 7, 1, 1)
    t = torch.tensor([-1.0, 0.0, -1.0, -1.0, 1.0, 1.0, 1.0]).view(1, 7, 1, 1)
    assert float(ab_layer_loss(s, t, 1.0)) == pytest.approx(14.0)
    # margin 0: only the wrong side counts, s^2: off with s = 0.5 and 2, on with s = -0.5
    assert float(ab_layer_loss(s, t, 0.0)) == pytest.approx(0.25 + 4 + 0.25)


def test_ab_loss_weights_layers_and_scales():
    """RepDistiller ABLoss: layer i of n weighted 2^(i - n + 1), divided by the batch size, times 3 / 1000."""
    s = torch.tensor([-2.0, -0.5, 0.5, 2.0, 0.5, -0.5, 2.0]).view(1, 7, 1, 1).repeat(2, 1, 1, 1)
    t = torch.tensor([-1.0, 0.0, -1.0, -1.0, 1.0, 1.0, 1.0]).view(1, 7, 1, 1).repeat(2, 1, 1, 1)
    # each layer sums 2 x 14 over its batch of two
    expected = (0.25 * 28 + 0.5 * 28 + 1.0 * 28) / 2 * 3 / 1000
    assert float(ab_loss([s, s, s], [t, t, t], 1.0)) == pytest.approx(expected)


def test_ft_loss_by_hand():
    """Student factor channels [1, 0] and [1, 2]: channel mean of f^2 = [1, 2], normalised [1, 2] / sqrt 5;
    teacher [0, 1] and [0, 1]: [0, 1]. L1: mean(1 / sqrt 5, 1 - 2 / sqrt 5)."""
    s = torch.tensor([[1.0, 0.0], [1.0, 2.0]]).view(1, 2, 1, 2)
    t = torch.tensor([[0.0, 1.0], [0.0, 1.0]]).view(1, 2, 1, 2)
    r5 = math.sqrt(5)
    assert float(ft_loss(s, t)) == pytest.approx((1 / r5 + 1 - 2 / r5) / 2, abs=1e-6)
    assert float(ft_loss(s, t, p2=2)) == pytest.approx((1 / 5 + (1 - 2 / r5) ** 2) / 2, abs=1e-6)


def test_ft_modules_as_repdistiller():
    """Paraphraser(k=0.5, no BN): 3x3 convs C -> C -> C/2 -> C/2, transposed C/2 -> C/2 -> C -> C, LeakyReLU 0.1;
    Translator(k=0.5, BN): student C_s -> C_s -> C_t/2 -> C_t/2."""
    para = Paraphraser(64, 0.5)

    def convs(seq):
        return [
            (m.in_channels, m.out_channels) for m in seq if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
        ]

    assert convs(para.encoder) == [(64, 64), (64, 32), (32, 32)]
    assert convs(para.decoder) == [(32, 32), (32, 64), (64, 64)]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in para.modules())
    assert all(m.negative_slope == 0.1 for m in para.modules() if isinstance(m, nn.LeakyReLU))
    trans = translator(16, 64, 0.5)
    assert convs(trans) == [(16, 16), (16, 32), (32, 32)]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in trans) == 3
    factor, rec = para(_randn(2, 64, 4, 4, seed=14))
    assert factor.shape == (2, 32, 4, 4) and rec.shape == (2, 64, 4, 4)


def test_paired_stages():
    """RepDistiller feat[1:-1] is stages[1:], feat[:-1] all stages; unequal counts pair the deepest."""
    assert paired([0, 1, 2, 3], [0, 1, 2, 3], skip_stem=True) == ([1, 2, 3], [1, 2, 3])
    assert paired([0, 1, 2, 3, 4], [0, 1, 2, 3], skip_stem=True) == ([2, 3, 4], [1, 2, 3])
    assert paired([0, 1, 2, 3], [0, 1, 2, 3, 4], skip_stem=False) == ([0, 1, 2, 3], [1, 2, 3, 4])


# ---- pre-activation features ----------------------------------------------------------------------------------

# per family: which stages end in a ReLU (their output is relu(pre-activation))
RECTIFIED = {
    "resnet": [True] * 4,
    "vgg": [True] * 5,
    "shufflenet": [True] * 4,
    "mobilenetv2": [True, False, False, False, False],
    "wrn": [False, False, False, True],
}


@pytest.mark.parametrize("name", sorted(KDBENCH_MODELS))
def test_preact_features_of_every_cifar_architecture(name):
    """relu(pre-activation) is the stage's output where the stage ends in a ReLU; a MobileNetV2 linear bottleneck is
    its own pre-activation; a WRN stage's is the next pre-activation block's bn1 of it (RepDistiller's preact)."""
    torch.manual_seed(0)
    model = create_model(name, 10, 3).eval()
    x = _randn(2, 3, 32, 32, seed=15)
    reader = PreactFeatures(model, x)
    family = KDBENCH_MODELS[name]
    assert [tap.rectified for tap in reader.taps] == RECTIFIED[family]
    with torch.no_grad():
        out, pre = reader(x, stages=True)
    assert len(pre) == len(out.stages)
    for i, (tap, p, s) in enumerate(zip(reader.taps, pre, out.stages, strict=True)):
        assert p.shape == s.shape, (name, i)
        if tap.rectified:
            torch.testing.assert_close(F.relu(p), s, rtol=0, atol=0, msg=f"{name} stage {i}")
            assert bool((p < 0).any()), (name, i)  # something negative was rectified away
        elif family == "mobilenetv2":
            assert p is s
        else:
            with torch.no_grad():
                torch.testing.assert_close(p, getattr(model, f"block{i + 1}")[0].bn1(s))


@pytest.mark.parametrize("name", ["cifar_vgg8", "cifar_resnet8", "cifar_shufflenetv2", "cifar_wrn_16_1"])
def test_preact_features_train_and_backpropagate(name):
    """In training mode (batch statistics, in-place ReLUs after the read) the pre-activations still rectify to the
    stages and carry gradient into the model."""
    torch.manual_seed(0)
    model = create_model(name, 10, 3).train()
    x = _randn(4, 3, 32, 32, seed=16)
    reader = PreactFeatures(model, x)
    assert model.training  # the probe restored the mode
    out, pre = reader(x, stages=True)
    for tap, p, s in zip(reader.taps, pre, out.stages, strict=True):
        if tap.rectified:
            torch.testing.assert_close(F.relu(p), s)
    sum(p.pow(2).mean() for p in pre).backward()
    assert all(p.grad is None for p in model.get_classifier().parameters())  # the logits play no part
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.weight.grad is not None and float(first_conv.weight.grad.abs().sum()) > 0


def test_preact_features_of_a_timm_resnet():
    """Stages that end in a ReLU module (timm's ResNet blocks) are found by the generic rule."""
    model = create_model("resnet18", 10, 3).eval()
    x = _randn(2, 3, 32, 32, seed=17)
    reader = PreactFeatures(model, x)
    with torch.no_grad():
        out, pre = reader(x, stages=True)
    for p, s in zip(pre, out.stages, strict=True):
        torch.testing.assert_close(F.relu(p), s, rtol=0, atol=0)


def test_preact_features_missing_is_a_one_line_error():
    model = create_model("mobilenetv3_small_050", 10, 3)
    with pytest.raises(KdbenchError, match="cannot find the pre-activation") as err:
        PreactFeatures(model, torch.zeros(2, 3, 32, 32))
    assert "\n" not in str(err.value)


# ---- the init stage -------------------------------------------------------------------------------------------


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _init(name, fashion, stream, student="cifar_resnet8", epochs=1, **hp):
    method = get_method(name)(make_setup(fashion, stream, student=student, epochs=epochs), **hp)
    student_before, teacher_before = _state(method.student), _state(method.teacher)
    own = {k: _state(m) for k, m in method.named_children() if k != "student"}
    begin_training(method, stream)  # what fit does first: train mode, the stream handed over, the init stage
    return method, student_before, teacher_before, own


def test_ft_init_trains_only_the_paraphraser(fashion, tiny_stream):
    method, student, teacher, own = _init("ft", fashion, tiny_stream)
    assert _same(student, _state(method.student)) and _same(teacher, _state(method.teacher))
    assert not _same(own["paraphraser"], _state(method.paraphraser))
    assert _same(own["translator"], _state(method.translator))
    assert method.init_stats["init_steps"] == len(tiny_stream)  # at least one epoch's worth
    trained = {id(p) for p in method.trainable_parameters()}
    assert not any(id(p) in trained for p in method.paraphraser.parameters())  # frozen for the main stage
    assert all(id(p) in trained for p in method.translator.parameters())
    method.train()
    assert not method.paraphraser.training


def test_fsp_init_trains_the_student_body(fashion, tiny_stream):
    """RepDistiller's fsp init trains model_s.get_feat_modules(): the student but its classifier."""
    method, student, teacher, _ = _init("fsp", fashion, tiny_stream)
    after = _state(method.student)
    assert _same(teacher, _state(method.teacher))
    assert all(torch.equal(student[k], after[k]) for k in ("fc.weight", "fc.bias"))
    assert not torch.equal(student["conv1.weight"], after["conv1.weight"])
    assert not torch.equal(student["layer3.0.conv2.weight"], after["layer3.0.conv2.weight"])


def test_ab_init_trains_connectors_and_student_body(fashion, tiny_stream):
    """wrn_16_2 (32/64/128 channels) against resnet14 (16/32/64): every connector is a conv + BN; the init stage
    trains them and the student's body, not its classifier nor the teacher; the connectors are frozen after."""
    method, student, teacher, own = _init("ab", fashion, tiny_stream, student="cifar_wrn_16_2")
    after = _state(method.student)
    assert _same(teacher, _state(method.teacher))
    assert all(torch.equal(student[k], after[k]) for k in ("fc.weight", "fc.bias"))
    assert not torch.equal(student["block1.0.conv1.weight"], after["block1.0.conv1.weight"])
    conv_keys = [k for k in own["connectors"] if k.endswith("conv.weight")]
    assert len(conv_keys) == 3
    assert all(not torch.equal(own["connectors"][k], _state(method.connectors)[k]) for k in conv_keys)
    assert not any(p.requires_grad for p in method.connectors.parameters())
    assert method.extra_parameters() == sum(p.numel() for p in method.connectors.parameters())


def test_ab_connectors_are_identities_for_matching_stages(fashion, tiny_stream):
    method = get_method("ab")(make_setup(fashion, tiny_stream))  # resnet8 and resnet14: same stage shapes
    assert all(isinstance(c, nn.Identity) for c in method.connectors) and len(method.connectors) == 3


@pytest.mark.parametrize(
    "epochs, fraction, steps", [(1, 30 / 240, 4), (16, 30 / 240, 8), (16, 0.5, 32), (16, 0.0, 0)]
)
def test_init_stage_length(fashion, tiny_stream, epochs, fraction, steps):
    """init_fraction of the run's steps (4 a epoch here), at least one epoch's worth; 0 leaves the init out."""
    method, student, *_ = _init("fsp", fashion, tiny_stream, epochs=epochs, init_fraction=fraction)
    assert method.init_stats["init_steps"] == steps
    assert _same(student, _state(method.student)) == (steps == 0)


def test_init_stage_is_timed(fashion, tiny_stream):
    """before_training runs inside fit's timed training, so the init stage counts in the cell's training time."""
    method = get_method("ft")(make_setup(fashion, tiny_stream))
    init_loss = method.init_loss

    def slow(batch):
        time.sleep(0.05)
        return init_loss(batch)

    method.init_loss = slow
    stats = fit(method, tiny_stream, RECIPES["cpu"], epochs=1, progress=False)
    assert stats.wall_time_s >= 0.05 * len(tiny_stream)


# ---- methods --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("hp", [{}, {"kd_weight": 0.9}])
def test_short_fit_has_finite_losses(name, hp, fashion, tiny_stream):
    method = get_method(name)(make_setup(fashion, tiny_stream, epochs=2), **hp)
    stats = fit(method, tiny_stream, RECIPES["cpu"], epochs=2, progress=False)
    for epoch in stats.epoch_losses:
        assert all(math.isfinite(v) for v in epoch.values()), epoch
    assert ("plus_kd" in stats.epoch_losses[-1]) == bool(hp)
    assert set(method.record_extras()) >= (
        {"init_steps", "init_loss"} if name in ("fsp", "ab", "ft") else set()
    )


@pytest.mark.parametrize("name, weight", [("fsp", "fsp_weight"), ("ab", "ab_weight")])
def test_two_stage_methods_add_nothing_after_init_by_default(name, weight, fashion, tiny_stream):
    """RepDistiller's loop sets loss_kd = 0 for fsp and abound after the init stage; a weight adds the term back."""
    batch = next(iter(tiny_stream.epoch(0)))
    assert set(get_method(name)(make_setup(fashion, tiny_stream)).loss_terms(batch)) == {"ce"}
    terms = get_method(name)(make_setup(fashion, tiny_stream), **{weight: 1.0}).loss_terms(batch)
    assert set(terms) == {"ce", name} and float(terms[name].detach()) > 0


def test_methods_feed_their_losses_the_defaults(fashion, tiny_stream):
    """Each one-stage term is its pure loss on stages[1:] (RepDistiller feat[1:-1]) or the last stage (feat[-2])
    times the RepDistiller -b weight."""
    batch = next(iter(tiny_stream.epoch(0)))
    for name, key, weight in (("vid", "vid", 1.0), ("nst", "nst", 50.0), ("ft", "ft", 200.0)):
        method = get_method(name)(make_setup(fashion, tiny_stream))
        method.eval()  # the same batch statistics in both forward passes
        terms = method.loss_terms(batch)
        s = method.student_outputs(batch.x).stages
        t = method.teacher_outputs(batch, features=True).stages
        if name == "vid":
            expected = sum(r(a, b) for r, a, b in zip(method.regressors, s[1:], t[1:], strict=True))
        elif name == "nst":
            expected = sum(nst_loss(a, b) for a, b in zip(s[1:], t[1:], strict=True))
        else:
            expected = ft_loss(method.translator(s[-1]), method.paraphraser.encoder(t[-1]))
        torch.testing.assert_close(terms[key], weight * expected, msg=name)


def test_bad_pairs_and_values_are_errors(fashion, tiny_stream):
    with pytest.raises(KdbenchError, match="fsp needs the same channels"):
        get_method("fsp")(make_setup(fashion, tiny_stream, student="cifar_wrn_16_2"))
    with pytest.raises(KdbenchError, match="init_pred_var"):
        get_method("vid")(make_setup(fashion, tiny_stream), init_pred_var=1e-6)
    with pytest.raises(KdbenchError, match=r"init_fraction=1.5 of ab must be in \[0, 1\]"):
        get_method("ab")(make_setup(fashion, tiny_stream), init_fraction=1.5)


@pytest.mark.parametrize("name", sorted(KDBENCH_MODELS))
def test_stage_channels_are_the_probed_stages(name):
    model = create_model(name, 10, 3).eval()
    with torch.no_grad():
        probed = [s.shape[1] for s in forward_with_features(model, torch.randn(2, 3, 32, 32)).stages]
    assert stage_channels(model) == probed


def test_profiles_leave_out_the_pairs_fsp_cannot_take():
    paper = PROFILES["paper"]
    left = {(m, p.student) for m, p, _ in left_out(paper)}
    assert left == {("fsp", s) for s in ("cifar_mobilenetv2", "cifar_shufflenetv1", "cifar_shufflenetv2")}
    cells = {(c.method, c.student) for c in all_cells(paper)}
    assert not left & cells and ("fsp", "cifar_resnet8x4") in cells
    assert not left_out(PROFILES["cpu"]) and not left_out(PROFILES["zoo"])
