"""Multi-teacher distillation: the student learns from the combined soft targets of several frozen teachers."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbench.data.loader import Batch
from kdbench.errors import check_choice
from kdbench.methods.base import Method, MethodInfo, Setup, register_method

WEIGHTINGS = ("mean", "confidence")


def confidence_weights(teacher_logits: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """CA-MKD's per-sample teacher weights, shape (teachers, batch): (1 - softmax over teachers of each
    teacher's cross-entropy on the label) / (K - 1). They sum to 1 over the teachers and favour the teacher with
    the lower cross-entropy; for two teachers they equal the softmax over the teachers of minus the cross-entropy."""
    ce = torch.stack([F.cross_entropy(t, target, reduction="none") for t in teacher_logits])
    k = len(teacher_logits)
    if k == 1:
        return torch.ones_like(ce)
    return (1.0 - F.softmax(ce, dim=0)) / (k - 1)


def soft_target(
    teacher_logits: list[torch.Tensor], target: torch.Tensor, temperature: float, weighting: str = "mean"
) -> torch.Tensor:
    """The teachers' temperature-softened softmax outputs combined per sample: their mean (survey eq. 3.4.2.1,
    You et al. 2017), or weighted by `confidence_weights`."""
    probs = torch.stack([F.softmax(t / temperature, dim=1) for t in teacher_logits])  # (K, B, C)
    if weighting == "mean":
        return probs.mean(0)
    weights = confidence_weights(teacher_logits, target)
    return (weights.unsqueeze(2) * probs).sum(0)


@register_method
class MultiTeacher(Method):
    """Hinton's KD against the teachers' combined soft targets.

    With `weighting="confidence"`, CA-MKD (Zhang et al. 2022) weights each teacher's KL term per sample; here the
    same weights mix the teachers' distributions into one target. The student's gradient is identical, because
    Σ_k w_k KL(p_k ‖ q) and KL(Σ_k w_k p_k ‖ q) differ only by terms free of the student (the weights are
    computed from the frozen teachers). CA-MKD's intermediate-feature term is not included.
    """

    info = MethodInfo(
        name="multiteacher",
        technique="Multi-Teacher Distillation",
        scheme="offline",
        knowledge="response (averaged soft targets of several teachers)",
        reference="You et al. 2017, Learning from Multiple Teacher Networks",
        teachers=2,
        summary="Cross-entropy plus T²-scaled KL to the mean (or confidence-weighted mean) of the teachers' "
        "softened outputs.",
    )
    defaults = {
        "temperature": 4.0,  # as kd: RepDistiller --kd_T 4, so kd and multiteacher differ only in the target
        "ce_weight": 0.1,  # as kd: RepDistiller -r 0.1
        "kd_weight": 0.9,  # as kd: RepDistiller -a 0.9
        "weighting": "mean",  # "mean": You et al. 2017 / survey eq. 3.4.2.1; "confidence": CA-MKD (Zhang et al. 2022)
    }

    def __init__(self, setup: Setup, **hparams) -> None:
        super().__init__(setup, **hparams)
        check_choice("weighting", self.hp["weighting"], WEIGHTINGS)

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        logits = self.student(batch.x)
        teachers = [self.teacher_outputs(batch, i).logits for i in range(len(self.teachers))]
        t = self.hp["temperature"]
        target = soft_target(teachers, batch.y, t, self.hp["weighting"])
        kd = F.kl_div(F.log_softmax(logits / t, dim=1), target, reduction="batchmean") * t**2
        return {
            "ce": self.hp["ce_weight"] * F.cross_entropy(logits, batch.y),
            "kd": self.hp["kd_weight"] * kd,
        }
