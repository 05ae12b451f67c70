"""The environment a record was measured in, so every number says where it came from."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch

import kdbench
from kdbench.allocator import allocator
from kdbench.errors import KdbenchError


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    """The kdbench checkout's commit, or None when installed from a wheel or git is missing."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(kdbench.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def device_name(device: torch.device) -> str:
    """The GPU model on CUDA, else the CPU model: what a measured speed belongs to."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def bf16_supported(device: torch.device) -> bool:
    """Whether the device has bf16 kernels: a bf16-capable GPU, or a CPU oneDNN runs bf16 on (AVX-512 BW/VL/DQ,
    whose bf16 instructions, AVX512-BF16 or AMX, it uses where present; Arm's bf16 extension)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def describe(device: torch.device) -> dict[str, object]:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {
        "kdbench": kdbench.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "device_name": device_name(device),
        "cpu": cpu_model(),
        "gpu": gpu,
        "threads": torch.get_num_threads(),
        "bf16_supported": bf16_supported(device),
        "allocator": allocator(),  # it changes timings, never results (kdbench.allocator)
        "git_commit": git_commit(),
    }


DEVICES = "auto, cpu, cuda, cuda:N (N a GPU index)"


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; asking for CUDA without a GPU is a user error, not a silent fallback."""
    kind, colon, index = name.partition(":")
    if kind not in ("auto", "cpu", "cuda") or (colon and (kind != "cuda" or not index.isdigit())):
        raise KdbenchError(f"unknown device {name!r}; valid choices: {DEVICES}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    visible = torch.cuda.device_count() if kind == "cuda" and torch.cuda.is_available() else 0
    if kind == "cuda" and not visible:
        raise KdbenchError(
            f"device {name!r} requested but no CUDA GPU is visible; valid choices here: auto, cpu"
        )
    if colon and int(index) >= visible:
        raise KdbenchError(
            f"device {name!r} requested but {visible} CUDA GPU(s) are visible; valid choices here: "
            f"auto, cpu, cuda, cuda:0 to cuda:{visible - 1}"
        )
    return torch.device(name)
