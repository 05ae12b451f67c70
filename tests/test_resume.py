"""Epoch-level resume: a cell killed (SIGKILL, mid-write of its second checkpoint) and started again continues
from its last whole checkpoint, and ends with the record of a run that was never stopped."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kdbench import results

ROOT = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).with_name("crash_driver.py")


def _run(method: str, out: Path, cache: Path, kill_at: str = "") -> subprocess.CompletedProcess:
    teacher = [] if method == "pskd" else ["--teacher", "cifar_resnet14"]
    argv = [
        *("run", "--method", method, "--student", "cifar_resnet8", *teacher),
        *("--epochs", "3", "--train-subset", "128", "--test-subset", "100", "--checkpoint-every", "1"),
        *("--results-dir", str(out), "--cache-dir", str(cache), "--device", "cpu", "--quiet"),
        *("--memory-format", "contiguous", "--no-output-cache"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KDBENCH_TEST_KILL": kill_at, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(DRIVER), *argv], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def _record(out: Path) -> dict:
    (path,) = (out / "records").glob("*.json")
    return results.read_record(path)


@pytest.fixture(scope="module")
def teacher_cache(tmp_path_factory) -> Path:
    """One cache for the module: the teacher is trained once, by the first run that needs it."""
    return tmp_path_factory.mktemp("cache")


# kd: the plain case; crd: a memory bank in buffers and a draw counter in a plain attribute; pskd: its past
# predictions in non-persistent buffers (outside state_dict)
@pytest.mark.slow
@pytest.mark.parametrize("method", ["kd", "crd", "pskd"])
def test_killed_cell_resumes_from_its_checkpoint_to_the_same_record(method, tmp_path, teacher_cache):
    cache = teacher_cache
    done = _run(method, tmp_path / "reference", cache)
    assert done.returncode == 0, done.stderr
    reference = _record(tmp_path / "reference")
    assert reference["resumed_at_epoch"] is None
    assert not list(
        (tmp_path / "reference" / "checkpoints").glob("*.ckpt")
    )  # removed once the record is written

    out = tmp_path / "out"
    # the deployables' measurements (keyed by architecture, device and threads) are the reference's: timing the
    # same models again would only slow the test
    shutil.copytree(tmp_path / "reference" / "deployables", out / "deployables")
    killed = _run(method, out, cache, kill_at=".ckpt:2")  # after epoch 2, mid-write of the second checkpoint
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (out / "records").exists() or not list((out / "records").glob("*.json"))
    assert (
        len(list((out / "checkpoints").glob("*.ckpt"))) == 1
    )  # the first, whole; the second never renamed in

    resumed = _run(method, out, cache)
    assert resumed.returncode == 0, resumed.stderr
    record = _record(out)
    assert record["resumed_at_epoch"] == 1  # the first checkpoint is taken after epoch 0 (0-based)
    assert not list(
        (out / "checkpoints").glob("*.ckpt")
    )  # (the killed writer's hidden temporary file may stay)
    strip = {"resumed_at_epoch"}
    assert {k: v for k, v in results.comparable(record).items() if k not in strip} == {
        k: v for k, v in results.comparable(reference).items() if k not in strip
    }
