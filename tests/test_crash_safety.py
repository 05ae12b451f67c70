"""Kill a real grid run at several points, resume it, and get the records of an uninterrupted run; run two at
once on one folder; recover stale claims; keep a failing cell from taking the grid down."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdbench import grid, profiles, results, tables
from kdbench.frame import load_frame
from kdbench.locks import Claim
from tests.helpers import grid_argv, grid_yaml

ROOT = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).with_name("crash_driver.py")

TINY_GRID = grid_yaml(("kd", "fitnet"), seeds=(0, 1), train_subset=128, test_subset=200)
CELLS = 6  # kd, fitnet and their reference baseline, two seeds


def _grid_file(tmp_path: Path) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_GRID)
    return str(path)


def _start(grid_file: str, out: Path, cache: Path, kill_at: str = "") -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KDBENCH_TEST_KILL": kill_at, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(DRIVER), *grid_argv(grid_file, out, cache, "--memory-format", "contiguous")]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out + err


def _counts(log: str) -> dict[str, int]:
    """The grid's counts: the JSON line it prints on stdout (warnings may follow it on stderr)."""
    return json.loads([line for line in log.splitlines() if line.startswith("{")][-1])


def _records(out: Path) -> dict[str, dict]:
    """Every record, without its timings; reading them all also proves none is half-written."""
    return {
        p.name: results.comparable(results.read_record(p)) for p in sorted((out / "records").glob("*.json"))
    }


def _assert_clean(*folders: Path) -> None:
    """Nothing a reader could mistake for a result: no temporary files, every record and checkpoint whole."""
    for folder in folders:
        leftovers = [p for p in folder.rglob("*") if p.name.endswith(".tmp")]
        for p in leftovers:  # a killed writer may leave its temporary file; readers must never pick it up
            assert p.name.startswith("."), p
    for folder in folders:
        for p in folder.rglob("*.json"):
            json.loads(p.read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, dict]:
    """An uninterrupted run of the tiny grid."""
    tmp = tmp_path_factory.mktemp("reference")
    code, log = _finish(_start(_grid_file(tmp), tmp / "out", tmp / "cache"))
    assert code == 0, log
    records = _records(tmp / "out")
    assert len(records) == CELLS
    return records


def test_killed_at_every_kind_of_write_then_resumed_equals_uninterrupted(tmp_path, reference):
    grid_file, out, cache = _grid_file(tmp_path), tmp_path / "out", tmp_path / "cache"
    kills = [
        "teachers/*.safetensors:1",  # mid-write of the teacher checkpoint
        "teachers/*.json:1",  # weights renamed into place, their sidecar (the commit marker) not yet
        "records/*.json:3",  # mid-write of the third record
    ]
    for kill_at in kills:
        code, log = _finish(_start(grid_file, out, cache, kill_at))
        assert code == -signal.SIGKILL, f"{kill_at}: {log}"
        _assert_clean(out, cache)
    teachers = list((cache / "teachers").glob("*.safetensors"))
    assert len(teachers) == 1 and teachers[0].with_suffix(".json").exists()
    assert len(_records(out)) == 2  # the first two records survived the kill at the third

    # a kill at an arbitrary moment: as soon as a fourth record is in place, mid-way through the fifth cell
    proc = _start(grid_file, out, cache)
    while len(list((out / "records").glob("*.json"))) < 4 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    _finish(proc)
    _assert_clean(out, cache)

    code, log = _finish(_start(grid_file, out, cache))
    assert code == 0, log
    assert _counts(log)["skipped"] >= 4
    assert _records(out) == reference
    assert not list((out / "locks").glob("*.lock"))  # the dead runs' claims were recovered and released


def test_two_runs_at_once_share_the_work_without_corrupting_it(tmp_path, reference):
    grid_file, out, cache = _grid_file(tmp_path), tmp_path / "out", tmp_path / "cache"
    procs = [_start(grid_file, out, cache) for _ in range(2)]
    finished = [_finish(p) for p in procs]
    assert [code for code, _ in finished] == [0, 0], finished
    counts = [_counts(log) for _, log in finished]
    assert sum(c["ok"] for c in counts) == CELLS  # every cell ran exactly once between the two runs
    assert _records(out) == reference
    assert len(list((cache / "teachers").glob("*.safetensors"))) == 1
    _assert_clean(out, cache)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_claims_are_exclusive_and_stale_ones_are_recovered(tmp_path):
    path = tmp_path / "cell.lock"
    first, second = Claim(path), Claim(path)
    assert first.try_acquire() and not second.try_acquire()
    first.release()
    assert second.try_acquire()
    second.release()

    host = socket.gethostname()
    path.write_text(json.dumps({"host": host, "pid": _dead_pid(), "token": "x"}))
    assert Claim(path).try_acquire()  # owner died on this host: broken at once

    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "x"}))
    assert not Claim(path, stale_after_s=60).try_acquire()  # another host's owner with a fresh heartbeat
    old = time.time() - 120
    os.utime(path, (old, old))
    assert Claim(path, stale_after_s=60).try_acquire()  # its heartbeat stopped

    path.write_text("")  # a creator killed before writing its name
    os.utime(path, (old, old))
    assert Claim(path, stale_after_s=60).try_acquire()


def test_heartbeat_keeps_a_long_claim_fresh(tmp_path):
    claim = Claim(tmp_path / "cell.lock", heartbeat_s=0.05)
    assert claim.try_acquire()
    old = time.time() - 1000
    os.utime(claim.path, (old, old))
    time.sleep(0.3)
    assert time.time() - claim.path.stat().st_mtime < 10
    claim.release()
    assert not claim.path.exists()


def test_failing_cells_are_recorded_and_shown_while_the_grid_goes_on(tmp_path, monkeypatch):
    """A loss that turns NaN (with its step) and an exception inside a method each give a failed record."""
    from kdbench.methods.response import KD

    real = KD.loss_terms

    def diverging(self, batch):
        terms = real(self, batch)
        terms["kd"] = terms["kd"] * float("nan")  # the grid's single batch per epoch: step 0
        return terms

    monkeypatch.setattr(KD, "loss_terms", diverging)
    monkeypatch.setattr("kdbench.methods.feature.FitNet.loss_terms", lambda self, batch: 1 / 0)
    profile = profiles.load_profile(_grid_file(tmp_path))
    counts = grid.run_grid(
        profile, tmp_path / "out", device="cpu", cache_dir=tmp_path / "cache", progress=False
    )
    assert counts["failed"] == 4 and counts["ok"] == 2  # both kd and both fitnet cells failed; baseline ran
    df = load_frame(tmp_path / "out")
    failed = tables.failed_table(df)
    assert set(failed["method"]) == {"kd", "fitnet"}
    kd = failed[failed["method"] == "kd"]
    assert kd["error"].str.contains("non-finite at step 0").all() and (kd["failed_step"] == 0).all()
    assert failed[failed["method"] == "fitnet"]["error"].str.contains("ZeroDivisionError").all()
    method_table = tables.method_table(df)
    assert {"kd", "fitnet"} <= set(method_table["method"])  # shown as failed, not dropped
