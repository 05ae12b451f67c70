"""dist, lskd, ctkd, mlkd, nkd and "+KD": each loss equals a re-statement of its reference code written in that
code's own form (mdistiller-style DIST, logit-standardization-KD, CTKD, Multi-Level-Logit-Distillation, cls_KD), on
hand-checkable cases and random inputs; CTKD's temperature is trained through a reversed gradient; "+KD" adds
exactly kd_weight x Hinton's KD and nothing else."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdbench.engine import RECIPES, fit
from kdbench.errors import KdbenchError
from kdbench.losses import dist_loss, kd_loss, lskd_loss, mlkd_losses, nkd_loss
from kdbench.methods import MethodInfo, get_method
from kdbench.methods.base import Method, resolve_hparams
from kdbench.methods.logit_zoo import MLKD_EXTRA_TEMPERATURES, GlobalTemperature
from tests.conftest import make_setup

torch.set_num_threads(1)


def _logits(seed: int, n: int = 8, c: int = 10, scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * scale, torch.randn(n, c, generator=g) * scale


# ---- re-statements of the reference code ----------------------------------------------------------------------


def _ref_dist(z_s, z_t, beta, gamma, T):
    """mdistiller-style DIST.py (as in hunto/DIST_KD): cosine_similarity / pearson_correlation / inter / intra."""

    def cosine_similarity(a, b, eps=1e-8):
        return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)

    def pearson_correlation(a, b, eps=1e-8):
        return cosine_similarity(a - a.mean(1).unsqueeze(1), b - b.mean(1).unsqueeze(1), eps)

    def inter_class_relation(y_s, y_t):
        return 1 - pearson_correlation(y_s, y_t).mean()

    def intra_class_relation(y_s, y_t):
        return inter_class_relation(y_s.transpose(0, 1), y_t.transpose(0, 1))

    y_s, y_t = F.softmax(z_s / T, dim=1), F.softmax(z_t / T, dim=1)
    return beta * inter_class_relation(y_s, y_t) * T**2 + gamma * intra_class_relation(y_s, y_t) * T**2


def _ref_lskd(logits_student_in, logits_teacher_in, temperature):
    """logit-standardization-KD mdistiller/distillers/KD.py: normalize, then kd_loss (kl_div none .sum(1).mean())."""

    def normalize(logit):
        mean = logit.mean(dim=-1, keepdims=True)
        stdv = logit.std(dim=-1, keepdims=True)
        return (logit - mean) / (1e-7 + stdv)

    log_pred_student = F.log_softmax(normalize(logits_student_in) / temperature, dim=1)
    pred_teacher = F.softmax(normalize(logits_teacher_in) / temperature, dim=1)
    return F.kl_div(log_pred_student, pred_teacher, reduction="none").sum(1).mean() * temperature**2


def _ref_mlkd(logits_student, logits_teacher, temperatures):
    """Multi-Level-Logit-Distillation KD_ours.py: kd_loss, bc_loss and cc_loss, summed over the temperatures."""

    def kd(s, t, temperature):
        log_pred_student = F.log_softmax(s / temperature, dim=1)
        pred_teacher = F.softmax(t / temperature, dim=1)
        return F.kl_div(log_pred_student, pred_teacher, reduction="none").sum(1).mean() * temperature**2

    def cc_loss(s, t, temperature):
        batch_size, class_num = t.shape
        pred_student, pred_teacher = F.softmax(s / temperature, dim=1), F.softmax(t / temperature, dim=1)
        student_matrix = torch.mm(pred_student.transpose(1, 0), pred_student)
        teacher_matrix = torch.mm(pred_teacher.transpose(1, 0), pred_teacher)
        return ((teacher_matrix - student_matrix) ** 2).sum() / class_num

    def bc_loss(s, t, temperature):
        batch_size, class_num = t.shape
        pred_student, pred_teacher = F.softmax(s / temperature, dim=1), F.softmax(t / temperature, dim=1)
        student_matrix = torch.mm(pred_student, pred_student.transpose(1, 0))
        teacher_matrix = torch.mm(pred_teacher, pred_teacher.transpose(1, 0))
        return ((teacher_matrix - student_matrix) ** 2).sum() / batch_size

    return tuple(
        sum(f(logits_student, logits_teacher, T) for T in temperatures) for f in (kd, bc_loss, cc_loss)
    )


def _ref_nkd(logit_s, logit_t, gt_label, temp, gamma):
    """cls_KD mmcls/models/dis_losses/nkd.py NKDLoss.forward (the version with scatter_(1, label, 0))."""
    label = gt_label.view(len(gt_label), 1)
    N, c = logit_s.shape
    s_i = F.log_softmax(logit_s, dim=1)
    t_i = F.softmax(logit_t, dim=1)
    s_t = torch.gather(s_i, 1, label)
    t_t = torch.gather(t_i, 1, label).detach()
    loss_t = -(t_t * s_t).mean()
    mask = torch.ones_like(logit_s).scatter_(1, label, 0).bool()
    logit_s = logit_s[mask].reshape(N, -1)
    logit_t = logit_t[mask].reshape(N, -1)
    S_i = F.log_softmax(logit_s / temp, dim=1)
    T_i = F.softmax(logit_t / temp, dim=1)
    loss_non = (T_i * S_i).sum(dim=1).mean()
    return loss_t - gamma * (temp**2) * loss_non


# ---- pure losses ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "seed, beta, gamma, temp", [(0, 1.0, 1.0, 4.0), (1, 2.0, 0.5, 1.0), (2, 1.0, 2.0, 3.0)]
)
def test_dist_loss_equals_reference(seed, beta, gamma, temp):
    s, t = _logits(seed)
    torch.testing.assert_close(
        dist_loss(s, t, beta, gamma, temp), _ref_dist(s, t, beta, gamma, temp), atol=1e-5, rtol=1e-5
    )


def test_dist_loss_by_hand():
    """Perfectly correlated probabilities (same logits) give 0; perfectly anti-correlated rows and columns of a
    2x2 case give 1 - (-1) = 2 per relation, so T² · (beta · 2 + gamma · 2)."""
    s, _ = _logits(3)
    assert float(dist_loss(s, s)) == pytest.approx(0.0, abs=1e-4)  # T² = 16 times float32 rounding
    a = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    assert float(dist_loss(a, a.flip(1), beta=1.0, gamma=0.5, temperature=1.0)) == pytest.approx(
        3.0, abs=1e-5
    )


@pytest.mark.parametrize("seed, temp", [(0, 2.0), (1, 3.0), (2, 1.0)])
def test_lskd_loss_equals_reference(seed, temp):
    s, t = _logits(seed)
    torch.testing.assert_close(lskd_loss(s, t, temp), _ref_lskd(s, t, temp), atol=1e-5, rtol=1e-5)


def test_lskd_ignores_logit_range_and_shift():
    """The point of the Z-score: a student whose logits are any positive affine map of the teacher's has no loss,
    where plain KD would still push it to match the teacher's range."""
    _, t = _logits(4)
    assert float(lskd_loss(0.3 * t + 5.0, t)) == pytest.approx(0.0, abs=1e-5)
    assert float(kd_loss(0.3 * t + 5.0, t, 2.0)) > 0.1


