"""crd, pkt and cc: each loss equals a direct computation of its formula (loops over samples, as RepDistiller
writes it) on small tensors, with the invariances the formulas have; CRD's memory bank moves by momentum and stays
normalised, its draws follow the reference's class-aware sampling, and a positive pair comes to score above the
negatives on a toy problem; each method trains a few steps with finite losses, and "crd+kd" adds Hinton's KD."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdbench.data import BatchStream
from kdbench.engine import RECIPES, fit
from kdbench.errors import KdbenchError
from kdbench.losses import kd_loss, pkt_loss
from kdbench.methods import get_method
from kdbench.methods.crd import (
    ClassLayout,
    ContrastHead,
    contrast_scores,
    momentum_update,
    nce_contrast_loss,
    nce_normaliser,
)
from kdbench.methods.relation_zoo import correlation_congruence_loss
from kdbench.metrics import training_step_flops
from tests.conftest import make_setup

torch.set_num_threads(1)


def _randn(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _batch(stream):
    return next(iter(stream.epoch(0)))


# ---- direct computations of the formulas (plain loops, no shared helpers) -------------------------------------------


def _hand_nce(probs: torch.Tensor, n_data: int, eps: float = 1e-7) -> float:
    """Tian et al. 2020, Eq. 18 as RepDistiller's ContrastLoss: -1/B Σ_b [log h(pos) + Σ_k log(1 - h(neg_k))]
    with h(x) = x / (x + m·Pn + eps), 1 - h written as m·Pn / (x + m·Pn + eps), m·Pn = K / N."""
    b, k1 = probs.shape
    noise = (k1 - 1) / n_data
    total = 0.0
    for i in range(b):
        p = float(probs[i, 0])
        total += math.log(p / (p + noise + eps))
        for j in range(1, k1):
            total += math.log(noise / (float(probs[i, j]) + noise + eps))
    return -total / b


def _hand_pkt(s: torch.Tensor, t: torch.Tensor, eps: float = 1e-7) -> float:
    """Passalis & Tefas 2018 as RepDistiller's PKT: cosine affinities mapped to [0, 1], rows turned into conditional
    probabilities, mean over all B² entries of p_t · log((p_t + eps) / (p_s + eps))."""
    n = len(s)

    def probs(e):
        unit = [row / (float(row.norm()) + eps) for row in e]
        k = [[(float((unit[i] * unit[j]).sum()) + 1.0) / 2.0 for j in range(n)] for i in range(n)]
        return [[k[i][j] / sum(k[i]) for j in range(n)] for i in range(n)]

    ps, pt = probs(s), probs(t)
    return (
        sum(pt[i][j] * math.log((pt[i][j] + eps) / (ps[i][j] + eps)) for i in range(n) for j in range(n))
        / n**2
    )


def _hand_cc(s: torch.Tensor, t: torch.Tensor) -> float:
    """RepDistiller's Correlation: consecutive samples' |s - t| gaps, their inner products, averaged over pairs."""
    pairs = [
        sum(abs(float(s[i, c] - t[i, c])) * abs(float(s[i + 1, c] - t[i + 1, c])) for c in range(s.shape[1]))
        for i in range(len(s) - 1)
    ]
    return sum(pairs) / len(pairs)


# ---- CRD: the pure pieces ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed, n_data", [(0, 50), (1, 1000), (2, 8)])
def test_nce_contrast_loss_by_hand(seed, n_data):
    probs = torch.rand(4, 6, generator=torch.Generator().manual_seed(seed)) * 0.1
    assert float(nce_contrast_loss(probs, n_data)) == pytest.approx(_hand_nce(probs, n_data), rel=1e-5)


def test_nce_loss_prefers_a_likely_positive_and_unlikely_negatives():
    """The NCE loss falls as the positive's probability rises and the negatives' fall."""
    base = torch.full((2, 5), 0.01)
    better_pos, better_neg = base.clone(), base.clone()
    better_pos[:, 0] = 0.5
    better_neg[:, 1:] = 0.001
    assert nce_contrast_loss(better_pos, 100) < nce_contrast_loss(base, 100)
    assert nce_contrast_loss(better_neg, 100) < nce_contrast_loss(base, 100)


def test_contrast_scores_by_hand_and_both_paths_agree():
    anchor = F.normalize(_randn(0, 3, 4), dim=1)
    memory = _randn(1, 10, 4)
    rows = torch.tensor([[0, 3, 3, 9], [1, 2, 5, 7], [2, 0, 4, 6]])
    got = contrast_scores(anchor, memory, rows, 0.5)  # 10 rows <= 4 * 4: scored against the whole memory
    for b in range(3):
        for j in range(4):
            expected = math.exp(float((memory[rows[b, j]] * anchor[b]).sum()) / 0.5)
            assert float(got[b, j]) == pytest.approx(expected, rel=1e-5)
    big = torch.cat([memory, _randn(2, 30, 4)])  # 40 rows > 4 * 4: the sampled rows are gathered instead
    torch.testing.assert_close(contrast_scores(anchor, big, rows, 0.5), got)


def test_nce_normaliser_is_n_times_the_mean():
    scores = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    assert nce_normaliser(scores, 100) == pytest.approx(300.0)


def test_momentum_update_by_hand():
    old = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    new = torch.tensor([[0.0, 1.0], [0.6, 0.8]])
    got = momentum_update(old, new, 0.5)
    row0 = torch.tensor([0.5, 0.5]) / math.sqrt(0.5)
    row1 = torch.tensor([0.3, 1.4]) / math.sqrt(0.3**2 + 1.4**2)
    torch.testing.assert_close(got, torch.stack([row0, row1]))
    torch.testing.assert_close(got.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(
        momentum_update(old[:1], new[:1], 1.0), old[:1]
    )  # momentum 1: the old row kept
    torch.testing.assert_close(momentum_update(old, new, 0.0), new)  # momentum 0: the (unit) new embedding


# ---- CRD: the head and its memory bank -----------------------------------------------------------------------------


def _toy(n: int = 64, classes: int = 8):
    """Teacher features and a noisy linear image of them as the student's, `classes` interleaved classes."""
    f_t = _randn(3, n, 16)
    f_s = f_t @ _randn(4, 16, 12) + 0.1 * _randn(5, n, 12)
    return f_s, f_t, torch.arange(n) % classes


