"""Wide ResNets WRN-d-w for CIFAR (Zagoruyko & Komodakis 2016, "Wide Residual Networks") as used by the KD
benchmarks (CRD's RepDistiller models/wrn.py): a 3x3 stem conv, three stages of pre-activation basic blocks,
n = (depth - 4) / 6 blocks a stage, widths 16w, 32w, 64w, then a final BN + ReLU before pooling."""

from __future__ import annotations

import torch.nn as nn

from kdbench.models.registry import CifarNet, init_weights, register


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 with an identity shortcut, or, when the width or resolution changes,
    a 1x1 projection of the pre-activated input (the input's BN-ReLU is then shared by both paths)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None if cin == cout and stride == 1 else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        pre = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(pre))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(CifarNet):
    def __init__(self, depth: int, widen: int, num_classes: int = 10, in_chans: int = 3) -> None:
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        super().__init__(widths[3], num_classes)
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
        cin, stages = widths[0], []
        for i, cout in enumerate(widths[1:]):
            stride = 1 if i == 0 else 2
            stages.append(
                nn.Sequential(
                    *[PreActBlock(cin if j == 0 else cout, cout, stride if j == 0 else 1) for j in range(n)]
                )
            )
            cin = cout
        self.block1, self.block2, self.block3 = stages
        # the blocks are pre-activation, so the last stage's output still needs its BN + ReLU
        self.bn_out = nn.BatchNorm2d(widths[3])
        self.act_out = nn.ReLU(inplace=True)
        self.feature_info = [
            dict(num_chs=widths[0], reduction=1, module="conv1"),
            dict(num_chs=widths[1], reduction=1, module="block1"),
            dict(num_chs=widths[2], reduction=2, module="block2"),
            dict(num_chs=widths[3], reduction=4, module="act_out"),  # block3 after the final BN + ReLU
        ]
        init_weights(self)
        nn.init.zeros_(self.fc.bias)

    def forward_features(self, x):
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.act_out(self.bn_out(x))


def _wrn(depth: int, widen: int):
    def build(num_classes: int = 10, in_chans: int = 3) -> WideResNet:
        return WideResNet(depth, widen, num_classes, in_chans)

    return build


@register("wrn")
def cifar_wrn_16_1(**kw):
    return _wrn(16, 1)(**kw)


@register("wrn")
def cifar_wrn_16_2(**kw):
    return _wrn(16, 2)(**kw)


@register("wrn")
def cifar_wrn_40_1(**kw):
    return _wrn(40, 1)(**kw)


@register("wrn")
def cifar_wrn_40_2(**kw):
    return _wrn(40, 2)(**kw)
