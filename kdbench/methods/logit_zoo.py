"""Newer response-based methods that reshape the logit loss: DIST, logit standardisation, curriculum temperature,
multi-level alignment and normalised KD. Each adds cross-entropy to its pure loss from kdbench.losses."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.data.loader import Batch
from kdbench.losses import dist_loss, kd_loss, lskd_loss, mlkd_losses, nkd_loss
from kdbench.methods.base import NON_NEGATIVE, POSITIVE, Method, MethodInfo, Setup, register_method


@register_method
class DIST(Method):
    info = MethodInfo(
        name="dist",
        technique="Response-Based KD",
        scheme="offline",
        knowledge="response (inter- and intra-class Pearson correlation of softened probabilities)",
        reference="Huang et al. 2022, Knowledge Distillation from A Stronger Teacher",
        summary="Cross-entropy plus T²-scaled (1 - Pearson correlation) across classes per sample and across "
        "samples per class.",
    )
    # mdistiller upstream has no DIST; these are the paper's CIFAR-100 settings, which the mdistiller-based
    # re-implementations (cfg.DIST.*) and the authors' hunto/DIST_KD `DIST(beta, gamma, tau)` take over
    defaults = {
        "ce_weight": 1.0,  # DIST paper and DIST_KD: the cross-entropy keeps weight 1
        "beta": 1.0,  # DIST paper: beta = 1 (inter-class relation); DIST_KD DIST(beta=1.)
        "gamma": 1.0,  # DIST paper: gamma = 1 (intra-class relation); DIST_KD DIST(gamma=1.)
        "temperature": 4.0,  # DIST paper, CIFAR-100: tau = 4 (1 on ImageNet)
    }
    ranges = {"gamma": NON_NEGATIVE}

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        logits = self.student(batch.x)
        teacher = self.teacher_outputs(batch).logits
        hp = self.hp
        return {
            "ce": hp["ce_weight"] * F.cross_entropy(logits, batch.y),
            "dist": dist_loss(logits, teacher, hp["beta"], hp["gamma"], hp["temperature"]),
        }


@register_method
class LSKD(Method):
    info = MethodInfo(
        name="lskd",
        technique="Response-Based KD",
        scheme="offline",
        knowledge="response (softened Z-score-standardised logits)",
        reference="Sun et al. 2024, Logit Standardization in Knowledge Distillation",
        summary="Cross-entropy plus T²-scaled KL between the softened Z-scores of the student's and teacher's logits.",
    )
    defaults = {
        "ce_weight": 0.1,  # logit-standardization-KD mdistiller/engine/cfg.py: KD.LOSS.CE_WEIGHT 0.1
        "lskd_weight": 9.0,  # its README, KD+Ours on CIFAR-100: --kd-weight 9 (cfg KD.LOSS.KD_WEIGHT 9)
        "temperature": 2.0,  # its README: --base-temp 2 (cfg KD.TEMPERATURE 2; 3 for a few pairs)
    }

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        logits = self.student(batch.x)
        teacher = self.teacher_outputs(batch).logits
        return {
            "ce": self.hp["ce_weight"] * F.cross_entropy(logits, batch.y),
            "lskd": self.hp["lskd_weight"] * lskd_loss(logits, teacher, self.hp["temperature"]),
        }


class _GradientReversal(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by -strength (Ganin & Lempitsky 2015), so what follows
    it is trained to increase the loss the rest of the model decreases."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, strength: float) -> torch.Tensor:
        ctx.strength = strength
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.strength * grad, None


class GlobalTemperature(nn.Module):
    """CTKD's global temperature: t_start + t_end · sigmoid(w), one learnable w behind a gradient reversal layer."""

    def __init__(self, t_start: float, t_end: float, init: float) -> None:
        super().__init__()
        self.t_start, self.t_end = t_start, t_end
        self.raw = nn.Parameter(torch.full((1,), init))

    def forward(self, strength: float) -> torch.Tensor:
        return self.t_start + self.t_end * torch.sigmoid(_GradientReversal.apply(self.raw, strength)).squeeze(
            0
        )


