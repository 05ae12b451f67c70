"""What a deployable costs at inference, measured once per deployable and shared by every cell that ships it.

Parameters, shipped bytes, FLOPs per image and latency belong to a model's architecture and quantization, not to
the cell that trained it: two cells with the same student must report the same numbers, and measuring them in
every cell would only add noise (and time). So they are measured once per key (the model's structure, its shipped
bytes, the input shape, the device and its model, the torch threads and version, and the measuring code) and kept
as a small JSON file under `<results_dir>/deployables/`, written once: the first writer wins, so cells measuring
one deployable at the same moment still all read the same numbers. A cell's teacher is measured the same way,
interleaved with its student when both are new, so that teacher and student latency come from the same conditions.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn

from kdbench import env, metrics
from kdbench.errors import KdbenchWarning
from kdbench.record import files_digest, package_root
from kdbench.results import atomic_write_once

FOLDER = "deployables"
SUFFIX = ".deployable"  # JSON, but not named *.json: under a results folder those are records
MEASURING_SOURCES = ("metrics.py", "deployables.py")
LARGE_BATCH = 256
# module attributes that shape the computation without showing in the state dict's tensor shapes
SHAPE_ATTRIBUTES = ("kernel_size", "stride", "padding", "dilation", "groups", "output_size", "ceil_mode")


@dataclass(frozen=True)
class Costs:
    """A deployable's inference costs; latencies in milliseconds, each a median with its interquartile range."""

    params: int
    bytes: int
    flops_per_image: int
    latency_ms_b1: float
    latency_ms_b1_iqr: float
    latency_ms_b256: float
    latency_ms_b256_iqr: float

    def latencies(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if k.startswith("latency_")}


def structure(model: nn.Module) -> str:
    """A digest of the model's structure, not of its weights: each module's class and shape-setting attributes,
    and each state-dict entry's name, shape, memory layout and type."""
    parts = []
    for name, module in model.named_modules():
        attrs = {a: getattr(module, a) for a in SHAPE_ATTRIBUTES if hasattr(module, a)}
        parts.append(f"{name} {type(module).__module__}.{type(module).__qualname__} {attrs}")
    for name, value in model.state_dict().items():
        kind = (
            f"{tuple(value.shape)} {tuple(value.stride())} {value.dtype}"
            if isinstance(value, torch.Tensor)
            else type(value).__name__
        )  # strides: a channels-last model runs other kernels
        parts.append(f"{name} {kind}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def measurement_key(
    model: nn.Module, nbytes: int, input_shape: tuple[int, ...], device: torch.device
) -> dict:
    """Everything a deployable's measurement depends on."""
    return {
        "structure": structure(model),
        "bytes": nbytes,
        "input_shape": list(input_shape),
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else env.cpu_model(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "measuring_code": files_digest(tuple(package_root() / name for name in MEASURING_SOURCES)),
    }


def _path(folder: Path, key: dict) -> Path:
    return folder / f"{hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]}{SUFFIX}"


def _read(path: Path) -> Costs | None:
    """The measurement kept at `path`; None when there is none, or an unreadable one (removed, to measure again)."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_bytes())
        return Costs(**{f.name: data[f.name] for f in fields(Costs)})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        warnings.warn(
            KdbenchWarning(f"unreadable deployable measurement {path} ({exc}); measuring again"), stacklevel=2
        )
        path.unlink(missing_ok=True)
        return None


def measure(
    models: dict[str, tuple[nn.Module, int]],
    input_shape: tuple[int, ...],
    device: torch.device,
    results_dir: str | Path,
    rounds: int = 10,
) -> dict[str, Costs]:
    """The costs of each named (model, shipped bytes) on `device`: those measured before from
    `<results_dir>/deployables/`, the others measured now (their latencies interleaved, over `rounds` blocks at
    batch 1 and a third as many at batch 256) and kept there."""
    folder = Path(results_dir) / FOLDER
    keys = {
        name: measurement_key(model, nbytes, input_shape, device) for name, (model, nbytes) in models.items()
    }
    paths = {name: _path(folder, key) for name, key in keys.items()}
    kept: dict[Path, Costs | None] = {}
    new = {}  # one name for each deployable not measured before (a student may share its teacher's architecture)
    for name, path in paths.items():
        if path not in kept:
            kept[path] = _read(path)
            if kept[path] is None:
                new[name] = models[name]
    if new:
        for name, costs in _measure_now(new, input_shape, device, rounds).items():
            text = json.dumps({"key": keys[name], **asdict(costs)}, indent=1, sort_keys=True)
            atomic_write_once(paths[name], text.encode())
            kept[paths[name]] = (
                _read(paths[name]) or costs
            )  # the first writer's, should another cell have won
    return {name: kept[path] for name, path in paths.items()}


def _measure_now(
    models: dict[str, tuple[nn.Module, int]], input_shape: tuple[int, ...], device: torch.device, rounds: int
) -> dict[str, Costs]:
    plain = {name: model for name, (model, _) in models.items()}
    small = metrics.latencies(plain, input_shape, 1, device, rounds)
    large = metrics.latencies(plain, input_shape, LARGE_BATCH, device, max(3, rounds // 3), warmup=1)
    return {
        name: Costs(
            metrics.count_parameters(model),
            nbytes,
            metrics.flops_per_image(model, input_shape, device),
            small[name].median_ms,
            small[name].iqr_ms,
            large[name].median_ms,
            large[name].iqr_ms,
        )
        for name, (model, nbytes) in models.items()
    }
