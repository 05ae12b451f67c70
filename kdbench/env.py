"""The environment a record was measured in, so every number says where it came from."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch

import kdbench
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
        raise KdbenchError(f"device {name!r} requested but no CUDA GPU is visible; valid choices here: auto, cpu")
    if colon and int(index) >= visible:
        raise KdbenchError(f"device {name!r} requested but {visible} CUDA GPU(s) are visible; valid choices here: "
                           f"auto, cpu, cuda, cuda:0 to cuda:{visible - 1}")
    return torch.device(name)
