"""Pre-activation stage features: what each `feature_info` stage holds before its last ReLU, read off the model's
forward pass with hooks (no model is rewritten), for methods that transfer where neurons switch on (AB).

RepDistiller's models return these when called with `preact=True`; here they are found by walking the model's
modules from the stage names its `feature_info` gives, and checked on a probe forward pass:

- a stage ending in one of kdbench's blocks that apply a functional ReLU: the block's value before it, rebuilt
  from hooked parts (ResNet's BasicBlock and ShuffleNetV1's unit: residual branch + shortcut, concatenated when the
  unit downsamples; ShuffleNetV2's unit: the passed-through half and the branch before its last ReLU, concatenated
  and shuffled like the output);
- a stage whose output is what a ReLU *module* returned (a stem's `act1`, a VGG block, WRN's `act_out`, the blocks
  of timm's ResNets): that module's input;
- a stage that ends with no ReLU: a MobileNetV2 linear bottleneck is its own pre-activation (RepDistiller returns
  those stages unchanged); a WRN stage, which the next pre-activation block batch-normalises before its first ReLU,
  has that batch norm's output (RepDistiller's wrn.py: `block2.layer[0].bn1(f1)`).

For the stages that end with a ReLU, relu(pre-activation) is the stage's output; the probe checks that it is. Any
other stage (most timm models) is a one-line KdbenchError naming it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.errors import KdbenchError
from kdbench.models.features import Outputs, feature_modules, forward_with_features
from kdbench.models.mobilenetv2 import InvertedResidual
from kdbench.models.resnet import BasicBlock
from kdbench.models.shufflenet import ChannelShuffle, ShuffleV1Unit, ShuffleV2Unit
from kdbench.models.wrn import PreActBlock


@dataclass(frozen=True)
class Read:
    """One tensor a hook keeps: a module's first input (a forward pre-hook; cloned when the module works in place,
    as a ReLU(inplace=True) overwrites it) or its output (a forward hook)."""

    module: nn.Module
    what: str  # "input" or "output"


@dataclass(frozen=True)
class PreactTap:
    """How one stage's pre-activation is read: the tensors to keep during the forward pass and how they combine."""

    rule: str  # which of the rules above found it, for messages and tests
    reads: tuple[Read, ...]
    combine: Callable[[list[torch.Tensor]], torch.Tensor]
    rectified: bool  # the stage's output is relu(pre-activation)


def _first(parts: list[torch.Tensor]) -> torch.Tensor:
    return parts[0]


def _sum(parts: list[torch.Tensor]) -> torch.Tensor:
    return parts[0] + parts[1]


