"""Response-based KD: the student matches the teacher's output distribution."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbench.data.loader import Batch
from kdbench.losses import dkd_loss, kd_loss
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
        teacher = self.teacher_outputs(batch).logits
        return {
            "ce": self.hp["ce_weight"] * F.cross_entropy(logits, batch.y),
            "kd": self.hp["kd_weight"] * kd_loss(logits, teacher, self.hp["temperature"]),
        }


@register_method
class DKD(Method):
    info = MethodInfo(
        name="dkd",
        technique="Response-Based KD",
        scheme="offline",
        knowledge="response (target and non-target class KL, decoupled)",
        reference="Zhao et al. 2022, Decoupled Knowledge Distillation",
        summary="Cross-entropy plus alpha·TCKD + beta·NCKD, the DKD term warmed up linearly over the first epochs.",
    )
    defaults = {
        "ce_weight": 1.0,  # mdistiller configs/cifar100/dkd: DKD.CE_WEIGHT 1.0
        "alpha": 1.0,  # mdistiller DKD.ALPHA 1.0 (target-class KD)
        "beta": 8.0,  # mdistiller DKD.BETA 8.0 (non-target-class KD; the paper tunes it per teacher)
        "temperature": 4.0,  # mdistiller DKD.T 4.0
        "warmup": 20,  # mdistiller DKD.WARMUP 20: the DKD term ramps as min(epoch / 20, 1) of a 240-epoch run
        # kdbench option, off by default: when > 0 the warm-up lasts this fraction of the run instead of
        # `warmup` epochs (mdistiller's 20 of 240 is 1/12), so a short run still reaches the full DKD weight
        "warmup_fraction": 0.0,
    }

    def warmup_factor(self) -> float:
        """mdistiller's `min(epoch / warmup, 1)`, its epochs counted from 1 (ours from 0, hence + 1)."""
        fraction = self.hp["warmup_fraction"]
        warmup = fraction * self.setup.epochs if fraction > 0 else self.hp["warmup"]
        return min((self.epoch + 1) / warmup, 1.0) if warmup > 0 else 1.0

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        logits = self.student(batch.x)
        teacher = self.teacher_outputs(batch).logits
        dkd = dkd_loss(logits, teacher, batch.y, self.hp["alpha"], self.hp["beta"], self.hp["temperature"])
        return {
            "ce": self.hp["ce_weight"] * F.cross_entropy(logits, batch.y),
            "dkd": self.warmup_factor() * dkd,
        }
