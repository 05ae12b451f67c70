"""Every registered kdbench architecture: builds through timm, runs on Fashion-MNIST (1x28x28) and CIFAR
(3x32x32) shapes, exposes feature taps that match its feature_info, and has RepDistiller's parameter count."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn as nn

from kdbench.models import KDBENCH_MODELS, forward_with_features

torch.set_num_threads(1)

ALL = sorted(KDBENCH_MODELS)

# RepDistiller (CRD) models built for CIFAR-100, in millions of parameters
REFERENCE_PARAMS_M = {
    "cifar_resnet20": 0.28,
    "cifar_resnet56": 0.86,
    "cifar_resnet110": 1.74,
    "cifar_resnet8x4": 1.24,
    "cifar_resnet32x4": 7.43,
    "cifar_wrn_40_2": 2.26,
    "cifar_wrn_16_2": 0.70,
    "cifar_vgg13": 9.46,
    "cifar_vgg8": 3.96,
    "cifar_mobilenetv2": 0.81,
    "cifar_shufflenetv1": 0.95,
    "cifar_shufflenetv2": 1.36,
}


def _check_features(model: nn.Module, x: torch.Tensor, num_classes: int) -> None:
    out = forward_with_features(model, x)
    assert out.logits.shape == (x.shape[0], num_classes)
    info = model.feature_info
    assert len(info) >= 4
    assert len(out.stages) == len(info)
    for stage, entry in zip(out.stages, info, strict=True):
        assert stage.dim() == 4
        assert stage.shape[1] == entry["num_chs"]
        assert stage.shape[-1] >= 2  # even the deepest map keeps some spatial extent
    assert out.embedding.shape == (x.shape[0], model.num_features)
    assert model.get_classifier() is model.fc


@pytest.mark.parametrize("name", ALL)
def test_fashion_mnist_shapes_and_features(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10, in_chans=1)
    x = torch.randn(2, 1, 28, 28)
    _check_features(model, x, 10)

    # stage features and logits backpropagate (no in-place op clobbers a tapped tensor)
    out = forward_with_features(model, x)
    loss = (
        out.logits.logsumexp(1).sum() + sum(s.pow(2).mean() for s in out.stages) + out.embedding.pow(2).mean()
    )
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(
    "name",
    [
        "cifar_resnet8x4",
        "cifar_wrn_16_2",
        "cifar_vgg8",
        "cifar_mobilenetv2",
        "cifar_shufflenetv1",
        "cifar_shufflenetv2",
    ],
)
def test_cifar_shapes_and_reductions(name):
    model = timm.create_model(name, num_classes=100, in_chans=3).eval()
    x = torch.randn(2, 3, 32, 32)
    _check_features(model, x, 100)
    with torch.no_grad():
        out = forward_with_features(model, x)
    for stage, entry in zip(out.stages, model.feature_info, strict=True):
        assert stage.shape[-2:] == (32 // entry["reduction"], 32 // entry["reduction"])


def test_reset_classifier():
    model = timm.create_model("cifar_wrn_16_1", num_classes=10, in_chans=1)
    model.reset_classifier(5)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 5)


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS_M))
def test_parameter_counts_match_repdistiller(name):
    model = timm.create_model(name, num_classes=100, in_chans=3)
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    assert millions == pytest.approx(REFERENCE_PARAMS_M[name], rel=0.05)
