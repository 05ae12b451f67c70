"""Self-distillation: the student teaches itself, from its deepest layer (BYOT) or its past predictions (PS-KD)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.data.loader import Batch, BatchStream
from kdbench.losses import kd_loss
from kdbench.methods.base import UNIT, Method, MethodInfo, Setup, register_method
from kdbench.models.features import forward_with_features


class BranchHead(nn.Module):
    """BYOT's auxiliary classifier for one shallow section (reference code's `branchBottleNeck` + pool + fc):
    1x1 conv to a quarter of the deepest width, a k x k stride-k conv that brings the map to the deepest
    stage's size, 1x1 conv up to the deepest width (each with BN + ReLU), global pooling, a linear classifier.
    The pooled features are the hint matched to the deepest stage's."""

    def __init__(self, cin: int, cout: int, kernel: int, num_classes: int) -> None:
        super().__init__()
        middle = max(cout // 4, 1)
        self.bottleneck = nn.Sequential(
            nn.Conv2d(cin, middle, 1),
            nn.BatchNorm2d(middle),
            nn.ReLU(),
            nn.Conv2d(middle, middle, kernel, stride=kernel),
            nn.BatchNorm2d(middle),
            nn.ReLU(),
            nn.Conv2d(middle, cout, 1),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cout, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature = self.pool(self.bottleneck(x)).flatten(1)
        return self.fc(feature), feature


def byot_feature_loss(feature: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BYOT reference code's `feature_loss_function`: squared difference where either side is active, summed
    over the batch and the features (hence the tiny weight beta)."""
    return ((feature - target).pow(2) * ((feature > 0) | (target > 0)).float()).sum()


@register_method
class BYOT(Method):
    info = MethodInfo(
        name="byot",
        technique="Self-Distillation",
        scheme="self",
        knowledge="response and feature (deepest classifier to shallow classifiers)",
        reference="Zhang et al. 2019, Be Your Own Teacher: Improve the Performance of Convolutional Neural "
        "Networks via Self Distillation",
        teachers=0,
        summary="Bottleneck classifiers on the shallow stages learn from the labels, the deepest classifier's "
        "softened outputs and its features; only the student is deployed.",
    )
    defaults = {
        "temperature": 3.0,  # BYOT reference code (luanyunteng/pytorch-be-your-own-teacher) train.py --temperature 3
        "alpha": 0.1,  # reference code --alpha 0.1: KD weight; CE of every classifier weighted 1 - alpha
        "beta": 1e-6,  # reference code --beta 1e-6: weight of the (summed) feature hint
    }

    def __init__(self, setup: Setup, **hparams) -> None:
        super().__init__(setup, **hparams)
        out = self.probe(self.student)
        deepest, width = out.stages[-1], out.embedding.shape[1]
        # heads on the sections below the deepest: timm's first feature_info entry is the stem, not a section
        self.head_stages = list(range(1 if len(out.stages) > 2 else 0, len(out.stages) - 1))
        self.heads = nn.ModuleList(
            BranchHead(
                out.stages[i].shape[1],
                width,
                max(out.stages[i].shape[2] // deepest.shape[2], 1),
                setup.data.num_classes,
            )
            for i in self.head_stages
        )

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = forward_with_features(self.student, batch.x)
        t, alpha = self.hp["temperature"], self.hp["alpha"]
        soft, hint = out.logits.detach(), out.embedding.detach()
        ce = F.cross_entropy(out.logits, batch.y)
        kd = feature = out.logits.new_zeros(())
        for i, head in zip(self.head_stages, self.heads, strict=True):
            logits, feat = head(out.stages[i])
            ce = ce + F.cross_entropy(logits, batch.y)
            kd = kd + kd_loss(logits, soft, t)  # = the reference code's soft cross-entropy up to a constant
            feature = feature + byot_feature_loss(feat, hint)
        return {"ce": (1 - alpha) * ce, "kd": alpha * kd, "feature": self.hp["beta"] * feature}

    def record_extras(self) -> dict:
        return {"heads": len(self.heads)}


@register_method
class PSKD(Method):
    info = MethodInfo(
        name="pskd",
        technique="Self-Distillation",
        scheme="self",
        knowledge="response (own past predictions)",
        reference="Kim et al. 2021, Self-Knowledge Distillation with Progressive Refinement of Targets",
        teachers=0,
        summary="Cross-entropy to the one-hot label mixed with the model's own prediction for the same sample "
        "in the previous epoch, the mix growing linearly to alpha_T.",
    )
    defaults = {
        "alpha_T": 0.8,  # Kim et al. 2021, sec. 4.1 / PS-KD-Pytorch --alpha_T 0.8
    }
    ranges = {"alpha_T": UNIT}  # the largest weight of the own predictions in the target mix

    def __init__(self, setup: Setup, **hparams) -> None:
        super().__init__(setup, **hparams)
        # one row per training sample: its prediction from the last time it was seen, and whether it was
        self.register_buffer("sample_ids", torch.zeros(0, dtype=torch.long), persistent=False)
        self.register_buffer("past", torch.zeros(0, setup.data.num_classes), persistent=False)
        self.register_buffer("seen", torch.zeros(0, dtype=torch.bool), persistent=False)

    def on_training_data(self, stream: BatchStream) -> None:
        # batch.index holds indices into the full training split; rows are kept for the stream's samples only
        self.sample_ids = stream.index.sort().values.to(self.past.device)
        self.past = torch.zeros(len(self.sample_ids), self.setup.data.num_classes, device=self.past.device)
        self.seen = torch.zeros(len(self.sample_ids), dtype=torch.bool, device=self.past.device)

    def alpha(self) -> float:
        """PS-KD-Pytorch: alpha_t = alpha_T · (epoch + 1) / epochs, epochs counted from 0."""
        return self.hp["alpha_T"] * (self.epoch + 1) / self.setup.epochs

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        if not len(self.sample_ids):
            raise RuntimeError(
                "pskd keeps per-sample predictions: the engine must call on_training_data first"
            )
        rows = torch.searchsorted(self.sample_ids, batch.index)
        logits = self.student(batch.x)
        one_hot = F.one_hot(batch.y, logits.shape[1]).float()
        # a sample's first visit has no past prediction: its target is the label (PS-KD sets it to one-hot)
        past = torch.where(self.seen[rows, None], self.past[rows], one_hot)
        target = (1 - self.alpha()) * one_hot + self.alpha() * past
        with torch.no_grad():
            self.past[rows] = logits.softmax(1)
            self.seen[rows] = True
        # PS-KD-Pytorch Custom_CrossEntropy_PSKD: soft-target cross-entropy, summed over classes, batch mean
        return {"ce": -(target * F.log_softmax(logits, dim=1)).sum(1).mean()}
