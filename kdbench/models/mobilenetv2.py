"""MobileNetV2 for CIFAR (Sandler et al. 2018) as used by the KD benchmarks (CRD's RepDistiller
models/mobilenetv2.py, from "Knowledge Distillation via Route Constrained Optimization"): a stride-2 3x3
stem, seven stages of inverted residual blocks with expansion T = 6 (the first stage: 1), a 1x1 conv to 1280
channels, then global average pooling and one linear layer. `cifar_mobilenetv2` is RepDistiller's
`mobile_half` (width multiplier 0.5); the total reduction is 16, so 32x32 and 28x28 inputs both end at 2x2."""

from __future__ import annotations

import torch.nn as nn

from kdbench.models.registry import CifarNet, init_weights, register

# (expansion, channels, blocks, first stride) of each stage, before the width multiplier; `None` means T
STAGES = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)


def conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class InvertedResidual(nn.Module):
    """1x1 expansion, 3x3 depthwise, linear 1x1 projection; residual when shape is kept."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.use_residual = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            *conv_bn_relu(cin, hidden, 1),
            *conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x):
        out = self.conv(x)
        return x + out if self.use_residual else out


class CifarMobileNetV2(CifarNet):
    def __init__(
        self, expansion: int = 6, width_mult: float = 1.0, num_classes: int = 10, in_chans: int = 3
    ) -> None:
        last = int(1280 * width_mult) if width_mult > 1.0 else 1280
        super().__init__(last, num_classes)
        cin = int(32 * width_mult)
        self.conv1 = nn.Sequential(*conv_bn_relu(in_chans, cin, 3, 2))
        stages, widths = [], []
        for t, c, n, s in STAGES:
            cout = int(c * width_mult)
            blocks = []
            for j in range(n):
                blocks.append(InvertedResidual(cin, cout, s if j == 0 else 1, expansion if t is None else t))
                cin = cout
            stages.append(nn.Sequential(*blocks))
            widths.append(cout)
        self.blocks = nn.Sequential(*stages)
        self.conv2 = nn.Sequential(*conv_bn_relu(cin, last, 1))
        # RepDistiller's taps: the stem, then the ends of stages 1, 2, 4 and 6 (the last before each downsampling)
        self.feature_info = [dict(num_chs=int(32 * width_mult), reduction=2, module="conv1")] + [
            dict(num_chs=widths[i], reduction=r, module=f"blocks.{i}")
            for i, r in ((1, 2), (2, 4), (4, 8), (6, 16))
        ]
        init_weights(self)
        nn.init.normal_(self.fc.weight, 0, 0.01)
        nn.init.zeros_(self.fc.bias)

    def forward_features(self, x):
        return self.conv2(self.blocks(self.conv1(x)))


@register("mobilenetv2")
def cifar_mobilenetv2(num_classes: int = 10, in_chans: int = 3) -> CifarMobileNetV2:
    """RepDistiller's `mobile_half`: T = 6, width multiplier 0.5."""
    return CifarMobileNetV2(6, 0.5, num_classes, in_chans)