def _concat(parts: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(parts, 1)


def _shuffle_join(groups: int, parts: list[torch.Tensor]) -> torch.Tensor:
    """ShuffleNetV2's unit output before its ReLU: the unit's input's first half, the branch, shuffled."""
    return ChannelShuffle(groups)(torch.cat([parts[0].chunk(2, dim=1)[0], parts[1]], 1))


def _hook(read: Read, slots: list[torch.Tensor | None], i: int) -> torch.utils.hooks.RemovableHandle:
    if read.what == "input":
        clone = bool(getattr(read.module, "inplace", False))

        def keep_input(_module: nn.Module, args: tuple) -> None:
            slots[i] = args[0].clone() if clone else args[0]

        return read.module.register_forward_pre_hook(keep_input)

    def keep_output(_module: nn.Module, _args: tuple, out: torch.Tensor) -> None:
        slots[i] = out

    return read.module.register_forward_hook(keep_output)


@contextmanager
def _reading(reads: Sequence[Read]) -> Iterator[list[torch.Tensor | None]]:
    """Hooks that fill one slot per read (its last value when a module runs twice) while the block is open."""
    slots: list[torch.Tensor | None] = [None] * len(reads)
    handles = [_hook(read, slots, i) for i, read in enumerate(reads)]
    try:
        yield slots
    finally:
        for handle in handles:
            handle.remove()


def stage_names(model: nn.Module) -> list[str]:
    """The module names of the model's `feature_info` stages, shallow to deep."""
    info = getattr(model, "feature_info", None)
    entries = info.info if hasattr(info, "info") else info or []
    return [e["module"] for e in entries]


def _last_block(stage: nn.Module) -> nn.Module:
    return stage[-1] if isinstance(stage, nn.Sequential) and len(stage) else stage


def _block_tap(stage: nn.Module) -> PreactTap | None:
    """kdbench's blocks whose last ReLU is functional: rebuild its input from the hooked parts."""
    block = _last_block(stage)
    if isinstance(block, BasicBlock):
        return PreactTap(
            "resnet block: bn2 + shortcut",
            (Read(block.bn2, "output"), Read(block.shortcut, "output")),
            _sum,
            True,
        )
    if isinstance(block, ShuffleV1Unit):
        join = _concat if block.stride == 2 else _sum
        return PreactTap(
            "shufflenetv1 unit: bn3 and shortcut",
            (Read(block.bn3, "output"), Read(block.shortcut, "output")),
            join,
            True,
        )
    if isinstance(block, ShuffleV2Unit):
        return PreactTap(
            "shufflenetv2 unit: kept half and branch before its ReLU",
            (Read(block, "input"), Read(block.branch[-1], "input")),
            functools.partial(_shuffle_join, block.shuffle.groups),
            True,
        )
    return None


@dataclass
class _Probe:
    """What one forward pass showed: each stage's output, every ReLU module's last output and every
    pre-activation block's input."""

    stages: list[torch.Tensor]
    relu_outputs: list[tuple[nn.Module, torch.Tensor]]
    preact_inputs: list[tuple[PreActBlock, torch.Tensor]]


def _probe(model: nn.Module, stages: list[nn.Module], example: torch.Tensor) -> _Probe:
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    blocks = [m for m in model.modules() if isinstance(m, PreActBlock)]
    reads = (
        [Read(s, "output") for s in stages]
        + [Read(m, "output") for m in relus]
        + [Read(b, "input") for b in blocks]
    )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _reading(reads) as slots:
            model(example)
    finally:
        model.train(was_training)
    n, r = len(stages), len(relus)
    return _Probe(
        stages=slots[:n],
        relu_outputs=[(m, out) for m, out in zip(relus, slots[n : n + r], strict=True) if out is not None],
        preact_inputs=[(b, x) for b, x in zip(blocks, slots[n + r :], strict=True) if x is not None],
    )


def _relu_tap(probe: _Probe, i: int) -> PreactTap | None:
    """The stage's output is the very tensor a ReLU module returned: that module's input."""
    for module, out in probe.relu_outputs:
        if out is probe.stages[i]:
            return PreactTap("relu module input", (Read(module, "input"),), _first, True)
    return None


def _linear_tap(stage: nn.Module, probe: _Probe, i: int) -> PreactTap | None:
    """A stage with no ReLU at its end: a linear bottleneck is its own pre-activation; a stage that a
    pre-activation block takes in has that block's first batch norm's output (the input of its first ReLU)."""
    if isinstance(_last_block(stage), InvertedResidual):
        return PreactTap("linear bottleneck output", (Read(stage, "output"),), _first, False)
    for block, x in probe.preact_inputs:
        if x is probe.stages[i]:
            return PreactTap("next pre-activation block's bn1", (Read(block.relu1, "input"),), _first, False)
    return None


def find_preact_taps(model: nn.Module, example: torch.Tensor) -> list[PreactTap]:
    """One tap per `feature_info` stage (rules in the module docstring), checked on `example` (a batch of the
    model's inputs) in evaluation mode, its training mode restored after. A stage no rule covers is a KdbenchError."""
    name = type(model).__name__
    names = stage_names(model)
    if not names:
        raise KdbenchError(f"{name} has no feature_info stages to read pre-activation features from")
    stages = feature_modules(model)
    probe = _probe(model, stages, example)
    taps = []
    for i, (stage_name, stage) in enumerate(zip(names, stages, strict=True)):
        tap = _block_tap(stage) or _relu_tap(probe, i) or _linear_tap(stage, probe, i)
        if tap is None:
            raise KdbenchError(
                f"cannot find the pre-activation (before its last ReLU) of stage {stage_name!r} of {name}: "
                "kdbench reads them from its own CIFAR architectures and from stages that end in a ReLU module"
            )
        taps.append(tap)
    _check(model, taps, names, example)
    return taps


def _check(model: nn.Module, taps: list[PreactTap], names: list[str], example: torch.Tensor) -> None:
    """relu(pre-activation) must be the output of every stage that ends in a ReLU."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out, pre = read_preacts(model, taps, example, stages=True)
    finally:
        model.train(was_training)
    for stage_name, tap, s, p in zip(names, taps, out.stages, pre, strict=True):
        if tap.rectified and not torch.allclose(F.relu(p), s, rtol=1e-5, atol=1e-6):
            raise KdbenchError(
                f"the pre-activation found for stage {stage_name!r} of {type(model).__name__} "
                f"({tap.rule}) does not rectify to the stage's output"
            )


def read_preacts(
    model: nn.Module, taps: list[PreactTap], x: torch.Tensor, stages: bool = False
) -> tuple[Outputs, list[torch.Tensor]]:
    """Run `model(x)` once: its outputs (with stage features when `stages`) and each tap's pre-activation."""
    reads = [read for tap in taps for read in tap.reads]
    with _reading(reads) as slots:
        out = forward_with_features(model, x, stages=stages, embedding=False)
    preacts, k = [], 0
    for tap in taps:
        parts = slots[k : k + len(tap.reads)]
        if any(p is None for p in parts):
            raise RuntimeError(
                f"a pre-activation hook ({tap.rule}) did not run in {type(model).__name__}'s forward"
            )
        preacts.append(tap.combine(parts))
        k += len(tap.reads)
    return out, preacts


class PreactFeatures:
    """A model's pre-activation stage features: found once (`find_preact_taps`), then `self(x)` runs the model and
    returns its outputs and the stages' pre-activations, differentiable like any feature."""

    def __init__(self, model: nn.Module, example: torch.Tensor) -> None:
        self.model = model
        self.taps = find_preact_taps(model, example)

    def __call__(self, x: torch.Tensor, stages: bool = False) -> tuple[Outputs, list[torch.Tensor]]:
        return read_preacts(self.model, self.taps, x, stages)
