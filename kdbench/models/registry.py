"""kdbench architectures live in timm's registry, so `timm.create_model(name, num_classes=, in_chans=)` builds
them and any timm model name works as a teacher or student too."""

from __future__ import annotations

import functools
from collections.abc import Callable

import timm
import torch.nn as nn

from kdbench.errors import KdbenchError

# name -> family, for listings and error messages (timm's registry holds the builders themselves)
KDBENCH_MODELS: dict[str, str] = {}


def register(family: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register `builder(num_classes=, in_chans=)` with timm under the builder's own name."""

    def deco(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__

        @functools.wraps(builder)
        def entry(
            pretrained: bool = False, pretrained_cfg=None, pretrained_cfg_overlay=None, cache_dir=None, **kw
        ):
            if pretrained:
                raise KdbenchError(f"{name} has no pretrained weights; kdbench trains its teachers itself")
            return builder(**kw)

        timm.models.register_model(entry)
        KDBENCH_MODELS[name] = family
        return builder

    return deco


def check_model(name: str) -> str:
    """Return `name` if kdbench or timm can build it; else the error listing kdbench's own architectures."""
    if name not in KDBENCH_MODELS and not timm.is_model(name):
        listed = ", ".join(sorted(KDBENCH_MODELS))
        raise KdbenchError(f"unknown model {name!r}; valid choices: {listed}, or any timm model name")
    return name


def create_model(name: str, num_classes: int, in_chans: int) -> nn.Module:
    """Build a kdbench or timm architecture for a dataset; an unknown name lists kdbench's own.

    kdbench feeds every model the dataset's own image size. A timm model made for one input size (a ViT:
    `fixed_input_size` in its pretrained config) is built to take any size, its patch grid padded and its
    position embedding resized; one that cannot be (a Swin) is a one-line error naming the way out."""
    check_model(name)
    cfg = None if name in KDBENCH_MODELS else timm.models.get_pretrained_cfg(name)
    if cfg is None or not cfg.fixed_input_size:
        return timm.create_model(name, num_classes=num_classes, in_chans=in_chans)
    try:
        return timm.create_model(
            name, num_classes=num_classes, in_chans=in_chans, dynamic_img_size=True, dynamic_img_pad=True
        )
    except TypeError:
        size = "x".join(str(n) for n in cfg.input_size[1:])
        raise KdbenchError(
            f"model {name!r} takes only {size} inputs, and kdbench feeds each dataset at its own size; choose a "
            "--student/--teacher (or grid pair) that takes any size: a CNN such as resnet18, or a ViT such as "
            "vit_tiny_patch16_224"
        ) from None


class CifarNet(nn.Module):
    """The timm-style surface every kdbench network shares: features → global average pool → linear head.

    Subclasses build their layers, implement `forward_features`, and set `feature_info` to timm's format
    (a list of dicts with `num_chs`, `reduction` and `module`), which is where feature taps attach.
    """

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_features = num_features
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(num_features, num_classes)
        self.feature_info: list[dict] = []

    def forward_features(self, x):
        raise NotImplementedError

    def forward_head(self, x, pre_logits: bool = False):
        x = self.global_pool(x).flatten(1)
        return x if pre_logits else self.fc(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes)


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convolutions, unit batch norm, as in the CIFAR ResNet/WRN reference code."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