def test_head_updates_only_the_batch_rows_by_momentum():
    f_s, f_t, labels = _toy()
    head = ContrastHead(12, 16, 8, len(labels), temperature=0.07, momentum=0.5)
    before_s, before_t = head.memory_s.clone(), head.memory_t.clone()
    # the reference's initialisation: uniform in ±1/sqrt(D/3), about unit norm, not normalised
    stdv = 1 / math.sqrt(8 / 3)
    assert float(before_s.abs().max()) <= stdv and float(before_s.norm(dim=1).mean()) == pytest.approx(
        1.0, abs=0.15
    )
    rows = torch.tensor([5, 9, 40])
    contrast = ClassLayout(labels).draw(rows, 6, "exact", torch.Generator().manual_seed(0))
    head(f_s[rows], f_t[rows], rows, contrast)
    v_s, v_t = head.embed(f_s[rows], f_t[rows])
    others = torch.ones(len(labels), dtype=torch.bool)
    others[rows] = False
    torch.testing.assert_close(head.memory_s[others], before_s[others], rtol=0, atol=0)
    torch.testing.assert_close(head.memory_t[others], before_t[others], rtol=0, atol=0)
    for memory, before, v in ((head.memory_s, before_s, v_s), (head.memory_t, before_t, v_t)):
        mixed = 0.5 * before[rows] + 0.5 * v.detach()
        torch.testing.assert_close(memory[rows], mixed / mixed.norm(dim=1, keepdim=True))
        torch.testing.assert_close(memory[rows].norm(dim=1), torch.ones(3))


