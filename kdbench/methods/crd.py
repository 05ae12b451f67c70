"""Contrastive Representation Distillation (Tian et al. 2020), after the authors' RepDistiller (`crd/`,
`dataset/cifar100.py`, `train_student.py`) and mdistiller's port of it (`mdistiller/distillers/CRD.py`).

Student and teacher penultimate features are embedded by trainable linear heads into a shared `feat_dim`-space
and L2-normalised. A memory bank keeps, for every training sample, a momentum average of its student and of its
teacher embedding. Each sample's student embedding is contrasted with the teacher bank's row of the same sample
(the positive) and with `nce_k` rows of samples of other classes (the negatives), and the teacher embedding
likewise with the student bank; each side is scored with CRD's NCE loss (Eq. 18 of the paper), whose normalising
constants Z are fixed on the first batch. After scoring, the batch's rows of both banks move towards the new
embeddings. "crd+kd" (RepDistiller README: `-a 1 -b 0.8`) is `kd_weight=1`, the base class's "+KD" term.

The loss pieces are pure functions of tensors below; `ContrastHead` holds the embeddings and the bank.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.data.loader import Batch, BatchStream
from kdbench.errors import KdbenchError, check_choice
from kdbench.methods.base import POSITIVE, UNIT, Method, MethodInfo, Range, Setup, register_method

NCE_EPS = 1e-7  # RepDistiller crd/criterion.py: eps = 1e-7 in ContrastLoss
MODES = (
    "exact",
    "relax",
)  # RepDistiller train_student.py --mode: the positive is the sample / a same-class one


# ---- pure loss pieces ---------------------------------------------------------------------------------------------
def contrast_scores(
    anchor: torch.Tensor, memory: torch.Tensor, rows: torch.Tensor, temperature: float
) -> torch.Tensor:
    """CRD's unnormalised scores exp(<m_j, v_b> / T) of each anchor v_b (B, D) against the memory rows m_j named by
    `rows` (B, K+1; column 0 the positive), as RepDistiller's `ContrastMemory.forward` before its division by Z.

    The memory is a constant (no gradient). The dot products are taken either by scoring the anchors against the
    whole memory and picking the sampled columns, or by gathering the sampled rows and a batched product, whichever
    materialises fewer values (B·N against B·(K+1)·D); both give the same numbers up to float rounding."""
    memory = memory.detach()
    if memory.shape[0] <= rows.shape[1] * anchor.shape[1]:
        dots = (anchor @ memory.t()).gather(1, rows)
    else:
        dots = torch.bmm(memory[rows], anchor.unsqueeze(2)).squeeze(2)
    return torch.exp(dots / temperature)


def nce_normaliser(scores: torch.Tensor, n_data: int) -> float:
    """CRD's normalising constant Z = n_data · mean(scores), estimated once, on the first batch (RepDistiller sets
    `params[2:4]` when they are still -1), so scores / Z approximate probabilities over the n_data samples."""
    return float(scores.detach().mean()) * n_data


def nce_contrast_loss(probs: torch.Tensor, n_data: int, eps: float = NCE_EPS) -> torch.Tensor:
    """CRD's NCE loss (Tian et al. 2020, Eq. 18; RepDistiller `ContrastLoss`) on probabilities (B, K+1), column 0
    the positive: with the noise distribution uniform over the data, m·Pn = K / n_data, and

        loss = -(1/B) · Σ_b [ log(P_b0 / (P_b0 + m·Pn + eps)) + Σ_{k≥1} log(m·Pn / (P_bk + m·Pn + eps)) ],

    summed over the K negatives and averaged over the batch."""
    noise = (probs.shape[1] - 1) / n_data
    positive, negative = probs[:, 0], probs[:, 1:]
    log_d1 = torch.log(positive / (positive + noise + eps))
    log_d0 = torch.log(noise / (negative + noise + eps))
    return -(log_d1.sum() + log_d0.sum()) / probs.shape[0]


def momentum_update(memory_rows: torch.Tensor, embeddings: torch.Tensor, momentum: float) -> torch.Tensor:
    """The bank's new rows (RepDistiller `ContrastMemory`, "update memory"): m · old + (1 - m) · new, rescaled to
    unit L2 norm."""
    mixed = momentum * memory_rows + (1 - momentum) * embeddings
    return mixed / mixed.pow(2).sum(dim=1, keepdim=True).sqrt()


# ---- the trainable heads and the bank -------------------------------------------------------------------------------
class ContrastHead(nn.Module):
    """CRDLoss of RepDistiller: the student and teacher embeddings (Linear + L2 norm, `Embed`) and the two memory
    banks, `memory_s` of student and `memory_t` of teacher embeddings, one row per training sample. The banks start
    uniform in ±1/sqrt(feat_dim / 3), as the reference's, so their rows have about unit norm before the first
    update. Computed in fp32 whatever the run's precision: exp(1 / 0.07) needs its range."""

    def __init__(
        self,
        s_dim: int,
        t_dim: int,
        feat_dim: int,
        n_data: int,
        temperature: float,
        momentum: float,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.embed_s = nn.Linear(s_dim, feat_dim)
        self.embed_t = nn.Linear(t_dim, feat_dim)
        self.n_data, self.temperature, self.momentum = n_data, temperature, momentum
        gen = torch.Generator().manual_seed(seed)
        stdv = 1.0 / math.sqrt(feat_dim / 3)
        for name in ("memory_s", "memory_t"):
            bank = torch.rand(n_data, feat_dim, generator=gen) * (2 * stdv) - stdv
            self.register_buffer(name, bank, persistent=False)
        self.z_s: float | None = (
            None  # Z of the student-anchored scores (RepDistiller Z_v1), set on the first batch
        )
        self.z_t: float | None = None  # Z of the teacher-anchored scores (Z_v2)

    def embed(self, f_s: torch.Tensor, f_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v_s = F.normalize(self.embed_s(f_s.flatten(1).float()), dim=1)
        v_t = F.normalize(self.embed_t(f_t.flatten(1).float()), dim=1)
        return v_s, v_t

    def forward(
        self, f_s: torch.Tensor, f_t: torch.Tensor, rows: torch.Tensor, contrast: torch.Tensor
    ) -> torch.Tensor:
        """The CRD loss (student side + teacher side) of a batch whose samples are bank rows `rows` (B,), contrasted
        with bank rows `contrast` (B, K+1; column 0 the positive); then the batch's bank rows are updated."""
        with torch.autocast(f_s.device.type, enabled=False):
            v_s, v_t = self.embed(f_s, f_t)
            # RepDistiller: out_v1 scores the student embedding against the teacher bank, out_v2 the reverse
            out_s = contrast_scores(v_s, self.memory_t, contrast, self.temperature)
            out_t = contrast_scores(v_t, self.memory_s, contrast, self.temperature)
            if self.z_s is None or self.z_t is None:
                self.z_s, self.z_t = nce_normaliser(out_s, self.n_data), nce_normaliser(out_t, self.n_data)
            loss = nce_contrast_loss(out_s / self.z_s, self.n_data) + nce_contrast_loss(
                out_t / self.z_t, self.n_data
            )
            with (
                torch.no_grad()
            ):  # out of place: the scores' backward still needs the banks they were taken on
                self.memory_s = self.memory_s.index_copy(
                    0, rows, momentum_update(self.memory_s[rows], v_s, self.momentum)
                )
                self.memory_t = self.memory_t.index_copy(
                    0, rows, momentum_update(self.memory_t[rows], v_t, self.momentum)
                )
        return loss

    def bank_values(self) -> int:
        return self.memory_s.numel() + self.memory_t.numel()


# ---- which rows each sample is contrasted with --------------------------------------------------------------------
class ClassLayout:
    """The training samples grouped by label, for RepDistiller's `CIFAR100InstanceSample` draws: `nce_k` negatives
    from the samples of the other classes, without replacement unless there are fewer than `nce_k` of them (then
    with, as the reference's `replace = k > len(cls_negative[target])`), and a positive that is the sample itself
    ("exact") or a random sample of its class ("relax")."""

    def __init__(self, labels: torch.Tensor) -> None:
        self.labels = labels  # of each bank row
        self.by_label = torch.argsort(labels, stable=True)  # bank rows, grouped by class
        counts = torch.bincount(labels, minlength=int(labels.max()) + 1)
        self.count = counts
        self.start = torch.cumsum(counts, 0) - counts
        present = counts[counts > 0]
        # the smallest and largest pools of negatives, known here so that a draw needs no device sync to choose
        self.min_pool, self.max_pool = len(labels) - int(present.max()), len(labels) - int(present.min())
        if self.min_pool == 0:
            raise KdbenchError(
                "crd needs negatives from other classes: its training samples are all of one class"
            )

    def draw(self, rows: torch.Tensor, k: int, mode: str, gen: torch.Generator) -> torch.Tensor:
        """(B, k+1) bank rows for the batch's rows: column 0 the positive, then k negatives."""
        y = self.labels[rows]
        n, dev = len(self.labels), rows.device
        start, count = self.start[y], self.count[y]
        pool = n - count  # negatives available to each sample
        replace = k > pool
        negatives = torch.empty(len(rows), k, dtype=torch.long, device=dev)
        if k > self.min_pool:  # some sample may draw with replacement: uniform over the other classes' rows
            u = (torch.rand(len(rows), k, generator=gen, device=dev) * pool[:, None]).long()
            u = torch.minimum(u, pool[:, None] - 1)
            picked = self.by_label[u + (u >= start[:, None]).long() * count[:, None]]
            negatives = torch.where(replace[:, None], picked, negatives)
        if (
            k <= self.max_pool
        ):  # some sample may draw k distinct ones: the k largest of uniform keys, own class out
            keys = torch.rand(len(rows), n, generator=gen, device=dev)
            keys = keys.masked_fill(self.labels[None, :] == y[:, None], -1.0)
            negatives = torch.where(replace[:, None], negatives, keys.topk(k, dim=1).indices)
        if mode == "exact":
            positive = rows
        else:
            offset = (torch.rand(len(rows), generator=gen, device=dev) * count).long()
            positive = self.by_label[start + torch.minimum(offset, count - 1)]
        return torch.cat([positive[:, None], negatives], dim=1)


@register_method
class CRD(Method):
    info = MethodInfo(
        name="crd",
        technique="Relation-Based KD",
        scheme="offline",
        knowledge="relation (contrastive: each sample's embedding against the other samples' in a memory bank)",
        reference="Tian et al. 2020, Contrastive Representation Distillation",
        summary="Cross-entropy plus an NCE contrastive loss between embedded student and teacher penultimate "
        "features, with 16384 other-class negatives per sample drawn from momentum memory banks.",
    )
    defaults = {
        "ce_weight": 1.0,  # RepDistiller train_student.py -r (--gamma) default 1; mdistiller CFG.CRD.LOSS.CE_WEIGHT 1.0
        "crd_weight": 0.8,  # RepDistiller README / scripts/run_cifar_distill.sh, CRD: -a 0 -b 0.8;
        # mdistiller CFG.CRD.LOSS.FEAT_WEIGHT 0.8 ("crd+kd": RepDistiller -a 1 -b 0.8, i.e. kd_weight=1 here)
        "feat_dim": 128,  # RepDistiller --feat_dim 128; mdistiller CFG.CRD.FEAT.DIM 128
        "nce_k": 16384,  # RepDistiller --nce_k 16384; mdistiller CFG.CRD.NCE.K 16384
        "nce_t": 0.07,  # RepDistiller --nce_t 0.07; mdistiller CFG.CRD.NCE.TEMPERATURE 0.07
        "nce_m": 0.5,  # RepDistiller --nce_m 0.5; mdistiller CFG.CRD.NCE.MOMENTUM 0.5
        "mode": "exact",  # RepDistiller --mode exact; mdistiller CFG.CRD.MODE "exact"
    }
    ranges = {"nce_t": POSITIVE, "nce_m": UNIT, "nce_k": Range(1.0), "feat_dim": Range(1.0)}

    def __init__(self, setup: Setup, **hparams: Any) -> None:
        super().__init__(setup, **hparams)
        hp = self.hp
        check_choice("crd mode", hp["mode"], MODES)
        # RepDistiller: s_dim / t_dim are the widths of feat[-1], the pooled features that enter the classifier
        s_dim = self.probe(self.student).embedding.shape[1]
        t_dim = self.probe(self.teacher).embedding.shape[1]
        self.head = ContrastHead(
            s_dim, t_dim, hp["feat_dim"], setup.num_train, hp["nce_t"], hp["nce_m"], seed=setup.seed
        ).to(setup.device)
        self.register_buffer("sample_ids", torch.zeros(0, dtype=torch.long), persistent=False)
        self.layout: ClassLayout | None = None
        self.draws = 0  # seeds each step's draw of contrast rows (plain ints: a deep copy replays them)

    def on_training_data(self, stream: BatchStream) -> None:
        if stream.num_samples != self.head.n_data:
            raise KdbenchError(
                f"crd's memory bank has {self.head.n_data} rows (Setup.num_train) but the training "
                f"stream has {stream.num_samples} samples"
            )
        # batch.index holds indices into the full training split; bank row r is the r-th smallest of them
        ids, order = stream.index.sort()
        device = self.head.memory_s.device
        self.sample_ids = ids.to(device)
        self.layout = ClassLayout(stream.labels[order].to(device))

    def contrast_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """The step's (B, nce_k + 1) contrast rows, from a generator seeded by the cell's seed and the step."""
        assert self.layout is not None
        gen = torch.Generator(device=rows.device)
        gen.manual_seed(1_000_003 * self.setup.seed + self.draws)
        self.draws += 1
        return self.layout.draw(rows, self.hp["nce_k"], self.hp["mode"], gen)

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self.layout is None:
            raise RuntimeError("crd keeps a per-sample memory: the engine must call on_training_data first")
        rows = torch.searchsorted(self.sample_ids, batch.index)
        out = self.student_outputs(batch.x)
        teacher = self.teacher_outputs(batch, features=True)
        crd = self.head(out.embedding, teacher.embedding, rows, self.contrast_rows(rows))
        return {
            "ce": self.hp["ce_weight"] * F.cross_entropy(out.logits, batch.y),
            "crd": self.hp["crd_weight"] * crd,
        }

    def record_extras(self) -> dict[str, Any]:
        """The memory bank is training-time state but not trained parameters (`extra_params` counts the two
        embeddings only; mdistiller's `get_extra_parameters` adds the bank's buffers): its size is reported here."""
        bank = self.head.bank_values()
        return {
            "memory_bank_values": bank,
            "memory_bank_bytes": bank * self.head.memory_s.element_size(),
            "nce_z_student": self.head.z_s,
            "nce_z_teacher": self.head.z_t,
        }
