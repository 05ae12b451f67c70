"""Epoch-level resume: a long cell saves its whole training state every `every` epochs, atomically, and a cell
started again after a crash or a kill continues from the last one instead of from epoch 0.

What is saved is everything the next epoch reads: the method's parameters and buffers (the non-persistent ones
too, such as PS-KD's past predictions), the plain attributes of the method and its submodules (counters such as
CRD's draw count, the current epoch), the optimisers, the scheduler, every random generator, the fit's running
statistics, and the caller's own state (the per-epoch test accuracies). The batch stream needs nothing: each epoch's
order and augmentation are seeded by the epoch. So on a CPU, a resumed cell ends with the same numbers as one that
was never stopped; its timings are the sum over the processes and are flagged by the record's `resumed_at_epoch`.

The method's `before_training` (an init stage, a synthesis, a search) runs again on resume, since it builds
structure the saved state is loaded into; it is then overwritten by the saved state, so only its time is spent twice.
Methods with a task sequence (lifelong) are not resumed: a task's entry has side effects outside this state.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from kdbench.results import atomic_write_bytes

FORMAT = 1
PLAIN = (bool, int, float, str, type(None))


def _plain(value: Any) -> bool:
    """Whether an attribute is plain data a checkpoint can carry (and loading it back cannot break a module)."""
    if isinstance(value, PLAIN):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def module_state(method: nn.Module) -> dict[str, Any]:
    """Parameters, every buffer (persistent or not) and the plain attributes of each submodule, by name."""
    tensors = {f"p:{k}": v.detach().clone() for k, v in method.named_parameters()}
    tensors |= {f"b:{k}": v.detach().clone() for k, v in method.named_buffers()}
    plain = {
        name: {k: v for k, v in vars(m).items() if not k.startswith("_") and k != "training" and _plain(v)}
        for name, m in method.named_modules()
    }
    return {"tensors": tensors, "plain": plain}


def load_module_state(method: nn.Module, state: dict[str, Any]) -> None:
    """Put `module_state`'s values back, in place (a buffer whose size changed during training is replaced)."""
    params, buffers = dict(method.named_parameters()), dict(method.named_buffers())
    with torch.no_grad():
        for key, value in state["tensors"].items():
            kind, name = key.split(":", 1)
            if kind == "p":
                params[name].copy_(value)
            elif buffers[name].shape == value.shape:
                buffers[name].copy_(value)
            else:
                owner, _, attr = name.rpartition(".")
                setattr(
                    method.get_submodule(owner) if owner else method, attr, value.to(buffers[name].device)
                )
    modules = dict(method.named_modules())
    for name, attrs in state["plain"].items():
        for k, v in attrs.items():
            setattr(modules[name], k, v)


def rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


@dataclass
class Checkpoint:
    """Where a cell's training state goes, how often, and the caller's own state (`extra` to save it,
    `restore_extra` to put it back)."""

    path: Path
    every: int
    extra: Callable[[], dict[str, Any]] = dict
    restore_extra: Callable[[dict[str, Any]], None] = lambda _state: None

    def due(self, epoch: int, epochs: int) -> bool:
        """After epoch `epoch` (0-based) of `epochs`: every `every` epochs, never after the last (the record
        follows at once)."""
        return self.every > 0 and (epoch + 1) % self.every == 0 and epoch + 1 < epochs

    def save(self, state: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save({"format": FORMAT, **state, "rng": rng_state(), "extra": self.extra()}, buffer)
        atomic_write_bytes(self.path, buffer.getvalue())

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when there is none (or it is from another checkpoint format)."""
        if not self.path.exists():
            return None
        state = torch.load(self.path, map_location="cpu", weights_only=False)  # written by this module only
        if state.get("format") != FORMAT:
            return None
        self.restore_extra(state["extra"])
        return state

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
