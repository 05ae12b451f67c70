"""NAS-based distillation: search the student's architecture for the teacher, then distil it.

The search space is the CIFAR ResNet family, depth x width: depths {8, 14, 20} (1, 2, 3 basic blocks a stage)
times width multipliers {1, 2} of the (16, 16, 32, 64) channels. Candidates over the parameter budget are
discarded; the rest are scored without training by a distillation-aware proxy in the spirit of DisWOT
(Dong et al. 2023), which ranks students by how similar they already are to the teacher at initialisation:

- semantic similarity: for every class k, the Grad-CAM map of each sample (ReLU of the last-stage features
  weighted by the spatial mean of d logit_k / d features) is flattened over the batch; the K x K cosine
  similarity matrix of these class maps is compared between teacher and candidate (mean squared difference;
  maps of unequal size are average-pooled to the smaller);
- relational similarity: the B x B row-normalised Gram matrices of the flattened last-stage features, compared
  as in similarity-preserving KD (`losses.similarity_preserving_loss`).

score = -(semantic distance + relational distance), averaged over `proxy_batches` real training batches,
candidates in training mode at their initialisation (their state is restored after scoring). The best score
becomes the student, which is then distilled with KD (kd's loss and defaults).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.data.loader import BatchStream
from kdbench.errors import KdbenchError, check_choice
from kdbench.losses import similarity_preserving_loss
from kdbench.methods.base import MethodInfo, Setup, register_method
from kdbench.methods.response import KD
from kdbench.models.features import forward_with_features
from kdbench.models.resnet import CifarResNet

BASE_WIDTHS = (16, 16, 32, 64)  # RepDistiller resnet8..110 (kdbench cifar_resnet*)
DEPTHS = (8, 14, 20)
WIDTH_MULTIPLIERS = (1, 2)
PICKS = ("search", "smallest", "largest")


@dataclass(frozen=True)
class Candidate:
    depth: int
    width: int  # multiplier of BASE_WIDTHS

    @property
    def name(self) -> str:
        return f"cifar_resnet{self.depth}_w{self.width}"

    def build(self, num_classes: int, in_chans: int) -> CifarResNet:
        return CifarResNet(self.depth, tuple(self.width * w for w in BASE_WIDTHS), num_classes, in_chans)


SEARCH_SPACE = tuple(Candidate(d, w) for d in DEPTHS for w in WIDTH_MULTIPLIERS)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def gradcam_maps(features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) features and (B, K) logits of the same graph → (K, B, H, W) Grad-CAM maps."""
    maps = []
    for k in range(logits.shape[1]):
        (grad,) = torch.autograd.grad(logits[:, k].sum(), features, retain_graph=True)
        weights = grad.mean((2, 3), keepdim=True)
        maps.append(F.relu((weights * features).sum(1)))
    return torch.stack(maps).detach()


def class_correlation(maps: torch.Tensor, size: int) -> torch.Tensor:
    """(K, B, H, W) class maps, pooled to size x size → K x K cosine similarities of the flattened maps."""
    k, b = maps.shape[:2]
    if maps.shape[-1] != size:
        maps = F.adaptive_avg_pool2d(maps.flatten(0, 1).unsqueeze(1), size).view(k, b, size, size)
    flat = F.normalize(maps.flatten(1), dim=1)
    return flat @ flat.t()


