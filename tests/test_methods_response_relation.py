"""dkd, rkd, sp and irg: their losses equal plain re-statements of the reference code (RepDistiller, mdistiller,
Knowledge-Distillation-Zoo), the methods feed them the right features, and the distillation terms vanish when the
student is the teacher."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdbench.losses import dkd_loss, irg_loss, rkd_loss, similarity_preserving_loss
from kdbench.methods import get_method
from tests.conftest import TINY_TEACHER, make_setup

torch.set_num_threads(1)  # 2 threads on a shared 2-core machine spin: one is many times faster

# ---- plain re-statements of the reference definitions (loops over samples, no shared helpers) -------------------


def _smooth_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    x = (a - b).abs()
    return torch.where(x < 1, 0.5 * x * x, x - 0.5).mean()


def _ref_rkd(s: torch.Tensor, t: torch.Tensor, w_d: float = 25.0, w_a: float = 50.0) -> torch.Tensor:
    """RepDistiller distiller_zoo/RKD.py: pdist (eps 1e-12 clamp, zero diagonal) / mean positive distance, Huber;
    cosines between normalised difference vectors e_j - e_i and e_k - e_i, Huber."""
    n = len(s)

    def dist(e):
        d = torch.zeros(n, n)
        for i in range(n):
            for j in range(n):
                if i != j:
                    d[i, j] = max(float((e[i] - e[j]).pow(2).sum()), 1e-12) ** 0.5
        return d / d[d > 0].mean()

    def angles(e):
        out = torch.zeros(n, n, n)
        for i in range(n):
            v = [(e[j] - e[i]) / max(float((e[j] - e[i]).norm()), 1e-12) for j in range(n)]
            for j in range(n):
                for k in range(n):
                    out[i, j, k] = (v[j] * v[k]).sum()
        return out.flatten()

    return w_d * _smooth_l1(dist(s), dist(t)) + w_a * _smooth_l1(angles(s), angles(t))


def _ref_sp(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """RepDistiller distiller_zoo/SP.py: Gram matrix, F.normalize (rows), squared difference summed, / b²."""
    b = len(fs)

    def gram(f):
        f = f.reshape(b, -1)
        g = torch.tensor([[float((f[i] * f[j]).sum()) for j in range(b)] for i in range(b)])
        return torch.stack([row / max(float(row.norm()), 1e-12) for row in g])

    return (gram(ft) - gram(fs)).pow(2).sum() / (b * b)


def _ref_dkd(zs: torch.Tensor, zt: torch.Tensor, y: torch.Tensor, alpha: float, beta: float, temp: float):
    """mdistiller distillers/DKD.py, per sample: TCKD is the KL between the binary [p_gt, 1 - p_gt]
    distributions, NCKD the KL among the non-target classes (the target logit masked by -1000), both summed,
    times T², over the batch size."""
    tckd = nckd = 0.0
    for s, t, g in zip(zs, zt, y, strict=True):
        ps, pt = F.softmax(s / temp, 0), F.softmax(t / temp, 0)
        bs = [float(ps[g]), float(1 - ps[g])]
        bt = [float(pt[g]), float(1 - pt[g])]
        tckd += sum(q * math.log(q / p) for p, q in zip(bs, bt, strict=True))
        others = [c for c in range(len(s)) if c != g]
        qs, qt = F.softmax(s[others] / temp, 0), F.softmax(t[others] / temp, 0)
        nckd += float((qt * (qt.log() - qs.log())).sum())
    scale = temp**2 / len(y)
    return alpha * tckd * scale + beta * nckd * scale


def _ref_irg(s_maps, t_maps, zs, zt, w_v=0.1, w_e=5.0, w_t=5.0):
    """Knowledge-Distillation-Zoo kd_losses/irg.py for [fm1, fm2, feat, out]: squared distances with a zero
    diagonal over their max; transformation pools fm1 to fm2's size and averages fm2's channel pairs."""

    def edges(f):
        f = f.flatten(1)
        n = len(f)
        d = torch.tensor(
            [
                [max(float((f[i] - f[j]).pow(2).sum()), 1e-12) if i != j else 0.0 for j in range(n)]
                for i in range(n)
            ]
        )
        return d / d.max()

    def transform(fm1, fm2):
        fm1 = F.adaptive_avg_pool2d(fm1, fm2.shape[2:])
        fm2 = (fm2[:, 0::2] + fm2[:, 1::2]) / 2
        d = torch.tensor([max(float((a - b).pow(2).sum()), 1e-12) for a, b in zip(fm1, fm2, strict=True)])
        return d / d.max()

    vertex = F.mse_loss(zs, zt)
    edge = sum(F.mse_loss(edges(s), edges(t)) for s, t in zip(s_maps, t_maps, strict=True)) / len(s_maps)
    tran = F.mse_loss(transform(s_maps[0], s_maps[1]), transform(t_maps[0], t_maps[1]))
    return w_v * vertex + w_e * edge + w_t * tran


# ---- the losses against the re-statements -------------------------------------------------------------------------


def test_rkd_loss_equals_repdistiller():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(7, 12, generator=g), torch.randn(7, 20, generator=g) * 3
    assert torch.allclose(rkd_loss(s, t), _ref_rkd(s, t), rtol=1e-5, atol=1e-5)
    assert torch.allclose(rkd_loss(s, t, 1.0, 0.0), _ref_rkd(s, t, 1.0, 0.0), rtol=1e-5, atol=1e-5)


def test_similarity_preserving_loss_equals_repdistiller():
    g = torch.Generator().manual_seed(2)
    fs, ft = torch.randn(6, 4, 3, 3, generator=g).relu(), torch.randn(6, 8, 2, 2, generator=g).relu()
    assert torch.allclose(similarity_preserving_loss(fs, ft), _ref_sp(fs, ft), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("alpha", "beta", "temp"), [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0)])
def test_dkd_loss_equals_mdistiller(alpha, beta, temp):
    g = torch.Generator().manual_seed(3)
    zs, zt = torch.randn(5, 10, generator=g) * 3, torch.randn(5, 10, generator=g) * 3
    y = torch.randint(0, 10, (5,), generator=g)
    ours = float(dkd_loss(zs, zt, y, alpha, beta, temp))
    assert ours == pytest.approx(_ref_dkd(zs, zt, y, alpha, beta, temp), rel=1e-5, abs=1e-5)


def test_irg_loss_equals_knowledge_distillation_zoo():
    g = torch.Generator().manual_seed(4)
    s_maps = [
        torch.randn(6, 8, 8, 8, generator=g),
        torch.randn(6, 16, 4, 4, generator=g),
        torch.randn(6, 16, generator=g),
    ]
    t_maps = [
        torch.randn(6, 16, 8, 8, generator=g),
        torch.randn(6, 32, 4, 4, generator=g),
        torch.randn(6, 32, generator=g),
    ]
    zs, zt = torch.randn(6, 10, generator=g), torch.randn(6, 10, generator=g)
    ours = irg_loss(s_maps, t_maps, zs, zt)
    assert torch.allclose(ours, _ref_irg(s_maps, t_maps, zs, zt), rtol=1e-5, atol=1e-6)
    assert float(irg_loss(s_maps, s_maps, zs, zs)) == pytest.approx(0.0, abs=1e-6)


# ---- the methods ------------------------------------------------------------------------------------------------


def test_dkd_warmup_follows_mdistiller(fashion, tiny_stream):
    setup = make_setup(fashion, tiny_stream, epochs=4)
    method = get_method("dkd")(setup)
    factors = []
    for epoch in (0, 9, 19, 30):
        method.epoch = epoch
        factors.append(method.warmup_factor())
    assert factors == pytest.approx([1 / 20, 10 / 20, 1.0, 1.0])  # mdistiller counts epochs from 1

    method = get_method("dkd")(setup, warmup_fraction=0.5)  # 2 of the run's 4 epochs
    method.epoch = 0
    assert method.warmup_factor() == pytest.approx(0.5)
    method.epoch = 1
    assert method.warmup_factor() == pytest.approx(1.0)

    batch = next(tiny_stream.epoch(0))
    method.epoch = 0
    terms = method.loss_terms(batch)
    method.student.eval()  # same outputs twice: compare the weighted term with the loss itself
    method.epoch = 0
    logits = method.student(batch.x)
    teacher = method.teacher_outputs(batch.x).logits
    full = dkd_loss(logits, teacher, batch.y, 1.0, 8.0, 4.0)
    eval_terms = method.loss_terms(batch)
    assert torch.allclose(eval_terms["dkd"], 0.5 * full, rtol=1e-5)
    assert set(terms) == {"ce", "dkd"}


@pytest.mark.parametrize(("name", "term"), [("dkd", "dkd"), ("rkd", "rkd"), ("sp", "sp"), ("irg", "irg")])
def test_distillation_term_vanishes_when_the_student_is_the_teacher(name, term, fashion, tiny_stream):
    batch = next(tiny_stream.epoch(0))
    setup = make_setup(fashion, tiny_stream, student=TINY_TEACHER)
    cls = get_method(name)

    other = cls(setup).eval()
    assert other.loss_terms(batch)[term].item() > 1e-4  # a different student: a real distillation signal

    setup.student.load_state_dict(setup.teachers[0].state_dict())
    same = cls(setup).eval()  # eval mode: student and teacher use the same batch-norm statistics
    assert same.loss_terms(batch)[term].item() == pytest.approx(0.0, abs=1e-5)


def test_relation_methods_use_the_documented_features(fashion, tiny_stream):
    """rkd reads the pooled embeddings, sp the last stage: replacing those inputs changes the term as expected."""
    batch = next(tiny_stream.epoch(0))
    setup = make_setup(fashion, tiny_stream)
    rkd = get_method("rkd")(setup).eval()
    out = rkd.student_outputs(batch.x)
    teacher = rkd.teacher_outputs(batch.x, features=True)
    assert torch.allclose(rkd.loss_terms(batch)["rkd"], rkd_loss(out.embedding, teacher.embedding), rtol=1e-5)
    sp = get_method("sp")(setup).eval()
    expected = 3000.0 * similarity_preserving_loss(out.stages[-1], teacher.stages[-1])
    assert torch.allclose(sp.loss_terms(batch)["sp"], expected, rtol=1e-5)
