"""Relation-based KD: the student matches how the teacher relates the samples of a batch to one another."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbench.data.loader import Batch
from kdbench.losses import rkd_loss, similarity_preserving_loss
from kdbench.methods.base import Method, MethodInfo, register_method


@register_method
class RKD(Method):
    info = MethodInfo(
        name="rkd",
        technique="Relation-Based KD",
        scheme="offline",
        knowledge="relation (pairwise distances and triplet angles of embeddings)",
        reference="Park et al. 2019, Relational Knowledge Distillation",
        summary="Cross-entropy plus Huber losses between the teacher's and student's distance and angle "
        "structures of the penultimate embeddings in a batch.",
    )
    defaults = {
        "rkd_weight": 1.0,  # RepDistiller README, RKD row: -b 1
        "ce_weight": 1.0,  # RepDistiller: -r 1 -a 0 (no KD term added)
        "distance_weight": 25.0,  # Park et al. 2019 and RepDistiller RKDLoss(w_d=25)
        "angle_weight": 50.0,  # Park et al. 2019 and RepDistiller RKDLoss(w_a=50)
    }

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = self.student_outputs(batch.x)
        teacher = self.teacher_outputs(batch, features=True)
        # RepDistiller feeds RKD feat[-1]: the pooled features that enter the classifier
        rkd = rkd_loss(out.embedding, teacher.embedding, self.hp["distance_weight"], self.hp["angle_weight"])
        return {
            "ce": self.hp["ce_weight"] * F.cross_entropy(out.logits, batch.y),
            "rkd": self.hp["rkd_weight"] * rkd,
        }


@register_method
class SP(Method):
    info = MethodInfo(
        name="sp",
        technique="Relation-Based KD",
        scheme="offline",
        knowledge="relation (batch similarity matrix of the last stage's features)",
        reference="Tung & Mori 2019, Similarity-Preserving Knowledge Distillation",
        summary="Cross-entropy plus the distance between the row-normalised batch Gram matrices of the last "
        "stage's features.",
    )
    defaults = {
        "sp_weight": 3000.0,  # RepDistiller README, SP row: -b 3000
        "ce_weight": 1.0,  # RepDistiller: -r 1 -a 0 (no KD term added)
    }

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = self.student_outputs(batch.x)
        teacher = self.teacher_outputs(batch, features=True)
        # RepDistiller feeds SP feat[-2]: the last stage's output, before pooling
        sp = similarity_preserving_loss(out.stages[-1], teacher.stages[-1])
        return {
            "ce": self.hp["ce_weight"] * F.cross_entropy(out.logits, batch.y),
            "sp": self.hp["sp_weight"] * sp,
        }