def test_head_loss_is_the_two_sided_nce_with_z_fixed_on_the_first_batch():
    f_s, f_t, labels = _toy()
    n = len(labels)
    head = ContrastHead(12, 16, 8, n, temperature=0.07, momentum=0.5)
    layout, gen = ClassLayout(labels), torch.Generator().manual_seed(1)
    rows = torch.arange(8)
    contrast = layout.draw(rows, 10, "exact", gen)
    mem_s, mem_t = head.memory_s.clone(), head.memory_t.clone()
    loss = head(f_s[rows], f_t[rows], rows, contrast)
    v_s, v_t = head.embed(f_s[rows], f_t[rows])
    # student anchor against the teacher bank, teacher anchor against the student bank (RepDistiller out_v1/out_v2)
    out_s = torch.exp((mem_t[contrast] @ v_s.detach().unsqueeze(2)).squeeze(2) / 0.07)
    out_t = torch.exp((mem_s[contrast] @ v_t.detach().unsqueeze(2)).squeeze(2) / 0.07)
    z_s, z_t = float(out_s.mean()) * n, float(out_t.mean()) * n
    assert head.z_s == pytest.approx(z_s, rel=1e-5) and head.z_t == pytest.approx(z_t, rel=1e-5)
    expected = _hand_nce(out_s / z_s, n) + _hand_nce(out_t / z_t, n)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-4)
    head(f_s[rows + 8], f_t[rows + 8], rows + 8, layout.draw(rows + 8, 10, "exact", gen))
    assert (head.z_s, head.z_t) == (
        pytest.approx(z_s, rel=1e-5),
        pytest.approx(z_t, rel=1e-5),
    )  # never re-estimated


def test_positive_pair_scores_above_negatives_after_training():
    """On a toy problem (the student's features a linear image of the teacher's), training the two embeddings with
    the CRD loss makes each sample's student embedding closer to its own teacher memory row than to other classes'."""
    torch.manual_seed(0)
    f_s, f_t, labels = _toy()
    n = len(labels)
    head = ContrastHead(12, 16, 8, n, temperature=0.07, momentum=0.5)
    layout, gen = ClassLayout(labels), torch.Generator().manual_seed(0)
    other_class = labels[:, None] != labels[None, :]

    def beats_all_negatives() -> tuple[float, float, float]:
        with torch.no_grad():
            v_s, _ = head.embed(f_s, f_t)
            sim = v_s @ head.memory_t.t()
            pos = sim.diag()
            hardest = sim.masked_fill(~other_class, -2.0).max(dim=1).values
            mean_neg = (sim * other_class).sum(1) / other_class.sum(1)
        return float((pos > hardest).float().mean()), float(pos.mean()), float(mean_neg.mean())

    assert beats_all_negatives()[0] < 0.3
    opt = torch.optim.SGD(head.parameters(), lr=0.05, momentum=0.9)
    for _ in range(20):
        order = torch.randperm(n, generator=gen)
        for b in range(0, n, 16):
            rows = order[b : b + 16]
            loss = head(f_s[rows], f_t[rows], rows, layout.draw(rows, 16, "exact", gen))
            opt.zero_grad()
            loss.backward()
            opt.step()
    won, pos, neg = beats_all_negatives()
    assert won >= 0.8 and pos > neg + 0.5, (won, pos, neg)


# ---- CRD: which rows are contrasted --------------------------------------------------------------------------------


