"""CIFAR-style ResNets (He et al. 2016, section 4.2) as used by the KD benchmarks (RepDistiller's resnet.py):
three stages of 3x3 basic blocks, n = (depth - 2) / 6 blocks a stage; the "x4" variants have 4x the width."""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from kdbench.models.registry import CifarNet, init_weights, register


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(CifarNet):
    def __init__(
        self, depth: int, widths: tuple[int, int, int, int], num_classes: int = 10, in_chans: int = 3
    ):
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        super().__init__(widths[3], num_classes)
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = nn.ReLU(inplace=True)
        cin, stages = widths[0], []
        for i, cout in enumerate(widths[1:]):
            stride = 1 if i == 0 else 2
            blocks = [BasicBlock(cin if j == 0 else cout, cout, stride if j == 0 else 1) for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.layer1, self.layer2, self.layer3 = stages
        self.feature_info = [
            dict(num_chs=widths[0], reduction=1, module="act1"),
            dict(num_chs=widths[1], reduction=1, module="layer1"),
            dict(num_chs=widths[2], reduction=2, module="layer2"),
            dict(num_chs=widths[3], reduction=4, module="layer3"),
        ]
        init_weights(self)

    def forward_features(self, x):
        x = self.act1(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))


def _resnet(depth: int, widths=(16, 16, 32, 64)):
    def build(num_classes: int = 10, in_chans: int = 3) -> CifarResNet:
        return CifarResNet(depth, widths, num_classes, in_chans)

    return build


@register("resnet")
def cifar_resnet8(**kw):
    return _resnet(8)(**kw)


@register("resnet")
def cifar_resnet14(**kw):
    return _resnet(14)(**kw)


@register("resnet")
def cifar_resnet20(**kw):
    return _resnet(20)(**kw)


@register("resnet")
def cifar_resnet32(**kw):
    return _resnet(32)(**kw)


@register("resnet")
def cifar_resnet44(**kw):
    return _resnet(44)(**kw)


@register("resnet")
def cifar_resnet56(**kw):
    return _resnet(56)(**kw)


@register("resnet")
def cifar_resnet110(**kw):
    return _resnet(110)(**kw)


@register("resnet")
def cifar_resnet8x4(**kw):
    return _resnet(8, (32, 64, 128, 256))(**kw)


@register("resnet")
def cifar_resnet32x4(**kw):
    return _resnet(32, (32, 64, 128, 256))(**kw)
