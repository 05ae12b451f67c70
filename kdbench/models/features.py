"""Intermediate features by forward hooks on the modules timm's `feature_info` names (torchdistill's approach):
no model is rewritten to return features, so any timm model can be tapped."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn


@dataclass
class Outputs:
    """A forward pass seen from outside: logits, the feature_info stages (shallow to deep) and the embedding
    that enters the classifier (the penultimate, pooled features that relation methods use)."""

    logits: torch.Tensor
    stages: list[torch.Tensor] = field(default_factory=list)
    embedding: torch.Tensor | None = None

    def detached_copy(self) -> Outputs:
        """Ordinary tensors from inference-mode ones, so losses may save them for backward."""
        return Outputs(
            self.logits.clone(),
            [s.clone() for s in self.stages],
            None if self.embedding is None else self.embedding.clone(),
        )


def _feature_entries(model: nn.Module) -> list[dict]:
    info = getattr(model, "feature_info", None)
    if not info:
        raise ValueError(f"{type(model).__name__} has no feature_info to tap features from")
    return info.info if hasattr(info, "info") else info  # timm FeatureInfo object or plain list of dicts


def feature_modules(model: nn.Module) -> list[nn.Module]:
    """The modules named by the model's timm `feature_info`, shallow to deep."""
    return [model.get_submodule(e["module"]) for e in _feature_entries(model)]


def stage_channels(model: nn.Module) -> list[int]:
    """The channels of the stages `forward_with_features` taps, shallow to deep, read from `feature_info` without
    a forward pass (so a profile can tell which pairs a method takes from models built on the meta device)."""
    return [int(e["num_chs"]) for e in _feature_entries(model)]


def forward_with_features(
    model: nn.Module, x: torch.Tensor, stages: bool = True, embedding: bool = True
) -> Outputs:
    """Run `model(x)` once, capturing stage outputs and the classifier's input with temporary hooks."""
    captured: list[torch.Tensor] = []
    emb: list[torch.Tensor] = []
    handles = []
    if stages:
        for module in feature_modules(model):
            handles.append(module.register_forward_hook(lambda _m, _i, out: captured.append(out)))
    if embedding:
        head = model.get_classifier()
        handles.append(head.register_forward_pre_hook(lambda _m, inp: emb.append(inp[0])))
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    return Outputs(logits, captured, emb[0].flatten(1) if emb else None)
