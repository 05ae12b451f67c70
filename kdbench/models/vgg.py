"""CIFAR VGGs with batch norm (Simonyan & Zisserman 2015) as used by the KD benchmarks (CRD's RepDistiller
models/vgg.py): five blocks of 3x3 conv-BN-ReLU with 2x2 max pooling after the first three, then global
average pooling and one linear layer. VGG8/11/13 use one/one-or-two/two convs a block (configs S, A, B).

RepDistiller pools once more before the last block only for 64x64 inputs; that pool is left out here, so
CIFAR (32x32) inputs match it exactly and 28x28 inputs end at 3x3 maps."""

from __future__ import annotations

import torch.nn as nn

from kdbench.models.registry import CifarNet, init_weights, register

# convolution widths of the five blocks
CONFIGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}


def _block(cin: int, widths: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(cin, w, 3, 1, 1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        cin = w
    return nn.Sequential(*layers)


class CifarVGG(CifarNet):
    def __init__(self, cfg: tuple[tuple[int, ...], ...], num_classes: int = 10, in_chans: int = 3) -> None:
        super().__init__(cfg[-1][-1], num_classes)
        cins = (in_chans,) + tuple(c[-1] for c in cfg[:-1])
        self.block0, self.block1, self.block2, self.block3, self.block4 = (
            _block(i, c) for i, c in zip(cins, cfg, strict=True)
        )
        self.pool0, self.pool1, self.pool2 = (nn.MaxPool2d(2, 2) for _ in range(3))
        self.feature_info = [
            dict(num_chs=cfg[i][-1], reduction=r, module=f"block{i}") for i, r in enumerate((1, 2, 4, 8, 8))
        ]
        init_weights(self)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.fc.weight, 0, 0.01)
        nn.init.zeros_(self.fc.bias)

    def forward_features(self, x):
        x = self.pool0(self.block0(x))
        x = self.pool1(self.block1(x))
        x = self.pool2(self.block2(x))
        return self.block4(self.block3(x))


def _vgg(name: str):
    def build(num_classes: int = 10, in_chans: int = 3) -> CifarVGG:
        return CifarVGG(CONFIGS[name], num_classes, in_chans)

    return build


@register("vgg")
def cifar_vgg8(**kw):
    return _vgg("vgg8")(**kw)


@register("vgg")
def cifar_vgg11(**kw):
    return _vgg("vgg11")(**kw)


@register("vgg")
def cifar_vgg13(**kw):
    return _vgg("vgg13")(**kw)


@register("vgg")
def cifar_vgg16(**kw):
    return _vgg("vgg16")(**kw)


@register("vgg")
def cifar_vgg19(**kw):
    return _vgg("vgg19")(**kw)
