"""The reference row: the student trained alone with cross-entropy. Every accuracy boost is measured against it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbench.data.loader import Batch
from kdbench.methods.base import Method, MethodInfo, register_method


@register_method
class Baseline(Method):
    info = MethodInfo(
        name="baseline",
        technique="Reference",
        scheme="offline",
        knowledge="none (labels only)",
        reference="—, the student trained alone with cross-entropy",
        teachers=0,
        summary="Student alone, cross-entropy on the labels.",
    )

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(self.student(batch.x), batch.y)}
