"""Timing training steps: fixed batches made once, the engine's own step on them, and several steps timed
interleaved so that a drift in background load hits them alike.

`kdbench.bench` (what a method's step costs against its ideal step) and the claims' timing experiment
(`kdbench.claims.steptime`) both time through these.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from kdbench.data.loader import Batch, BatchStream
from kdbench.engine import begin_training, get_recipe, optimizers, place, start_task, train_step
from kdbench.errors import KdbenchError
from kdbench.methods import Method
from kdbench.metrics import _sync

Step = Callable[[int], object]  # one call on the i-th fixed batch


@dataclass(frozen=True)
class Settings:
    """How long to measure: `warmup` untimed calls, then `repeats` timed passes over `steps` fixed batches."""

    warmup: int = 3
    repeats: int = 5
    steps: int = 5

    def check(self) -> None:
        if self.warmup < 0 or self.repeats < 1 or self.steps < 1:
            raise KdbenchError(
                f"bench needs warmup >= 0, repeats >= 1 and steps >= 1; got warmup={self.warmup}, "
                f"repeats={self.repeats}, steps={self.steps}"
            )


def interleaved_medians(steps: dict[str, Step], settings: Settings, device: torch.device) -> dict[str, float]:
    """Median seconds per call of each step: `warmup` untimed calls each, then `repeats` rounds in each of which
    every step makes one timed pass over the fixed batches."""
    for step in steps.values():
        for i in range(settings.warmup):
            step(i % settings.steps)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(settings.repeats):
        for name, step in steps.items():
            _sync(device)
            start = time.perf_counter()
            for i in range(settings.steps):
                step(i)
            _sync(device)
            times[name].append((time.perf_counter() - start) / settings.steps)
    return {name: statistics.median(t) for name, t in times.items()}


def fixed_batches(stream: BatchStream, count: int) -> list[Batch]:
    """The first `count` training batches of epochs 0, 1, ... (a short task has fewer in one epoch), made once
    so that making them is never timed."""
    if len(stream) == 0:
        raise KdbenchError("the training stream has no batches to time")
    batches = itertools.chain.from_iterable(stream.epoch(e) for e in itertools.count())
    return list(itertools.islice(batches, count))


def training_step(method: Method, batches: list[Batch], recipe_name: str) -> Step:
    """The engine's training step on the i-th batch, with the optimisers the engine would build."""
    opt, aux_opt = optimizers(method, get_recipe(recipe_name))
    return lambda i: train_step(method, batches[i], opt, aux_opt)


def ready(method: Method, stream: BatchStream) -> tuple[BatchStream, str]:
    """What training does before the first step (untimed here): placement, the method's setup work, the first
    task of a sequence, the first epoch's start. Returns the stream the steps draw from and a note."""
    place(method, stream.device)
    tasks = begin_training(method, stream)
    if tasks:
        stream = start_task(method, stream, tasks, 0)
    method.epoch = 0
    method.on_epoch_start(0)
    return stream, f"first of {len(tasks)} tasks timed" if tasks else ""