@pytest.mark.parametrize("seed", [0, 1])
def test_mlkd_losses_equal_reference(seed):
    s, t = _logits(seed)
    temps = (4.0, *MLKD_EXTRA_TEMPERATURES)
    for ours, ref in zip(mlkd_losses(s, t, temps), _ref_mlkd(s, t, temps), strict=True):
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_mlkd_losses_by_hand():
    """Same logits: all three levels vanish. One sample with one-hot-like teacher and uniform student over two
    classes at T=1: Gram entries are sums of squares of probabilities, checked by hand."""
    s, _ = _logits(5)
    assert all(float(x) == pytest.approx(0.0, abs=1e-6) for x in mlkd_losses(s, s, (4.0, 2.0)))
    big = 50.0  # softmax([50, 0]) = [1, 0] to float precision
    _, batch, klass = mlkd_losses(torch.zeros(1, 2), torch.tensor([[big, 0.0]]), (1.0,))
    # batch Gram (1x1): teacher 1, student 0.5 -> (0.5)^2 / 1; class Gram (2x2): teacher [[1,0],[0,0]],
    # student all 0.25 -> (0.75^2 + 3 * 0.25^2) / 2
    assert float(batch) == pytest.approx(0.25, abs=1e-6)
    assert float(klass) == pytest.approx((0.75**2 + 3 * 0.25**2) / 2, abs=1e-6)


@pytest.mark.parametrize("seed, temp, gamma", [(0, 1.0, 1.5), (1, 3.0, 3.5), (2, 2.0, 1.0)])
def test_nkd_loss_equals_reference(seed, temp, gamma):
    s, t = _logits(seed)
    y = torch.arange(8) % 10
    torch.testing.assert_close(
        nkd_loss(s, t, y, temp, gamma), _ref_nkd(s, t, y, temp, gamma), atol=1e-5, rtol=1e-5
    )


