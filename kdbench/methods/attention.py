"""Attention-based distillation: the student matches the teacher's spatial attention maps."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbench.data.loader import Batch
from kdbench.losses import attention_transfer_loss
from kdbench.methods.base import Method, MethodInfo, register_method


@register_method
class AT(Method):
    info = MethodInfo(
        name="at",
        technique="Attention-Based Distillation",
        scheme="offline",
        knowledge="attention (spatial activation maps)",
        reference="Zagoruyko & Komodakis 2017, Paying More Attention to Attention",
        summary="Cross-entropy plus the distance between normalised activation maps after every stage.",
    )
    defaults = {
        "at_weight": 1000.0,  # RepDistiller README, AT row: -b 1000
        "ce_weight": 1.0,  # RepDistiller: -r 1 -a 0
        "p": 2,  # RepDistiller Attention(p=2)
    }

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = self.student_outputs(batch.x)
        teacher = self.teacher_outputs(batch, features=True)
        # RepDistiller uses every stage after the stem; pair the deepest stages when the counts differ
        n = min(len(out.stages), len(teacher.stages)) - 1
        pairs = zip(out.stages[-n:], teacher.stages[-n:], strict=True)
        at = sum(attention_transfer_loss(s, t, self.hp["p"]) for s, t in pairs)
        return {
            "ce": self.hp["ce_weight"] * F.cross_entropy(out.logits, batch.y),
            "at": self.hp["at_weight"] * at,
        }
