"""What a record measures: accuracy, calibration, agreement, parameters, size, FLOPs, latency, memory."""

from __future__ import annotations

import copy
import io
import os
import statistics
import threading
import time

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from kdbench.data.loader import BatchStream


@torch.inference_mode()
def predict(model: nn.Module, stream: BatchStream) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels for every sample of an (unaugmented) stream, on the CPU."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for batch in stream.epoch(0):
        logits.append(model(batch.x).float().cpu())
        labels.append(batch.y.cpu())
    model.train(was_training)
    return torch.cat(logits), torch.cat(labels)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    return 100.0 * (logits.argmax(1) == labels).float().mean().item()


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE (Guo et al. 2017): |accuracy - confidence| averaged over equal-width confidence bins, in percent."""
    conf, pred = logits.softmax(1).max(1)
    correct = (pred == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = torch.zeros(())
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            ece += inside.float().mean() * (correct[inside].mean() - conf[inside].mean()).abs()
    return 100.0 * ece.item()


def agreement(a_logits: torch.Tensor, b_logits: torch.Tensor) -> float:
    """Percentage of samples on which two models predict the same class (teacher–student fidelity)."""
    return 100.0 * (a_logits.argmax(1) == b_logits.argmax(1)).float().mean().item()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of the serialised state dict: what shipping the model costs on disk."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def flops_per_image(model: nn.Module, input_shape: tuple[int, ...], device: torch.device | str = "cpu") -> int:
    """Forward FLOPs for one image, counted by `torch.utils.flop_counter` (a multiply-add counts 2)."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.zeros(1, *input_shape, device=device))
    model.train(was_training)
    return int(counter.get_total_flops())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def latency_ms(
    model: nn.Module, input_shape: tuple[int, ...], batch_size: int, device: torch.device | str = "cpu",
    repeats: int = 10, warmup: int = 2,
) -> float:
    """Median wall time of one forward pass of a `batch_size` batch, in milliseconds, after warm-up."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    x = torch.randn(batch_size, *input_shape, device=device)
    times = []
    for i in range(warmup + repeats):
        _sync(device)
        start = time.perf_counter()
        model(x)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    model.train(was_training)
    return 1000.0 * statistics.median(times)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory used inside the block, above what was in use at its start.

    CUDA: the allocator's own peak. CPU (Linux): resident set size sampled every 10 ms by a background thread,
    since torch has no CPU allocator statistics; it includes everything the process allocates meanwhile, and
    memory the allocator already holds from earlier runs in the process is not counted again (so it is an
    absolute figure to read with care, not one to divide by another run's).
    """

    def __init__(self, device: torch.device | str, interval_s: float = 0.01) -> None:
        self.device = torch.device(device)
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        elif os.path.exists("/proc/self/statm"):
            self._base = self._max = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._max = max(self._max, _rss_bytes())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        elif hasattr(self, "_thread"):
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self._max, _rss_bytes()) - self._base


def training_step_flops(method: nn.Module, batch) -> int:
    """FLOPs of one training step per sample: the auxiliary step and the main step, forward and backward,
    teacher inference and adapters included (the optimiser update is not counted). Runs on a copy of the
    method so its state (buffers, running statistics, per-sample memories) is left as it was."""
    clone = copy.deepcopy(method)
    counter = FlopCounterMode(display=False)
    with counter:
        aux = clone.auxiliary_loss(batch)
        if aux:
            sum(aux.values()).backward()
        sum(clone.loss_terms(batch).values()).backward()
    return int(counter.get_total_flops()) // len(batch)