def test_nkd_loss_by_hand():
    """Uniform student and teacher over 3 classes, T=1, gamma=1: -(1/3) log(1/3) for the target, plus the entropy
    of the uniform distribution over the two non-target classes, log 2."""
    expected = -(1 / 3) * math.log(1 / 3) + math.log(2)
    assert float(
        nkd_loss(torch.zeros(1, 3), torch.zeros(1, 3), torch.tensor([0]), 1.0, 1.0)
    ) == pytest.approx(expected, abs=1e-6)


# ---- CTKD -----------------------------------------------------------------------------------------------------


def test_ctkd_temperature_gets_reversed_gradient():
    """d loss / d w = -strength · d loss / d T · dT/dw: the temperature is pushed to increase the KD loss."""
    s, t = _logits(6)
    s.requires_grad_(True)
    module = GlobalTemperature(t_start=1.0, t_end=20.0, init=1.0)
    strength = 0.7
    temp = module(strength)
    assert float(temp.detach()) == pytest.approx(
        1.0 + 20.0 / (1.0 + math.exp(-1.0)), abs=1e-5
    )  # CTKD's initial 15.6
    loss = kd_loss(s, t, temp)
    (dloss_dtemp,) = torch.autograd.grad(loss, temp, retain_graph=True)
    loss.backward()
    sig = 1.0 / (1.0 + math.exp(-1.0))
    expected = -strength * float(dloss_dtemp) * 20.0 * sig * (1 - sig)
    assert float(dloss_dtemp) != 0.0
    assert math.copysign(1.0, float(module.raw.grad)) == -math.copysign(1.0, float(dloss_dtemp))
    assert float(module.raw.grad) == pytest.approx(expected, rel=1e-4)
    assert s.grad is not None and float(s.grad.abs().sum()) > 0  # the student's own gradient is not reversed


def _ref_cosine_decay(
    i: int, max_value: float = 0.0, min_value: float = -1.0, num_loops: float = 10
) -> float:
    """CTKD train_student.py CosineDecay.get_value (the GRL multiplies gradients by this value)."""
    i = min(max(i, 0), num_loops)
    value = (math.cos(i * math.pi / num_loops) + 1.0) * 0.5
    return value * (max_value - min_value) + min_value


def test_ctkd_curriculum_follows_reference(fashion, tiny_stream):
    setup = make_setup(fashion, tiny_stream, epochs=48)
    method = get_method("ctkd")(setup)
    for epoch in (0, 1, 4, 9, 10, 30):
        method.epoch = epoch
        assert method.reversal_strength() == pytest.approx(-_ref_cosine_decay(epoch + 1), abs=1e-9)
    assert method.extra_parameters() == 1  # the temperature's one parameter is trained, not deployed
    assert method.record_extras()["final_temperature"] == pytest.approx(1.0 + 20.0 / (1.0 + math.exp(-1.0)))
    raw = method.temperature.raw
    assert any(p is raw for p in method.trainable_parameters())
    short = get_method("ctkd")(setup, curriculum_fraction=0.25)  # 12 of 48 epochs
    short.epoch = 11
    assert short.reversal_strength() == pytest.approx(1.0)
    short.epoch = 5
    assert short.reversal_strength() == pytest.approx(-_ref_cosine_decay(6, num_loops=12), abs=1e-9)


# ---- "+KD" ----------------------------------------------------------------------------------------------------


def _batch(stream):
    return next(iter(stream.epoch(0)))


def test_plus_kd_adds_exactly_the_kd_term(fashion, tiny_stream):
    batch = _batch(tiny_stream)
    plain = get_method("at")(make_setup(fashion, tiny_stream))
    plus = get_method("at")(make_setup(fashion, tiny_stream), kd_weight=0.9)
    without, with_kd = plain.step_terms(batch), plus.step_terms(batch)
    assert set(with_kd) == set(without) | {"plus_kd"} and "plus_kd" not in without
    for key, value in without.items():
        torch.testing.assert_close(with_kd[key], value)
    expected = 0.9 * kd_loss(plain.student(batch.x), plain.teacher_outputs(batch).logits, 4.0)
    torch.testing.assert_close(with_kd["plus_kd"], expected)
    with_kd["plus_kd"].backward()  # it trains the student
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in plus.student.parameters())


def test_engine_trains_the_plus_kd_term(fashion, tiny_stream):
    method = get_method("at")(make_setup(fashion, tiny_stream), kd_weight=0.9)
    stats = fit(method, tiny_stream, RECIPES["cpu"], epochs=1, progress=False)
    assert stats.epoch_losses[0]["plus_kd"] > 0