def _probe(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Last-stage features (in the autograd graph even for a frozen model) and the class Grad-CAM maps."""
    out = forward_with_features(model, x.detach().clone().requires_grad_(True), embedding=False)
    features = out.stages[-1]
    return features.detach(), gradcam_maps(features, out.logits)


def diswot_score(teacher: nn.Module, candidate: nn.Module, batches: list[torch.Tensor]) -> float:
    """-(semantic + relational distance) between teacher and candidate on `batches` (higher is closer)."""
    state = copy.deepcopy(candidate.state_dict())  # scoring in training mode touches the BN statistics
    was_training = teacher.training
    teacher.eval()
    candidate.train()
    total = 0.0
    for x in batches:
        t_feat, t_maps = _probe(teacher, x)
        s_feat, s_maps = _probe(candidate, x)
        size = min(t_maps.shape[-1], s_maps.shape[-1])
        semantic = (class_correlation(t_maps, size) - class_correlation(s_maps, size)).pow(2).mean()
        relational = similarity_preserving_loss(s_feat, t_feat)
        total -= float(semantic + relational)
    candidate.load_state_dict(state)
    teacher.train(was_training)
    return total / len(batches)


@register_method
class NAS(KD):
    info = MethodInfo(
        name="nas",
        technique="NAS-Based Distillation",
        scheme="offline",
        knowledge="architecture (teacher-similarity proxy) and response (softened logits)",
        reference="Dong et al. 2023, DisWOT: Student Architecture Search for Distillation WithOut Training",
        summary="Picks the CIFAR-ResNet depth x width under a parameter budget whose untrained features are most "
        "similar to the teacher's (Grad-CAM class relations + batch Gram matrices), then distils it with KD.",
    )
    defaults = {
        **KD.defaults,  # the chosen student is distilled exactly as kd distils (RepDistiller's KD row)
        # kdbench: 4 of the 6 candidates fit (resnet8/14/20 at width 1, resnet8 at width 2), so both depth and
        # width are searched; the configured --student is replaced by the chosen candidate
        "param_budget": 350_000,
        "proxy_batches": 2,  # kdbench: real training batches the proxy averages over (DisWOT scores one batch)
        # "search" uses the proxy; "smallest" / "largest" take the extreme candidate within the budget, so
        # the search can be compared with both under the same distillation
        "pick": "search",
    }

    def __init__(self, setup: Setup, **hparams) -> None:
        super().__init__(setup, **hparams)
        check_choice("pick", self.hp["pick"], PICKS)
        info = setup.data
        sizes = {c: count_params(c.build(info.num_classes, info.in_chans)) for c in SEARCH_SPACE}
        self.param_counts = sizes
        self.in_budget = [c for c in SEARCH_SPACE if sizes[c] <= self.hp["param_budget"]]
        if not self.in_budget:
            smallest = min(SEARCH_SPACE, key=sizes.__getitem__)
            raise KdbenchError(
                f"param_budget {self.hp['param_budget']} fits no candidate: the smallest, {smallest.name}, "
                f"has {sizes[smallest]} parameters"
            )
        self._batches: list[torch.Tensor] = []
        self.scores: dict[Candidate, float] = {}
        self.chosen: Candidate | None = None
        self.search_time_s = 0.0

    def on_training_data(self, stream: BatchStream) -> None:
        if self.hp["pick"] == "search":
            batches = stream.epoch(0)
            self._batches = [next(batches).x for _ in range(min(self.hp["proxy_batches"], len(stream)))]

    def before_training(self) -> None:
        start = time.perf_counter()
        info, device = self.setup.data, next(self.student.parameters()).device
        built = {c: c.build(info.num_classes, info.in_chans).to(device) for c in self.in_budget}
        if self.hp["pick"] == "search":
            if not self._batches:
                raise RuntimeError(
                    "nas scores candidates on real batches: the engine must call on_training_data"
                )
            self.scores = {c: diswot_score(self.teacher, model, self._batches) for c, model in built.items()}
            self.chosen = max(self.in_budget, key=self.scores.__getitem__)
        else:
            pick = min if self.hp["pick"] == "smallest" else max
            self.chosen = pick(self.in_budget, key=self.param_counts.__getitem__)
        self.student = built[self.chosen].train()  # the engine builds the optimiser after this hook
        self._batches = []
        self.search_time_s = time.perf_counter() - start

    def record_extras(self) -> dict[str, Any]:
        return {
            "chosen_arch": self.chosen.name if self.chosen else None,
            "chosen_params": self.param_counts[self.chosen] if self.chosen else None,
            "param_budget": self.hp["param_budget"],
            "pick": self.hp["pick"],
            "search_time_s": self.search_time_s,
            "candidates": [
                {
                    "arch": c.name,
                    "depth": c.depth,
                    "width": c.width,
                    "params": self.param_counts[c],
                    "in_budget": c in self.in_budget,
                    "score": self.scores.get(c),
                }
                for c in SEARCH_SPACE
            ],
        }
