"""More relation-based methods of RepDistiller's zoo: PKT and CC, each matching the teacher's relations among the
samples of a batch through the penultimate (pooled) features, RepDistiller's feat[-1]."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.data.loader import Batch
from kdbench.losses import pkt_loss
from kdbench.methods.base import Method, MethodInfo, Range, Setup, register_method


def correlation_congruence_loss(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """Correlation congruence (Peng et al. 2019) in the linear, kernel-free form the authors gave RepDistiller
    (`distiller_zoo/CC.py`, `Correlation`): with d_i = |s_i - t_i| the element-wise gap between the embedded
    student and teacher features of sample i, the loss couples each sample with the next one in the batch,

        loss = 1/(B-1) · Σ_{i=1}^{B-1} Σ_c d_i[c] · d_{i+1}[c].

    A batch of one sample has no pair and no loss (the reference's mean over no pairs would be NaN)."""
    delta = (student_emb.flatten(1) - teacher_emb.flatten(1)).abs()
    if len(delta) < 2:
        return delta.sum() * 0.0
    return (delta[:-1] * delta[1:]).sum(dim=1).mean()


@register_method
class PKT(Method):
    info = MethodInfo(
        name="pkt",
        technique="Relation-Based KD",
        scheme="offline",
        knowledge="relation (conditional probabilities of cosine affinities between the batch's embeddings)",
        reference="Passalis & Tefas 2018, Learning Deep Representations with Probabilistic Knowledge Transfer",
        summary="Cross-entropy plus the KL divergence between the teacher's and student's distributions of "
        "cosine affinities among the penultimate embeddings of a batch.",
    )
    defaults = {
        "pkt_weight": 30000.0,  # RepDistiller README / scripts/run_cifar_distill.sh, PKT: -a 0 -b 30000;
        # mdistiller CFG.PKT.LOSS.FEAT_WEIGHT 30000.0
        "ce_weight": 1.0,  # RepDistiller -r default 1 (no KD term: -a 0); mdistiller CFG.PKT.LOSS.CE_WEIGHT 1.0
    }

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = self.student_outputs(batch.x)
        teacher = self.teacher_outputs(batch, features=True)
        # RepDistiller feeds PKT feat[-1] (mdistiller: "pooled_feat"): the features that enter the classifier
        return {
            "ce": self.hp["ce_weight"] * F.cross_entropy(out.logits, batch.y),
            "pkt": self.hp["pkt_weight"] * pkt_loss(out.embedding, teacher.embedding),
        }


@register_method
class CC(Method):
    info = MethodInfo(
        name="cc",
        technique="Relation-Based KD",
        scheme="offline",
        knowledge="relation (correlation between consecutive samples' embedding gaps)",
        reference="Peng et al. 2019, Correlation Congruence for Knowledge Distillation",
        summary="Cross-entropy plus RepDistiller's linear correlation-congruence loss between linearly embedded "
        "student and teacher penultimate features.",
    )
    defaults = {
        "cc_weight": 0.02,  # RepDistiller scripts/run_cifar_distill.sh, CC: -a 0 -b 0.02 (mdistiller has no CC)
        "ce_weight": 1.0,  # RepDistiller -r default 1 (no KD term: -a 0)
        "feat_dim": 128,  # RepDistiller --feat_dim 128, the width of both LinearEmbed heads
    }
    ranges = {"feat_dim": Range(1.0)}

    def __init__(self, setup: Setup, **hparams: Any) -> None:
        super().__init__(setup, **hparams)
        # RepDistiller train_student.py: LinearEmbed(feat_s[-1] width, feat_dim) and LinearEmbed(feat_t[-1] width,
        # feat_dim), both in trainable_list, so the teacher's head is trained with the student
        dim = self.hp["feat_dim"]
        self.embed_s = nn.Linear(self.probe(self.student).embedding.shape[1], dim)
        self.embed_t = nn.Linear(self.probe(self.teacher).embedding.shape[1], dim)

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = self.student_outputs(batch.x)
        teacher = self.teacher_outputs(batch, features=True)
        cc = correlation_congruence_loss(self.embed_s(out.embedding), self.embed_t(teacher.embedding))
        return {
            "ce": self.hp["ce_weight"] * F.cross_entropy(out.logits, batch.y),
            "cc": self.hp["cc_weight"] * cc,
        }
