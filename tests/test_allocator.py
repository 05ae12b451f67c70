"""The allocator settings kdbench trains with: applied on glibc, never over a user's own, named in records."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest
import torch

from kdbench import allocator, env


def _glibc() -> bool:
    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallopt")
    except OSError:
        return False


@pytest.mark.skipif(not _glibc(), reason="glibc's mallopt only")
def test_applied_on_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in allocator.USER_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    assert allocator._apply() == "glibc-tuned"


@pytest.mark.parametrize("name", allocator.USER_SETTINGS)
def test_users_settings_left_alone(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "1")
    assert allocator._apply() == "user"


def test_a_fresh_process_reports_what_it_did() -> None:
    """Once per process: before the call records say "default", after it what was applied."""
    code = (
        "from kdbench import allocator as a; before = a.allocator(); now = a.keep_freed_memory(); "
        "print(before, now, a.keep_freed_memory() == now == a.allocator())"
    )
    clean = {k: v for k, v in os.environ.items() if k not in allocator.USER_SETTINGS}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=clean
    ).stdout.split()
    assert out[0] == "default" and out[2] == "True"
    assert out[1] == ("glibc-tuned" if _glibc() else "default")


def test_records_name_the_allocator() -> None:
    assert env.describe(torch.device("cpu"))["allocator"] == allocator.allocator()
