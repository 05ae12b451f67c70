"""ShuffleNet V1 (Zhang et al. 2018) and V2 (Ma et al. 2018) for CIFAR as used by the KD benchmarks (CRD's
RepDistiller models/ShuffleNetv1.py and ShuffleNetv2.py): a stride-1 1x1 stem conv to 24 channels (no max
pool), then three stages that each halve the resolution, global average pooling and one linear layer.

`cifar_shufflenetv1` is RepDistiller's ShuffleV1: groups 3, stage widths 240/480/960, 4/8/4 bottlenecks.
`cifar_shufflenetv2` is its ShuffleV2 (net_size 1): stage widths 116/232/464, a down-sampling unit plus 3/7/3
basic units a stage, and a final 1x1 conv to 1024 channels."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.models.registry import CifarNet, init_weights, register

STEM = 24


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x):
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleV1Unit(nn.Module):
    """Grouped 1x1 - shuffle - depthwise 3x3 - grouped 1x1; a stride-2 unit concatenates an average-pooled
    shortcut, so its branch produces only `cout - cin` channels. The network's first 1x1 is ungrouped."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int, first: bool = False) -> None:
        super().__init__()
        self.stride = stride
        branch = cout - cin if stride == 2 else cout
        mid = branch // 4
        g1 = 1 if first else groups
        self.conv1 = nn.Conv2d(cin, mid, 1, groups=g1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.shuffle = ChannelShuffle(g1)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, branch, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(branch)
        self.shortcut = nn.AvgPool2d(3, 2, 1) if stride == 2 else nn.Identity()

    def forward(self, x):
        out = self.shuffle(F.relu(self.bn1(self.conv1(x))))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = self.shortcut(x)
        return F.relu(torch.cat([out, res], 1) if self.stride == 2 else out + res)


class ShuffleV2Unit(nn.Module):
    """Basic unit: half the channels pass through, the other half go 1x1 - depthwise 3x3 - 1x1; concat, shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        c = channels // 2
        self.branch = nn.Sequential(
            nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False), nn.BatchNorm2d(c),
            nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.shuffle = ChannelShuffle(2)

    def forward(self, x):
        x1, x2 = x.chunk(2, dim=1)
        return self.shuffle(torch.cat([x1, self.branch(x2)], 1))


class ShuffleV2Down(nn.Module):
    """Down-sampling unit: two stride-2 branches (depthwise - 1x1, and 1x1 - depthwise - 1x1), concat, shuffle."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        mid = cout // 2
        self.left = nn.Sequential(
            nn.Conv2d(cin, cin, 3, 2, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.right = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, 2, 1, groups=mid, bias=False), nn.BatchNorm2d(mid),
            nn.Conv2d(mid, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.shuffle = ChannelShuffle(2)

    def forward(self, x):
        return self.shuffle(torch.cat([self.left(x), self.right(x)], 1))


class _CifarShuffleNet(CifarNet):
    """Stem and feature_info shared by both versions; subclasses build layer1..layer3 and set `self.conv_head`."""

    def __init__(
        self, widths: tuple[int, int, int], num_features: int, num_classes: int, in_chans: int
    ) -> None:
        super().__init__(num_features, num_classes)
        self.conv1 = nn.Conv2d(in_chans, STEM, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM)
        self.act1 = nn.ReLU(inplace=True)
        self.conv_head: nn.Module = nn.Identity()
        self.feature_info = [dict(num_chs=STEM, reduction=1, module="act1")] + [
            dict(num_chs=w, reduction=2 ** (i + 1), module=f"layer{i + 1}") for i, w in enumerate(widths)
        ]

    def forward_features(self, x):
        x = self.act1(self.bn1(self.conv1(x)))
        return self.conv_head(self.layer3(self.layer2(self.layer1(x))))


class CifarShuffleNetV1(_CifarShuffleNet):
    def __init__(
        self,
        widths=(240, 480, 960),
        depths=(4, 8, 4),
        groups: int = 3,
        num_classes: int = 10,
        in_chans: int = 3,
    ):
        super().__init__(widths, widths[-1], num_classes, in_chans)
        cin, stages = STEM, []
        for i, (w, d) in enumerate(zip(widths, depths, strict=True)):
            units = []
            for j in range(d):
                units.append(ShuffleV1Unit(cin, w, 2 if j == 0 else 1, groups, first=i == 0 and j == 0))
                cin = w
            stages.append(nn.Sequential(*units))
        self.layer1, self.layer2, self.layer3 = stages
        init_weights(self)


class CifarShuffleNetV2(_CifarShuffleNet):
    def __init__(
        self,
        widths=(116, 232, 464),
        depths=(3, 7, 3),
        head: int = 1024,
        num_classes: int = 10,
        in_chans: int = 3,
    ):
        super().__init__(widths, head, num_classes, in_chans)
        cin, stages = STEM, []
        for w, d in zip(widths, depths, strict=True):
            stages.append(nn.Sequential(ShuffleV2Down(cin, w), *[ShuffleV2Unit(w) for _ in range(d)]))
            cin = w
        self.layer1, self.layer2, self.layer3 = stages
        self.conv_head = nn.Sequential(
            nn.Conv2d(cin, head, 1, bias=False), nn.BatchNorm2d(head), nn.ReLU(inplace=True)
        )
        init_weights(self)


@register("shufflenet")
def cifar_shufflenetv1(num_classes: int = 10, in_chans: int = 3) -> CifarShuffleNetV1:
    return CifarShuffleNetV1(num_classes=num_classes, in_chans=in_chans)


@register("shufflenet")
def cifar_shufflenetv2(num_classes: int = 10, in_chans: int = 3) -> CifarShuffleNetV2:
    return CifarShuffleNetV2(num_classes=num_classes, in_chans=in_chans)
