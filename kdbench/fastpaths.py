"""The device's fast paths: the memory format models compute in, bf16 or fp16 autocast, and torch.compile.

Memory format. oneDNN (CPU) and cuDNN (GPU) convolutions are often faster on channels-last (NHWC) tensors, but not
always for small networks on small images, so `auto` measures it: a short probe times a training step of the run's
student with its teachers' inference forwards in each format, interleaved, and keeps channels-last only when it is
at least `PROBE_MARGIN` faster. The decision is cached as JSON per (architectures, input shape, batch size,
precision, device model, threads, torch version) under the kdbench cache folder, so every later run on the machine
reuses it and its records stay comparable. Only weights are converted: PyTorch runs a convolution in channels-last
when its input *or* its weight is, so the first convolution reorders the contiguous NCHW batch itself and every
layer after it stays channels-last; converting the batch as well would copy it once more. Teachers are trained in
fp32 and the contiguous format whatever the cell asks (the teacher cache's key does not name a layout); a cell only
runs them in its own.

Precision. `bf16` runs the method's loss terms (student forward, teacher inference, adapters) under
`torch.autocast(dtype=torch.bfloat16)`; backward and the SGD update stay outside it, on fp32 weights. Convolutions
and matrix products compute in bf16, but every model's logits are cast back to fp32 at its output, because on the
CPU autocast leaves softmax and log-softmax in bf16: the losses built on logits (cross-entropy, KL, DKD, the
methods' own softmaxes) are then computed in fp32, as with CUDA's autocast. `fp16` does the same in float16, on
CUDA only, with a gradient scaler (`grad_scaler`) around backward and the update.

Compile and cuDNN autotuning (`speed_up`): `torch.compile` of the student and the teachers (in place, so their
parameters, hooks and state keep their names), and `torch.backends.cudnn.benchmark`. Both are off by default;
neither is part of the cell id (like the memory format, they change how fast, not what is computed, up to the last
bits), and a record says which were on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench import env
from kdbench.data.catalog import DatasetInfo
from kdbench.errors import KdbenchError, check_choice
from kdbench.locks import Claim
from kdbench.metrics import _sync
from kdbench.models import create_model
from kdbench.results import atomic_write_text

PRECISIONS = ("fp32", "bf16", "fp16")
LOW_PRECISION = {"bf16": torch.bfloat16, "fp16": torch.float16}
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
LAYOUTS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
PROBE_MARGIN = (
    0.95  # channels-last must take at most 95% of the contiguous step: noise never flips the default
)
PROBE_FORMAT = 1  # the cached decision's file format; a change re-probes


def check_precision(precision: str, device: torch.device) -> str:
    """`precision` if the device computes it; bf16 on a device without bf16 kernels, or fp16 off CUDA (its loss
    scaling is CUDA's), is a one-line error naming the valid choices there."""
    check_choice("precision", precision, PRECISIONS)
    valid = [
        "fp32",
        *(["bf16"] if env.bf16_supported(device) else []),
        *(["fp16"] if device.type == "cuda" else []),
    ]
    if precision not in valid:
        need = "bf16 kernels" if precision == "bf16" else "a CUDA device (its gradient scaler)"
        raise KdbenchError(
            f"precision {precision!r} needs {need}, which {env.device_name(device)} lacks; "
            f"valid choices here: {', '.join(valid)}"
        )
    return precision


def check_memory_format(name: str) -> str:
    return check_choice("memory format", name, MEMORY_FORMATS)


def autocast(device_type: str, precision: str) -> AbstractContextManager:
    """The autocast context a training step's loss terms run under: none for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=LOW_PRECISION[precision])


def grad_scaler(precision: str) -> torch.amp.GradScaler | None:
    """fp16's dynamic loss scaling (its range is too narrow for small gradients); None for fp32 and bf16, whose
    range is fp32's."""
    return torch.amp.GradScaler("cuda") if precision == "fp16" else None


def _fp32_output(_module: nn.Module, _args: tuple, output: object) -> torch.Tensor | None:
    """Forward hook: a model's low-precision logits back in fp32, so the losses on them are computed in fp32."""
    if isinstance(output, torch.Tensor) and output.is_floating_point() and output.dtype != torch.float32:
        return output.float()
    return None


def to_layout(module: nn.Module, memory_format: str) -> nn.Module:
    """`module` with its 4-D weights in `memory_format` (channels_last or contiguous); returns it."""
    return module.to(memory_format=LAYOUTS[memory_format])


def prepare_model(model: nn.Module, memory_format: str, precision: str) -> nn.Module:
    """Put `model` (a whole network, whose output is its logits) in the run's memory format and, below fp32,
    make its logits fp32; returns it. Call it once per model (a deep copy keeps what it did)."""
    to_layout(model, memory_format)
    if precision != "fp32":
        model.register_forward_hook(_fp32_output)
    return model


def output_cache_tag(memory_format: str, precision: str) -> str:
    """What a teacher-output cache's name gets for a non-default layout or precision: outputs computed in bf16 or
    channels-last differ in their last bits from fp32 contiguous ones, so each arithmetic has its own cache."""
    return "" if (memory_format, precision) == ("contiguous", "fp32") else f"-{precision}-{memory_format}"


# ---- choosing the memory format -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProbeKey:
    """Everything the faster memory format of a run's step depends on."""

    student: str
    teachers: tuple[str, ...]
    num_classes: int
    in_chans: int
    image_size: int
    batch_size: int
    precision: str
    device: str  # the CPU or GPU model
    threads: int
    torch: str

    @classmethod
    def of(
        cls,
        student: str,
        teachers: tuple[str, ...],
        info: DatasetInfo,
        batch_size: int,
        precision: str,
        device: torch.device,
    ) -> ProbeKey:
        return cls(
            student,
            tuple(teachers),
            info.num_classes,
            info.in_chans,
            info.image_size,
            batch_size,
            precision,
            env.device_name(device),
            torch.get_num_threads(),
            torch.__version__,
        )

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:20]


