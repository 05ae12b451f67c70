"""The environment a record was measured in, so every number says where it came from."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch

import kdbench
from kdbench.errors import KdbenchError, check_choice


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
            ["git", "rev-parse", "HEAD"], cwd=Path(kdbench.__file__).parent, capture_output=True, text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def describe(device: torch.device) -> dict[str, object]:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {
        "kdbench": kdbench.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "device_name": gpu or cpu_model(),
        "cpu": cpu_model(),
        "gpu": gpu,
        "threads": torch.get_num_threads(),
        "git_commit": git_commit(),
    }


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; asking for CUDA without a GPU is a user error, not a silent fallback."""
    check_choice("device", name.split(":")[0], ["auto", "cpu", "cuda"])
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise KdbenchError(f"device {name!r} requested but no CUDA GPU is available; valid choices here: auto, cpu")
    return torch.device(name)
