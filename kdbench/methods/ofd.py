"""OFD (Heo et al. 2019, "A Comprehensive Overhaul of Feature Distillation"), as mdistiller's OFD.py and the
authors' clovaai/overhaul-distillation (CIFAR-100/distiller.py) compute it:

- where: every stage but the stem (mdistiller `preact_feats[1:]`), before its last ReLU, for the student and the
  teacher (`kdbench.methods.preact`); with unequal stage counts the deepest stages are paired (mdistiller
  `_align_list`);
- the student's stage goes through a connector (1x1 convolution without bias, then batch norm);
- the teacher's stage is clipped below at a per-channel margin, the mean of the negative part of the Gaussian that
  the batch norm feeding the stage's last ReLU describes (its weight as the standard deviation, its bias as the
  mean): E[x | x < 0] for x ~ N(bias, weight^2), or -3|weight| when under 0.1 % of that Gaussian is negative;
- the partial L2 loss: the squared difference to the clipped teacher, skipped where the student is already below
  it and it is not positive (a negative teacher value only says "off": any student value under it is as good);
- reduction: summed over channels and positions, averaged over the batch, stage i of n weighted 1 / 2^(n - 1 - i)
  (the deepest 1), summed over stages, times 1/1000 (mdistiller FEAT_WEIGHT 0.001 = the authors' / 1000).

Where kdbench differs: the frozen teacher stays in evaluation mode (mdistiller's `OFD.train` and the authors' loop
put it in training mode, so there its pre-activations use batch statistics and its running statistics drift);
the margins belong to the paired teacher stages (mdistiller indexes the margins of all teacher stages by the
position in the aligned list, which only agrees when the stage counts do); a ShuffleNetV2 teacher is a one-line
error, as the references' `NotImplementedError`, while a ShuffleNetV1 teacher works (its stages end in units that
keep their size, whose bn3 feeds the ReLU).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.data.loader import Batch
from kdbench.errors import KdbenchError
from kdbench.methods.base import Method, MethodInfo, Setup, register_method
from kdbench.methods.feature_zoo import paired, stage_shapes
from kdbench.methods.preact import PreactFeatures, find_preact_taps, stage_names
from kdbench.models.features import feature_modules
from kdbench.models.mobilenetv2 import InvertedResidual
from kdbench.models.resnet import BasicBlock
from kdbench.models.shufflenet import ShuffleV1Unit

# the reference's cut-off: below this probability of a negative value, the margin is -3 sigma (mdistiller OFD.py,
# clovaai get_margin_from_BN: `norm.cdf(-m / s) > 0.001`)
MIN_NEGATIVE_MASS = 1e-3

# ---- pure losses ----------------------------------------------------------------------------------------------


def ofd_margin(weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """OFD's margin per channel (paper eq. 3): the mean of x ~ N(m, s^2) given x < 0, with s = |weight| and
    m = bias of the batch norm before the ReLU, m - s phi(m / s) / Phi(-m / s); -3 s where Phi(-m / s), the chance
    of a negative value, is at most 0.001. A constant channel (s = 0) gets min(m, 0). Computed in float64."""
    s, m = weight.detach().abs().double(), bias.detach().double()
    z = -m / s  # NaN when s = m = 0: its margin falls to the -3 s branch, 0
    negative = torch.special.ndtr(z)
    density = torch.exp(-z.pow(2) / 2) / math.sqrt(2 * math.pi)
    margin = torch.where(negative > MIN_NEGATIVE_MASS, m - s * density / negative, -3 * s)
    return margin.to(weight.dtype)


def ofd_partial_l2(source: torch.Tensor, target: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """OFD's partial L2 distance (paper eq. 5), element by element: with the teacher clipped at its margin,
    t' = max(t, m), the squared difference (s - t')^2 except where s <= t' <= 0. `margin` is per channel
    (C,) or broadcastable (1, C, 1, 1). The same as mdistiller's three masks: (s - m)^2 where s > m >= t,
    (s - t)^2 where s > t and m < t <= 0, (s - t)^2 where t > 0 (the margin is negative)."""
    margin = margin.to(source.dtype)
    if margin.dim() == 1 and source.dim() == 4:
        margin = margin.view(1, -1, 1, 1)
    target = torch.maximum(target, margin)
    keep = (source > target) | (target > 0)
    return (source - target).pow(2) * keep.to(source.dtype)


def ofd_loss(
    sources: list[torch.Tensor], targets: list[torch.Tensor], margins: list[torch.Tensor]
) -> torch.Tensor:
    """OFD over stages as mdistiller's `ofd_loss` reduces it: each teacher map is average-pooled to its connected
    student map's size; per stage the partial L2 summed over channels and positions and averaged over the batch;
    stage i of n weighted 1 / 2^(n - 1 - i); summed. (The 1/1000 is the method's `ofd_weight`.)"""
    n = len(sources)
    total = sources[0].new_zeros(())
    for i, (s, t, m) in enumerate(zip(sources, targets, margins, strict=True)):
        t = F.adaptive_avg_pool2d(t, s.shape[-2:]).detach()
        total = total + ofd_partial_l2(s, t, m).sum() / s.shape[0] / 2 ** (n - 1 - i)
    return total


# ---- trained modules and the teacher's batch norms ------------------------------------------------------------


def ofd_connector(c_in: int, c_out: int) -> nn.Sequential:
    """OFD's connector (mdistiller ConnectorConvBN with KERNEL_SIZE 1, clovaai build_feature_connector): a 1x1
    convolution without bias, weights N(0, 2 / c_out), then batch norm starting at weight 1 and bias 0."""
    conv = nn.Conv2d(c_in, c_out, 1, bias=False)
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / c_out))  # He init with n = k * k * out_channels
    return nn.Sequential(conv, nn.BatchNorm2d(c_out))


