"""Feature-based KD: the student's intermediate features are regressed onto the teacher's."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbench.data.loader import Batch
from kdbench.losses import hint_loss
from kdbench.methods.adapters import ConvRegressor
from kdbench.methods.base import Method, MethodInfo, Setup, register_method


@register_method
class FitNet(Method):
    info = MethodInfo(
        name="fitnet",
        technique="Feature-Based KD",
        scheme="offline",
        knowledge="feature (intermediate hint)",
        reference="Romero et al. 2015, FitNets: Hints for Thin Deep Nets",
        summary="Cross-entropy plus MSE between a regressed student stage and the teacher's hint stage.",
    )
    defaults = {
        "hint_weight": 100.0,  # RepDistiller README, FitNet row: -b 100
        "ce_weight": 1.0,  # RepDistiller: -r 1 -a 0 (no KD term added)
        "hint_stage": -2,  # RepDistiller hint_layer=2 of [stem, s1, s2, s3]: the middle stage, -2 from the end
    }

    def __init__(self, setup: Setup, **hparams) -> None:
        super().__init__(setup, **hparams)
        stage = self.hp["hint_stage"]
        s_shape = self.probe(self.student).stages[stage].shape
        t_shape = self.probe(self.teacher).stages[stage].shape
        self.regressor = ConvRegressor(s_shape, t_shape)

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = self.student_outputs(batch.x)
        teacher = self.teacher_outputs(batch.x, features=True)
        stage = self.hp["hint_stage"]
        hint = hint_loss(self.regressor(out.stages[stage]), teacher.stages[stage])
        return {
            "ce": self.hp["ce_weight"] * F.cross_entropy(out.logits, batch.y),
            "hint": self.hp["hint_weight"] * hint,
        }