def test_draws_follow_the_reference_sampling():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 1])
    layout, gen = ClassLayout(labels), torch.Generator().manual_seed(0)
    rows = torch.arange(10)
    for k in (1, 5, 6):  # at most the smallest pool (10 - 4 = 6): without replacement, all distinct
        got = layout.draw(rows, k, "exact", gen)
        assert got.shape == (10, k + 1)
        assert torch.equal(got[:, 0], rows)  # exact: the sample itself is its positive
        for i in range(10):
            negatives = got[i, 1:].tolist()
            assert len(set(negatives)) == k and all(labels[j] != labels[i] for j in negatives)
    got = layout.draw(
        rows, 50, "exact", gen
    )  # more than any pool: with replacement, still other classes only
    for i in range(10):
        negatives = got[i, 1:]
        assert (labels[negatives] != labels[i]).all()
        assert set(negatives.tolist()) == {
            j for j in range(10) if labels[j] != labels[i]
        }  # 50 draws reach all
    relaxed = layout.draw(rows, 3, "relax", gen)
    assert torch.equal(labels[relaxed[:, 0]], labels)  # relax: a positive of the same class


def test_draws_mix_replacement_per_class():
    """Imbalanced classes: a sample of the big class has fewer negatives than k and draws with replacement, the
    others without (the reference decides per target class)."""
    labels = torch.tensor([0] * 8 + [1, 2])
    got = ClassLayout(labels).draw(torch.tensor([0, 8]), 4, "exact", torch.Generator().manual_seed(1))
    assert set(got[0, 1:].tolist()) <= {8, 9}  # 2 negatives for k = 4: repeats
    assert len(set(got[1, 1:].tolist())) == 4 and 8 not in got[1, 1:].tolist()


def test_one_class_has_no_negatives():
    with pytest.raises(KdbenchError, match="one class"):
        ClassLayout(torch.zeros(5, dtype=torch.long))


# ---- CRD: the method -----------------------------------------------------------------------------------------------


def _offset_stream(fashion):
    """A training stream whose samples are not the split's first: indices 7, 10, 13, ... as a subset gives."""
    keep = torch.arange(7, 7 + 3 * 64, 3)
    return BatchStream(
        fashion.x_train[keep], fashion.y_train[keep], fashion.info, batch_size=16, seed=0, index=keep
    )


def test_crd_defaults_and_extras(fashion, tiny_stream):
    method = get_method("crd")(make_setup(fashion, tiny_stream))
    hp = method.hp
    assert (
        hp["ce_weight"],
        hp["crd_weight"],
        hp["feat_dim"],
        hp["nce_k"],
        hp["nce_t"],
        hp["nce_m"],
        hp["mode"],
    ) == (1.0, 0.8, 128, 16384, 0.07, 0.5, "exact")
    s_dim = method.probe(method.student).embedding.shape[1]
    t_dim = method.probe(method.teacher).embedding.shape[1]
    assert (
        method.extra_parameters() == (s_dim + 1) * 128 + (t_dim + 1) * 128
    )  # the two embeddings, not the bank
    extras = method.record_extras()
    assert extras["memory_bank_values"] == 2 * tiny_stream.num_samples * 128
    assert extras["memory_bank_bytes"] == 4 * extras["memory_bank_values"]
    with pytest.raises(KdbenchError):
        get_method("crd")(make_setup(fashion, tiny_stream), mode="nearest")
    with pytest.raises(KdbenchError):
        get_method("crd")(make_setup(fashion, tiny_stream), nce_m=1.5)


def test_crd_step_updates_the_batch_rows_of_the_bank(fashion):
    stream = _offset_stream(fashion)
    method = get_method("crd")(make_setup(fashion, stream), nce_k=32)
    with pytest.raises(RuntimeError, match="on_training_data"):
        method.loss_terms(_batch(stream))
    method.on_training_data(stream)
    batch = _batch(stream)
    rows = (batch.index - 7) // 3  # bank row r holds the r-th smallest index
    before = method.head.memory_t.clone()
    terms = method.loss_terms(batch)
    assert set(terms) == {"ce", "crd"} and all(torch.isfinite(v) for v in terms.values())
    changed = (method.head.memory_t != before).any(dim=1)
    assert set(changed.nonzero().flatten().tolist()) == set(rows.tolist())
    torch.testing.assert_close(method.head.memory_t[rows].norm(dim=1), torch.ones(len(rows)))
    first = method.contrast_rows(rows)
    assert not torch.equal(first, method.contrast_rows(rows))  # a fresh draw each step


