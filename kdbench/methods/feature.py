"""Feature-based KD: the student's intermediate features are regressed onto the teacher's."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbench.data.loader import Batch
from kdbench.errors import KdbenchError
from kdbench.losses import hint_loss
from kdbench.methods.adapters import ALIGNABLE, ConvRegressor, alignment
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
        self.regressor = ConvRegressor(*self._hint_shapes())

    def _hint_shapes(self) -> tuple[torch.Size, torch.Size]:
        """The student's and teacher's feature shapes at `hint_stage`; a stage the regressor cannot align is an
        error now, naming both shapes and the stages of this pair that would work, not a crash in training."""
        stage = self.hp["hint_stage"]
        s = [f.shape for f in self.probe(self.student).stages]
        t = [f.shape for f in self.probe(self.teacher).stages]
        n = min(len(s), len(t))
        if not -n <= stage < n:
            raise KdbenchError(
                f"fitnet hint_stage={stage} is out of range for this pair; valid choices: {-n} to {n - 1}"
            )
        if alignment(s[stage], t[stage]) is None:
            works = [i for i in range(-n, 0) if alignment(s[i], t[i])]
            fix = (
                f"hint_stage {', '.join(map(str, works))} would work"
                if works
                else "no hint_stage of this pair does"
            )
            raise KdbenchError(
                f"fitnet cannot align student features {tuple(s[stage][1:])} to teacher features "
                f"{tuple(t[stage][1:])} at hint_stage={stage}: the regressor needs a student map {ALIGNABLE}; {fix}"
            )
        return s[stage], t[stage]

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = self.student_outputs(batch.x)
        teacher = self.teacher_outputs(batch, features=True)
        stage = self.hp["hint_stage"]
        hint = hint_loss(self.regressor(out.stages[stage]), teacher.stages[stage])
        return {
            "ce": self.hp["ce_weight"] * F.cross_entropy(out.logits, batch.y),
            "hint": self.hp["hint_weight"] * hint,
        }