@register_method
class CTKD(Method):
    """The student minimises Hinton's KD while the temperature, through the reversal layer, maximises it: the task
    gets harder as the student learns, at a reversal strength that rises from 0 to 1 on a cosine curriculum."""

    info = MethodInfo(
        name="ctkd",
        technique="Response-Based KD",
        scheme="offline",
        knowledge="response (softened logits at an adversarially learned temperature)",
        reference="Li et al. 2023, Curriculum Temperature for Knowledge Distillation",
        summary="Cross-entropy plus T²-scaled KL at a global temperature trained through a gradient reversal "
        "layer whose strength follows a cosine curriculum from 0 to 1.",
    )
    defaults = {
        "ce_weight": 0.1,  # CTKD scripts/run_cifar_distill.sh: -r 0.1
        "kd_weight": 0.9,  # CTKD scripts/run_cifar_distill.sh: -a 0.9
        "t_start": 1.0,  # CTKD --t_start 1: the lowest temperature
        "t_end": 20.0,  # CTKD --t_end 20: the sigmoid's span, so the temperature lies in (1, 21)
        "t_init": 1.0,  # CTKD models/temp_global.py: Global_T's parameter starts at torch.ones(1)
        "curriculum_epochs": 10,  # CTKD --decay_loops 10: the reversal strength reaches 1 after 10 epochs
        # kdbench option, off by default: when > 0 the curriculum lasts this fraction of the run instead of
        # `curriculum_epochs` (CTKD's 10 of 240 is 1/24), so a short run still reaches full strength
        "curriculum_fraction": 0.0,
    }
    ranges = {"t_start": POSITIVE, "t_end": NON_NEGATIVE, "curriculum_epochs": NON_NEGATIVE}

    def __init__(self, setup: Setup, **hparams: Any) -> None:
        super().__init__(setup, **hparams)
        hp = self.hp
        self.temperature = GlobalTemperature(hp["t_start"], hp["t_end"], hp["t_init"]).to(setup.device)

    def reversal_strength(self) -> float:
        """CTKD's CosineDecay from 0 to -1 (applied as the reversal's multiplier), its epochs counted from 1
        (ours from 0, hence + 1): (1 - cos(pi · min(epoch, loops) / loops)) / 2."""
        fraction = self.hp["curriculum_fraction"]
        loops = fraction * self.setup.epochs if fraction > 0 else self.hp["curriculum_epochs"]
        if loops <= 0:
            return 1.0
        return (1 - math.cos(math.pi * min(self.epoch + 1, loops) / loops)) / 2

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        logits = self.student(batch.x)
        teacher = self.teacher_outputs(batch).logits
        t = self.temperature(self.reversal_strength())
        return {
            "ce": self.hp["ce_weight"] * F.cross_entropy(logits, batch.y),
            "kd": self.hp["kd_weight"] * kd_loss(logits, teacher, t),
        }

    def record_extras(self) -> dict[str, Any]:
        with torch.no_grad():
            return {"final_temperature": float(self.temperature(0.0))}


# MLKD KD_ours.py: besides cfg.KD.TEMPERATURE, every alignment is also taken at these fixed temperatures
MLKD_EXTRA_TEMPERATURES = (3.0, 5.0, 2.0, 6.0)


@register_method
class MLKD(Method):
    """MLKD's alignments on the batch the engine hands over. The official code also trains on a second, strongly
    augmented view and scales the weak view's terms by a teacher-confidence mask; kdbench has no dual-view
    augmentation, so both are left out. (Its masks multiply losses that are already batch means, so on one view
    they reduce to a factor of about one half.)"""

    info = MethodInfo(
        name="mlkd",
        technique="Response-Based KD",
        scheme="offline",
        knowledge="response (instance-, batch- and class-level alignment of softened predictions)",
        reference="Jin et al. 2023, Multi-level Logit Distillation",
        summary="Cross-entropy plus KL, sample-similarity and class-correlation alignment of the softened "
        "predictions, each summed over five temperatures.",
    )
    defaults = {
        "ce_weight": 0.1,  # Multi-Level-Logit-Distillation mdistiller/engine/cfg.py: KD.LOSS.CE_WEIGHT 0.1
        "mlkd_weight": 0.9,  # its cfg KD.LOSS.KD_WEIGHT 0.9, on every alignment term
        "temperature": 4.0,  # its cfg KD.TEMPERATURE 4, with MLKD_EXTRA_TEMPERATURES
    }

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        logits = self.student(batch.x)
        teacher = self.teacher_outputs(batch).logits
        temperatures = (self.hp["temperature"], *MLKD_EXTRA_TEMPERATURES)
        instance, batch_level, class_level = mlkd_losses(logits, teacher, temperatures)
        w = self.hp["mlkd_weight"]
        return {
            "ce": self.hp["ce_weight"] * F.cross_entropy(logits, batch.y),
            "kd": w * instance,
            "bc": w * batch_level,
            "cc": w * class_level,
        }


@register_method
class NKD(Method):
    info = MethodInfo(
        name="nkd",
        technique="Response-Based KD",
        scheme="offline",
        knowledge="response (teacher-weighted target term and normalised non-target distribution)",
        reference="Yang et al. 2023, From Knowledge Distillation to Self-Knowledge Distillation: A Unified "
        "Approach with Normalized Loss and Customized Soft Labels",
        summary="Cross-entropy plus the teacher-weighted target log-likelihood and gamma·T²-scaled cross-entropy "
        "between the renormalised non-target distributions.",
    )
    defaults = {
        "ce_weight": 1.0,  # cls_KD ClassificationDistiller keeps the student head's cross-entropy at weight 1
        "temperature": 3.0,  # cls_KD configs/distillers/cifar100/res34_distill_res18_cifar.py: temp=3.0
        "gamma": 3.5,  # same CIFAR-100 config: gamma=3.5 (NKDLoss's ImageNet default: temp 1, gamma 1.5)
    }
    ranges = {"gamma": NON_NEGATIVE}

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        logits = self.student(batch.x)
        teacher = self.teacher_outputs(batch).logits
        return {
            "ce": self.hp["ce_weight"] * F.cross_entropy(logits, batch.y),
            "nkd": nkd_loss(logits, teacher, batch.y, self.hp["temperature"], self.hp["gamma"]),
        }
