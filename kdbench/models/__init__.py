"""Architectures: the CIFAR-style families of the KD literature, registered into timm's registry."""

from kdbench.models import mobilenetv2, resnet, shufflenet, vgg, wrn  # noqa: F401  (registers the families)
from kdbench.models.features import Outputs, feature_modules, forward_with_features
from kdbench.models.registry import KDBENCH_MODELS, CifarNet, create_model, register

__all__ = [
    "KDBENCH_MODELS",
    "CifarNet",
    "Outputs",
    "create_model",
    "feature_modules",
    "forward_with_features",
    "register",
]
