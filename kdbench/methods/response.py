"""Response-based KD: the student matches the teacher's output distribution."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbench.data.loader import Batch
from kdbench.losses import kd_loss
from kdbench.methods.base import Method, MethodInfo, register_method


@register_method
class KD(Method):
    info = MethodInfo(
        name="kd",
        technique="Response-Based KD",
        also_represents=("Offline Distillation",),
        scheme="offline",
        knowledge="response (softened logits)",
        reference="Hinton et al. 2015, Distilling the Knowledge in a Neural Network",
        summary="Cross-entropy plus T²-scaled KL to the frozen teacher's softened outputs.",
    )
    defaults = {
        "temperature": 4.0,  # RepDistiller train_student.py --kd_T 4
        "ce_weight": 0.1,  # RepDistiller README, KD row: -r 0.1
        "kd_weight": 0.9,  # RepDistiller README, KD row: -a 0.9
    }

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        logits = self.student(batch.x)
        teacher = self.teacher_outputs(batch.x).logits
        return {
            "ce": self.hp["ce_weight"] * F.cross_entropy(logits, batch.y),
            "kd": self.hp["kd_weight"] * kd_loss(logits, teacher, self.hp["temperature"]),
        }