def test_crd_wrong_stream_size(fashion, tiny_stream):
    method = get_method("crd")(make_setup(fashion, tiny_stream))
    with pytest.raises(KdbenchError, match="memory bank"):
        method.on_training_data(
            BatchStream(fashion.x_train[:32], fashion.y_train[:32], fashion.info, batch_size=16)
        )


def test_crd_plus_kd_adds_exactly_the_kd_term(fashion, tiny_stream):
    """ "crd+kd" (RepDistiller -a 1 -b 0.8) is kd_weight=1: the same CRD step plus Hinton's KD at T = 4."""
    batch = _batch(tiny_stream)
    plain = get_method("crd")(make_setup(fashion, tiny_stream))
    plus = get_method("crd")(make_setup(fashion, tiny_stream), kd_weight=1.0)
    for method in (plain, plus):
        method.on_training_data(tiny_stream)
    without, with_kd = plain.step_terms(batch), plus.step_terms(batch)
    assert set(with_kd) == {"ce", "crd", "plus_kd"}
    for key in ("ce", "crd"):
        torch.testing.assert_close(with_kd[key], without[key])
    expected = kd_loss(plain.student(batch.x), plain.teacher_outputs(batch).logits, 4.0)
    torch.testing.assert_close(with_kd["plus_kd"], expected)


def test_crd_contrast_stays_fp32_under_autocast(fashion, tiny_stream):
    method = get_method("crd")(make_setup(fashion, tiny_stream), nce_k=32)
    method.on_training_data(tiny_stream)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = method.loss_terms(_batch(tiny_stream))
    assert terms["crd"].dtype == torch.float32 and torch.isfinite(terms["crd"])
    assert method.head.memory_s.dtype == torch.float32


def test_crd_flop_count_leaves_the_bank_alone(fashion, tiny_stream):
    method = get_method("crd")(make_setup(fashion, tiny_stream), nce_k=32)
    method.on_training_data(tiny_stream)
    before, draws = method.head.memory_s.clone(), method.draws
    assert training_step_flops(method, _batch(tiny_stream)) > 0
    assert torch.equal(method.head.memory_s, before) and method.draws == draws and method.head.z_s is None


# ---- PKT ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pkt_loss_by_hand(seed):
    s, t = (
        _randn(seed, 6, 5),
        _randn(seed + 10, 6, 7),
    )  # the two widths may differ: only affinities are compared
    assert float(pkt_loss(s, t)) == pytest.approx(_hand_pkt(s, t), rel=1e-5, abs=1e-8)


def test_pkt_invariances():
    """Only the directions of the embeddings matter: scaling each sample by its own positive factor, or rotating
    the feature space, leaves the loss as it is; same directions give zero; a shift does change it."""
    s, t = _randn(3, 8, 6), _randn(4, 8, 6)
    base = float(pkt_loss(s, t))
    scales = torch.rand(8, 1, generator=torch.Generator().manual_seed(5)) * 10 + 0.1
    q, _ = torch.linalg.qr(_randn(6, 6, 6))
    assert float(pkt_loss(s * scales, t)) == pytest.approx(base, rel=1e-4)
    assert float(pkt_loss(s @ q, t)) == pytest.approx(base, rel=1e-4)
    assert float(pkt_loss(s, t * scales)) == pytest.approx(base, rel=1e-4)
    assert float(pkt_loss(3.0 * t, t)) == pytest.approx(0.0, abs=1e-7)
    assert float(pkt_loss(s + 2.0, t)) != pytest.approx(base, rel=1e-2)


