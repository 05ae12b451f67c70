"""What a record measures: accuracy, calibration, agreement, parameters, size, FLOPs, latency, memory."""

from __future__ import annotations

import copy
import ctypes
import gc
import io
import math
import statistics
from dataclasses import dataclass

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


def flops_per_image(
    model: nn.Module, input_shape: tuple[int, ...], device: torch.device | str = "cpu"
) -> int:
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


@dataclass(frozen=True)
class Latency:
    """Wall time of one forward pass in milliseconds: the median over timed blocks and its interquartile range."""

    median_ms: float
    iqr_ms: float


BLOCK_S = 0.01  # a timed block repeats the call for at least this long: clock resolution and overhead vanish


@torch.inference_mode()
def latencies(
    models: dict[str, nn.Module],
    input_shape: tuple[int, ...],
    batch_size: int,
    device: torch.device | str = "cpu",
    rounds: int = 10,
    warmup: int = 2,
    threads: int | None = None,
) -> dict[str, Latency]:
    """The forward-pass latency of each model on a `batch_size` batch, timed by `torch.utils.benchmark.Timer`
    (which synchronises an accelerator) on `threads` torch threads (default: the current number), after
    `warmup` untimed calls. The models are interleaved: each of the `rounds` times one block of every model in
    turn, so a drift in background load (another process, clock scaling) hits them alike instead of one of them;
    median and spread are over the rounds' per-call times."""
    # imported here: it imports torch's C++ extension builder, which logs a warning on machines with a CUDA
    # toolkit but no GPU; every kdbench command would print it otherwise
    from torch.utils import benchmark

    device = torch.device(device)
    threads = threads or torch.get_num_threads()
    timers, numbers, times = {}, {}, {}
    modes = {name: model.training for name, model in models.items()}
    for name, model in models.items():
        model.eval()
        x = torch.randn(batch_size, *input_shape, device=device)
        timer = benchmark.Timer("model(x)", globals={"model": model, "x": x}, num_threads=threads)
        if warmup:
            timer.timeit(warmup)
        timers[name], times[name] = timer, []
        numbers[name] = max(1, math.ceil(BLOCK_S / timer.timeit(1).mean))
    for _ in range(rounds):
        for name, timer in timers.items():
            times[name].append(timer.timeit(numbers[name]).mean)
    for name, model in models.items():
        model.train(modes[name])
    return {name: _summary(t) for name, t in times.items()}


def _summary(seconds: list[float]) -> Latency:
    q1, _, q3 = statistics.quantiles(seconds, n=4, method="inclusive") if len(seconds) > 1 else (seconds * 3)
    return Latency(1000.0 * statistics.median(seconds), 1000.0 * (q3 - q1))


def latency_ms(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int,
    device: torch.device | str = "cpu",
    repeats: int = 10,
    warmup: int = 2,
) -> float:
    """The median latency of one model (`latencies`), in milliseconds."""
    return latencies({"model": model}, input_shape, batch_size, device, repeats, warmup)["model"].median_ms


def release_memory(device: torch.device | str) -> None:
    """Hand freed memory back to the system: memory an earlier run left to the allocator would otherwise be
    reused unseen by the next, whose resident-set growth would then depend on what ran before it."""
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (
        OSError,
        AttributeError,
    ):  # not glibc: freed heap memory stays resident, and peaks may be understated
        pass


CLEAR_REFS = "/proc/self/clear_refs"
STATUS = "/proc/self/status"


def _status_bytes(field: str) -> int:
    """A `kB` line of /proc/self/status (VmRSS, VmHWM), in bytes."""
    with open(STATUS) as fh:
        for line in fh:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no {field} in {STATUS}")


def reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark (VmHWM) to the current resident set; False where the
    kernel does not allow it (not Linux, before Linux 4.0, or a sandbox that refuses the write)."""
    try:
        with open(CLEAR_REFS, "w") as fh:
            fh.write("5")
        return _status_bytes("VmHWM") > 0
    except OSError:
        return False


class PeakMemory:
    """Peak memory used inside the block, above what was in use at its start; `peak_bytes` None where it cannot
    be measured.

    CUDA: the allocator's own peak. CPU (Linux): the kernel's resident-set high-water mark (VmHWM), which it
    tracks exactly (no sampling can miss a short peak), reset at the start after freed memory has been handed
    back to the system (`release_memory`), so neither memory an earlier run left to the allocator nor an earlier
    peak of the process changes the figure: it does not depend on what ran before in the process. It counts
    everything the process maps meanwhile, other threads included. Without the reset the mark is the peak of the
    process's whole life, which does depend on what ran before, so then no figure is given (None).
    """

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.peak_bytes: int | None = None
        self._base: int | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            release_memory(self.device)
            self._base = _status_bytes("VmHWM") if reset_peak_rss() else None
        return self

    def __exit__(self, *exc) -> None:
        if self._base is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self.peak_bytes = _status_bytes("VmHWM") - self._base


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
        sum(clone.step_terms(batch).values()).backward()
    return int(counter.get_total_flops()) // len(batch)
