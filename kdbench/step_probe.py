"""What one training step of a method runs, found by watching it (`Probe`): how often each teacher runs a forward
pass, which teachers it asks for features and whether a teacher-output cache could serve those requests, and every
call of the method's own modules besides the student (`own_modules`: regressors, peers, heads, discriminators,
generators), each kept with detached copies of its inputs so that `kdbench.bench` can time it alone
(`Call.step`).
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from torch.utils._pytree import tree_leaves, tree_map

from kdbench.data.loader import Batch
from kdbench.fastpaths import autocast
from kdbench.methods import Method
from kdbench.timing import Step


def own_modules(method: Method) -> list[tuple[str, nn.Module]]:
    """The method's own networks besides the student: its direct children with parameters (regressors,
    discriminators, generators, projectors; a frozen one, such as a trained teacher assistant, named so), module
    lists opened into their members (peers, heads). Teachers are not submodules; parameter-free children (input
    transforms) are part of the student's own step."""
    found = []
    for name, child in method.named_children():
        if child is method.student:
            continue
        members = (
            child.named_children() if isinstance(child, (nn.ModuleList, nn.ModuleDict)) else [("", child)]
        )
        for key, module in members:
            params = list(module.parameters())
            if params:
                label = (f"{name}.{key}" if key else name) + (
                    "" if any(p.requires_grad for p in params) else " (frozen)"
                )
                found.append((label, module))
    return found


def _detached(value: Any) -> Any:
    """Copies of the tensors in a call's arguments, cut from the graph but needing a gradient exactly where the
    originals did, so a timed backward reaches what the real one reached."""
    return tree_map(
        lambda t: t.detach().clone().requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t,
        value,
    )


@dataclass
class Call:
    """One call of one of the method's own modules during the probe step, with detached copies of its inputs."""

    name: str
    module: nn.Module
    args: tuple
    kwargs: dict[str, Any]
    device_type: str = "cpu"
    precision: str = "fp32"  # the forward is autocast as in the training step, the backward is not

    def step(self) -> Step:
        """This call alone: forward and backward (gradients of ones on every output that needs them), or an
        inference forward when nothing in it needs a gradient."""
        leaves = [
            t
            for t in tree_leaves((self.args, self.kwargs, list(self.module.parameters())))
            if isinstance(t, torch.Tensor) and t.requires_grad
        ]
        if not leaves:
            return torch.inference_mode()(lambda _i: self.forward())

        def run(_i: int) -> None:
            for t in leaves:
                t.grad = None
            out = [t for t in tree_leaves(self.forward()) if isinstance(t, torch.Tensor) and t.requires_grad]
            torch.autograd.backward(out, [torch.ones_like(t) for t in out])

        return run

    def forward(self) -> Any:
        with autocast(self.device_type, self.precision):
            return self.module(*self.args, **self.kwargs)


class Probe:
    """Watches one training step: how often each teacher runs a forward pass, which teachers a method asked for
    features and how often for a whole `Batch` (what a teacher-output cache can serve), and every call of the
    method's own modules besides the student, with its inputs."""

    def __init__(self, method: Method) -> None:
        self.method = method
        self.forwards: Counter[int] = Counter()
        self.batch_requests: Counter[int] = Counter()
        self.features: set[int] = set()
        self.calls: list[Call] = []
        self._handles: list[Any] = []

    @property
    def teachers_run(self) -> list[int]:
        return sorted(self.forwards)

    @property
    def cacheable(self) -> bool:
        """Whether every teacher forward came from a request a teacher-output cache could have served."""
        return bool(self.forwards) and all(n <= self.batch_requests[i] for i, n in self.forwards.items())

    def __enter__(self) -> Probe:
        for i, teacher in enumerate(self.method.teachers):
            self._handles.append(teacher.register_forward_pre_hook(lambda *_, i=i: self.forwards.update([i])))
        for name, module in own_modules(self.method):
            self._handles.append(module.register_forward_hook(self._capture(name), with_kwargs=True))
        original = self.method.teacher_outputs
        signature = inspect.signature(original)

        def recorded(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            index = bound.arguments.get("index", 0)
            if bound.arguments.get("features"):
                self.features.add(index)
            if isinstance(bound.args[0], Batch):
                self.batch_requests.update([index])
            return original(*args, **kwargs)

        self.method.teacher_outputs = recorded  # an instance attribute shadows the method while probing
        return self

    def __exit__(self, *exc: object) -> None:
        del self.method.teacher_outputs
        for handle in self._handles:
            handle.remove()

    def _capture(self, name: str) -> Callable:
        setup = self.method.setup

        def hook(module: nn.Module, args: tuple, kwargs: dict, _output: Any) -> None:
            self.calls.append(
                Call(name, module, _detached(args), _detached(kwargs), setup.device.type, setup.precision)
            )

        return hook