def test_pkt_method_feeds_the_embeddings(fashion, tiny_stream):
    batch = _batch(tiny_stream)
    method = get_method("pkt")(make_setup(fashion, tiny_stream))
    assert (method.hp["pkt_weight"], method.hp["ce_weight"]) == (30000.0, 1.0)
    terms = method.loss_terms(batch)
    out = method.student_outputs(batch.x)
    expected = 30000.0 * pkt_loss(out.embedding, method.teacher_outputs(batch, features=True).embedding)
    torch.testing.assert_close(terms["pkt"], expected)
    assert method.extra_parameters() == 0


# ---- CC -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_cc_loss_by_hand(seed):
    s, t = _randn(seed, 5, 4), _randn(seed + 10, 5, 4)
    assert float(correlation_congruence_loss(s, t)) == pytest.approx(_hand_cc(s, t), rel=1e-5)


def test_cc_invariances():
    """A gap-based loss: zero when the embeddings agree, blind to a shift both share, quadratic in a common scale;
    it pairs consecutive samples, so the batch order matters; one sample has no pair."""
    s, t = _randn(7, 6, 4), _randn(8, 6, 4)
    base = float(correlation_congruence_loss(s, t))
    shift = _randn(9, 1, 4)
    assert float(correlation_congruence_loss(t, t)) == 0.0
    assert float(correlation_congruence_loss(s + shift, t + shift)) == pytest.approx(base, rel=1e-5)
    assert float(correlation_congruence_loss(2.0 * s, 2.0 * t)) == pytest.approx(4.0 * base, rel=1e-5)
    order = torch.tensor([3, 0, 5, 1, 4, 2])
    assert float(correlation_congruence_loss(s[order], t[order])) != pytest.approx(base, rel=1e-3)
    assert float(correlation_congruence_loss(s[:1], t[:1])) == 0.0


def test_cc_method_trains_both_embeddings(fashion, tiny_stream):
    """RepDistiller puts both LinearEmbed heads in trainable_list: the teacher's head gets gradients too."""
    batch = _batch(tiny_stream)
    method = get_method("cc")(make_setup(fashion, tiny_stream))
    assert (method.hp["cc_weight"], method.hp["ce_weight"], method.hp["feat_dim"]) == (0.02, 1.0, 128)
    terms = method.loss_terms(batch)
    out = method.student_outputs(batch.x)
    teacher = method.teacher_outputs(batch, features=True)
    expected = 0.02 * correlation_congruence_loss(
        method.embed_s(out.embedding), method.embed_t(teacher.embedding)
    )
    torch.testing.assert_close(terms["cc"], expected)
    terms["cc"].backward()
    for head in (method.embed_s, method.embed_t):
        assert head.weight.grad is not None and float(head.weight.grad.abs().sum()) > 0
    trained = {id(p) for p in method.trainable_parameters()}
    assert all(id(p) in trained for p in (*method.embed_s.parameters(), *method.embed_t.parameters()))


# ---- all three through the engine ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, hparams",
    [("crd", {}), ("crd", {"kd_weight": 1.0}), ("crd", {"mode": "relax"}), ("pkt", {}), ("cc", {})],
)
def test_short_fit_is_finite(name, hparams, fashion, tiny_stream):
    method = get_method(name)(make_setup(fashion, tiny_stream), **hparams)
    stats = fit(method, tiny_stream, RECIPES["cpu"], epochs=2, progress=False)
    assert len(stats.epoch_losses) == 2
    for epoch in stats.epoch_losses:
        assert all(math.isfinite(v) for v in epoch.values()), epoch
    if "kd_weight" in hparams:
        assert stats.epoch_losses[0]["plus_kd"] > 0
    if name == "crd":
        z = method.record_extras()
        assert z["nce_z_student"] > 0 and z["nce_z_teacher"] > 0
