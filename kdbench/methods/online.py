"""Online distillation: a cohort of students trained together, each teaching the others; no pre-trained teacher."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.data.loader import Batch
from kdbench.errors import KdbenchError
from kdbench.losses import kd_loss
from kdbench.methods.base import Method, MethodInfo, Setup, register_method
from kdbench.models.registry import CifarNet, init_weights


def fresh_copy(model: nn.Module) -> nn.Module:
    """The same architecture with every parameter and statistic drawn anew, as its constructor draws them:
    each layer's default initialisation, then kdbench's `init_weights` for kdbench networks (every CifarNet
    calls it last in its constructor). Keeps peers independent without knowing the architecture's name."""
    peer = copy.deepcopy(model)
    for module in peer.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    if isinstance(peer, CifarNet):
        init_weights(peer)
    return peer


@register_method
class DML(Method):
    info = MethodInfo(
        name="dml",
        technique="Online Distillation",
        scheme="online",
        knowledge="response (peers' predictions)",
        reference="Zhang et al. 2018, Deep Mutual Learning",
        teachers=0,
        summary="K peers of the student's architecture, each trained with cross-entropy plus the mean KL from "
        "every other peer's (detached) prediction; peer 0 is deployed.",
    )
    defaults = {
        "peers": 2,  # Zhang et al. 2018, sec. 4: the main results use a cohort of two networks
        "temperature": 1.0,  # Zhang et al. 2018, eq. 1-2: plain softmax, no temperature
        "kl_weight": 1.0,  # Zhang et al. 2018, eq. 3-4: L_k = L_C + D_KL, unweighted
    }

    def __init__(self, setup: Setup, **hparams) -> None:
        super().__init__(setup, **hparams)
        if self.hp["peers"] < 2:
            raise KdbenchError(f"dml needs at least 2 peers, got peers={self.hp['peers']}")
        # peer 0 is the configured student (what is deployed); the others are extra training-time parameters
        self.others = nn.ModuleList(fresh_copy(self.student) for _ in range(self.hp["peers"] - 1))

    @property
    def peers(self) -> list[nn.Module]:
        return [self.student, *self.others]

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        logits = [peer(batch.x) for peer in self.peers]
        k, t = len(logits), self.hp["temperature"]
        ce = sum(F.cross_entropy(z, batch.y) for z in logits)
        # eq. 4 (K > 2): peer k learns from the average of its KL to each other peer; the others are targets,
        # so one backward of the sum updates every peer on its own loss (a simultaneous version of the
        # paper's alternating per-peer updates within a mini-batch)
        kl = sum(
            sum(kd_loss(logits[i], logits[j].detach(), t) for j in range(k) if j != i) / (k - 1)
            for i in range(k)
        )
        return {"ce": ce, "kl": self.hp["kl_weight"] * kl}

    def record_extras(self) -> dict:
        return {"peers": len(self.peers)}