def resolve_memory_format(requested: str, key: ProbeKey, device: torch.device, cache_dir: str | Path) -> str:
    """`channels_last` or `contiguous`: the requested one, or for `auto` the cached decision for `key`, probed
    (once per machine, other processes waiting for it) when there is none."""
    if check_memory_format(requested) != "auto":
        return requested
    path = Path(cache_dir) / "memory_format" / f"{key.digest()}.json"
    decision = _read_decision(path, key)
    if decision is not None:
        return decision
    with Claim(path.with_suffix(".lock")):
        decision = _read_decision(path, key)  # probed by another process while this one waited
        if decision is None:
            ms = probe_memory_format(key, device)
            decision = (
                "channels_last" if ms["channels_last"] <= PROBE_MARGIN * ms["contiguous"] else "contiguous"
            )
            atomic_write_text(
                path,
                json.dumps(
                    {
                        "format": PROBE_FORMAT,
                        "key": asdict(key),
                        "memory_format": decision,
                        "step_ms": ms,
                        "margin": PROBE_MARGIN,
                    },
                    indent=1,
                ),
            )
    return decision


def _read_decision(path: Path, key: ProbeKey) -> str | None:
    """The cached decision at `path`, or None when there is none usable (absent, unreadable, another key)."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    ok = (
        isinstance(stored, dict)
        and stored.get("format") == PROBE_FORMAT
        and stored.get("key") == json.loads(json.dumps(asdict(key)))
        and stored.get("memory_format") in LAYOUTS
    )
    return stored["memory_format"] if ok else None


def probe_memory_format(
    key: ProbeKey, device: torch.device, warmup: int = 2, repeats: int = 5
) -> dict[str, float]:
    """Median milliseconds of the probe step (`_probe_step`) in each format, timed interleaved with the order
    alternating every round, so drifting background load hits both alike. The global RNG is left untouched."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        steps = {layout: _probe_step(key, device, layout) for layout in LAYOUTS}
        for step in steps.values():
            for _ in range(warmup):
                step()
        times: dict[str, list[float]] = {layout: [] for layout in steps}
        for r in range(repeats):
            for layout in sorted(steps, reverse=bool(r % 2)):
                times[layout].append(_timed(steps[layout], device))
    return {layout: 1000 * statistics.median(t) for layout, t in times.items()}


def _timed(step: Callable[[], None], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    step()
    _sync(device)
    return time.perf_counter() - start


def _probe_step(key: ProbeKey, device: torch.device, layout: str) -> Callable[[], None]:
    """One distillation-shaped step in `layout`: every teacher's inference forward, then the student's
    cross-entropy step (forward, backward, SGD), on one random batch."""

    def build(arch: str) -> nn.Module:
        return prepare_model(
            create_model(arch, key.num_classes, key.in_chans).to(device), layout, key.precision
        )

    student = build(key.student).train()
    teachers = [build(arch).eval() for arch in key.teachers]
    opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(key.batch_size, key.in_chans, key.image_size, key.image_size, device=device)
    y = torch.randint(0, key.num_classes, (key.batch_size,), device=device)

    def step() -> None:
        with autocast(device.type, key.precision):
            with torch.inference_mode():
                for teacher in teachers:
                    teacher(x)
            loss = F.cross_entropy(student(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def speed_up(
    models: list[nn.Module], device: torch.device, compile_models: bool, cudnn_benchmark: bool
) -> None:
    """Compile `models` in place and/or let cuDNN pick the fastest convolution algorithms for the run's shapes."""
    if cudnn_benchmark and device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if compile_models:
        for model in models:
            model.compile()