def test_plus_kd_weight_zero_keeps_the_config():
    at = get_method("at")
    assert resolve_hparams(at, {"kd_weight": 0}) == resolve_hparams(at, {})  # same cell id as before "+KD"
    assert "kd_weight" not in resolve_hparams(at, {})
    assert resolve_hparams(at, {"kd_weight": 1})["kd_weight"] == 1.0
    with pytest.raises(KdbenchError, match=">= 0"):
        resolve_hparams(at, {"kd_weight": -1.0})


def test_own_kd_weight_is_not_doubled(fashion, tiny_stream):
    """kd (and ctkd) weigh their own KD term with kd_weight; "+KD" does not add a second one."""
    batch = _batch(tiny_stream)
    for name in ("kd", "ctkd"):
        terms = get_method(name)(make_setup(fashion, tiny_stream), kd_weight=0.5).step_terms(batch)
        assert "plus_kd" not in terms and "kd" in terms


@pytest.mark.parametrize("name", ["baseline", "dafl"])
def test_plus_kd_rejected_without_teacher_on_real_inputs(name, fashion, tiny_stream):
    cls = get_method(name)
    assert "kd_weight" not in resolve_hparams(cls, {"kd_weight": 0.0})
    with pytest.raises(KdbenchError, match="kd_weight must be 0"):
        resolve_hparams(cls, {"kd_weight": 0.9})


class _TransformsInput(Method):
    """A method whose student never sees `batch.x` itself (as a cross-modal or augmenting method would)."""

    info = MethodInfo(
        name="_transforms_input",
        technique="Response-Based KD",
        scheme="offline",
        knowledge="response",
        reference="test",
    )

    def loss_terms(self, batch):
        return {"ce": F.cross_entropy(self.student(batch.x.flip(3)), batch.y)}


def test_plus_kd_needs_student_logits_on_the_batch(fashion, tiny_stream):
    method = _TransformsInput(make_setup(fashion, tiny_stream), kd_weight=0.5)
    with pytest.raises(KdbenchError, match="student logits"):
        method.step_terms(_batch(tiny_stream))
    assert not method.student._forward_hooks  # the hook is removed even on failure


@pytest.mark.parametrize("name", ["dist", "lskd", "mlkd", "nkd"])
def test_new_methods_take_plus_kd(name, fashion, tiny_stream):
    terms = get_method(name)(make_setup(fashion, tiny_stream), kd_weight=0.5).step_terms(_batch(tiny_stream))
    assert "plus_kd" in terms and all(torch.isfinite(v) for v in terms.values())


def test_methods_vanish_when_student_is_teacher(fashion, tiny_stream):
    """With the teacher as student, LSKD and MLKD have nothing left to transfer. (DIST's eps-guarded correlation
    of an untrained teacher's near-uniform columns is not exactly 1, in the reference too; NKD keeps its target
    term, a soft cross-entropy.)"""
    batch = _batch(tiny_stream)
    for name, key in (("lskd", "lskd"), ("mlkd", "kd"), ("mlkd", "bc"), ("mlkd", "cc")):
        setup = make_setup(fashion, tiny_stream)
        setup.student = setup.teachers[0]
        method = get_method(name)(setup)
        method.student.eval()  # the same batch statistics as the teacher's forward
        assert float(method.loss_terms(batch)[key].detach()) == pytest.approx(0.0, abs=1e-4), (name, key)


def test_methods_feed_their_losses_the_defaults(fashion, tiny_stream):
    """Each method's distillation term is its pure loss on the student's and teacher's logits at its defaults."""
    batch = _batch(tiny_stream)
    for name, key, loss in (
        ("dist", "dist", lambda s, t: dist_loss(s, t, 1.0, 1.0, 4.0)),
        ("lskd", "lskd", lambda s, t: 9.0 * lskd_loss(s, t, 2.0)),
        ("nkd", "nkd", lambda s, t: nkd_loss(s, t, batch.y, 3.0, 3.5)),
        ("mlkd", "cc", lambda s, t: 0.9 * mlkd_losses(s, t, (4.0, 3.0, 5.0, 2.0, 6.0))[2]),
    ):
        method = get_method(name)(make_setup(fashion, tiny_stream))
        terms = method.loss_terms(batch)
        expected = loss(method.student(batch.x), method.teacher_outputs(batch).logits)
        torch.testing.assert_close(terms[key], expected, msg=name)