def probe_input(setup: Setup) -> torch.Tensor:
    """A dummy batch of two of the run's inputs (zeros), for finding features on a probe forward pass."""
    info = setup.data
    return torch.zeros(2, info.in_chans, info.image_size, info.image_size, device=setup.device)


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """The model in evaluation mode (its batch-norm statistics untouched) while open, its mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _relu_feeders(
    model: nn.Module, relus: list[nn.Module], example: torch.Tensor
) -> dict[nn.Module, nn.Module]:
    """For each ReLU module in `relus`, the batch norm whose output tensor is that ReLU's very input on a probe
    forward pass (evaluation mode, training mode restored after); a ReLU fed by anything else is left out."""
    made: list[tuple[nn.Module, torch.Tensor]] = []
    feeders: dict[nn.Module, nn.Module] = {}

    def keep(bn: nn.Module, _args: tuple, out: torch.Tensor) -> None:
        made.append((bn, out))

    def match(relu: nn.Module, args: tuple) -> None:
        for bn, out in reversed(made):
            if out is args[0]:
                feeders[relu] = bn
                return

    handles = [m.register_forward_hook(keep) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    handles += [r.register_forward_pre_hook(match) for r in relus]
    try:
        with _evaluating(model), torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return feeders


def batchnorms_before_relu(model: nn.Module, example: torch.Tensor) -> list[nn.Module | None]:
    """Per `feature_info` stage, the batch norm whose statistics OFD's margin reads: the one whose output reaches
    the stage's last ReLU (RepDistiller's and mdistiller's `get_bn_before_relu`); None where there is none alone.

    - a ResNet basic block: its bn2 (the shortcut is added after it, as the references ignore);
    - a MobileNetV2 linear bottleneck: its projection's batch norm (`conv[-1]`);
    - a ShuffleNetV1 unit that keeps its size: its bn3 (a downsampling unit concatenates a pooled shortcut that
      no batch norm describes: None);
    - a stage read at a ReLU module's input (stems, VGG blocks, WRN's next block bn1 and final bn, timm's ResNet
      blocks, which add their shortcut in place onto bn2's output): the batch norm whose output tensor is that
      input, found on a probe forward pass;
    - anything else (ShuffleNetV2's units, a ReLU fed by a new tensor): None, as the references have no
      `get_bn_before_relu` for ShuffleNets."""
    taps = find_preact_taps(model, example)
    relus = [
        tap.reads[0].module
        for tap in taps
        if len(tap.reads) == 1 and tap.reads[0].what == "input" and isinstance(tap.reads[0].module, nn.ReLU)
    ]
    feeders = _relu_feeders(model, relus, example) if relus else {}
    found: list[nn.Module | None] = []
    for tap, stage in zip(taps, feature_modules(model), strict=True):
        block = stage[-1] if isinstance(stage, nn.Sequential) and len(stage) else stage
        if isinstance(block, BasicBlock):
            found.append(block.bn2)
        elif isinstance(block, InvertedResidual):
            found.append(block.conv[-1])
        elif isinstance(block, ShuffleV1Unit):
            found.append(block.bn3 if block.stride == 1 else None)
        else:
            found.append(feeders.get(tap.reads[0].module) if len(tap.reads) == 1 else None)
    return found


# ---- the method -----------------------------------------------------------------------------------------------


@register_method
class OFD(Method):
    info = MethodInfo(
        name="ofd",
        technique="Feature-Based KD",
        scheme="offline",
        knowledge="feature (pre-ReLU stage features, the teacher's clipped at a margin from its batch norms)",
        reference="Heo et al. 2019, A Comprehensive Overhaul of Feature Distillation",
        summary="Cross-entropy plus a partial L2 distance between connected pre-ReLU student stages and the "
        "teacher's, clipped below at a margin from its batch norms; deeper stages weigh more.",
    )
    defaults = {
        # mdistiller engine/cfg.py OFD.LOSS.FEAT_WEIGHT 0.001 (configs/cifar100/ofd.yaml keeps it), on a loss averaged
        # over the batch: the authors' train_with_distillation.py `loss_distill.sum() / batch_size / 1000`
        "ofd_weight": 1e-3,
        "ce_weight": 1.0,  # mdistiller OFD.LOSS.CE_WEIGHT 1.0 (the authors: loss_CE unweighted)
    }

    def __init__(self, setup: Setup, **hparams: Any) -> None:
        super().__init__(setup, **hparams)
        example = probe_input(setup)
        # the stages before their last ReLU (mdistiller's preact_feats); a stage's pre-activation has its shape
        self._preacts_s = PreactFeatures(self.student, example)
        self._preacts_t = PreactFeatures(
            self.teacher, example
        )  # a reader, not a submodule: the teacher stays out
        s, t = stage_shapes(self, skip_stem=True)  # mdistiller: get_stage_channels()[1:], preact_feats[1:]
        student_names = stage_names(self.student)
        names = paired(student_names, stage_names(self.teacher), skip_stem=True)[1]
        bns = paired(student_names, batchnorms_before_relu(self.teacher, example), skip_stem=True)[1]
        for name, bn in zip(names, bns, strict=True):
            if bn is None:
                raise KdbenchError(
                    f"ofd needs the batch norm before the last ReLU of the teacher's stage {name!r} "
                    f"of {type(self.teacher).__name__}, and no one batch norm feeds it: kdbench finds "
                    "them in ResNet, WRN, VGG, MobileNetV2 and ShuffleNetV1 teachers"
                )
        self.connectors = nn.ModuleList(ofd_connector(a[1], b[1]) for a, b in zip(s, t, strict=True))
        # fixed from the teacher's trained batch norms (mdistiller init_ofd_modules); buffers, so they move with it
        for i, bn in enumerate(bns):
            self.register_buffer(
                f"margin{i}", ofd_margin(bn.weight, bn.bias).view(1, -1, 1, 1), persistent=False
            )

    def margins(self) -> list[torch.Tensor]:
        return [getattr(self, f"margin{i}") for i in range(len(self.connectors))]

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        out, s = self._preacts_s(batch.x)
        with torch.no_grad():
            _, t = self._preacts_t(batch.x)
        s, t = paired(s, t, skip_stem=True)
        connected = [c(a) for c, a in zip(self.connectors, s, strict=True)]
        return {
            "ce": self.hp["ce_weight"] * F.cross_entropy(out.logits, batch.y),
            "ofd": self.hp["ofd_weight"] * ofd_loss(connected, t, self.margins()),
        }
