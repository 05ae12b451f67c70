"""One record schema for finished and failed cells, the code version every record carries, stale records (marked by
`results.load`, kept or rerun by a grid), and corrupt records."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from kdbench import grid, profiles, record, results
from kdbench.cli import main
from kdbench.errors import KdbenchError, KdbenchWarning
from kdbench.record import SCHEMA_VERSION, Record, current_code_version, is_stale, method_files
from kdbench.runner import RunConfig
from tests.helpers import grid_argv, grid_yaml

TINY_GRID = grid_yaml()
FIELDS = {f.name for f in dataclasses.fields(Record)}
# what the tables, claims and plots read from a record
READ_BY_TABLES = {
    "status",
    "method",
    "variant",
    "compare_to",
    "technique",
    "teacher",
    "student",
    "seed",
    "epochs",
    "config",
    "student_top1",
    "teacher_top1",
    "deployable_bytes",
    "teacher_bytes",
    "latency_ms_b1",
    "teacher_latency_ms_b1",
    "train_time_s",
    "standalone_train_time_s",
    "train_samples_per_s",
    "train_flops_per_sample",
    "extra_params",
    "peak_memory_bytes",
    "error",
    "failed_step",
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A results folder holding the record of a one-cell grid, with the grid file and teacher cache that made it."""
    root = tmp_path_factory.mktemp("records")
    grid_file = root / "tiny.yaml"
    grid_file.write_text(TINY_GRID)
    counts = grid.run_grid(
        profiles.load_profile(grid_file), root / "out", device="cpu", cache_dir=root / "cache", progress=False
    )
    assert counts["ok"] == 1 and counts["stale"] == 0
    return root


def _only_record(out) -> tuple:
    (path,) = (out / "records").glob("*.json")
    return path, results.read_record(path)


def test_finished_and_failed_cells_write_one_schema(finished):
    _, rec = _only_record(finished / "out")
    assert set(rec) == FIELDS, set(rec) ^ FIELDS
    cfg = profiles.all_cells(profiles.load_profile(finished / "tiny.yaml"))[0]
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError as exc:  # as a method raises it: the record keeps its traceback
        failed = grid._failed_record(cfg, exc, "cpu")
    assert set(failed) == FIELDS
    for r in (rec, failed):
        assert r["schema"] == SCHEMA_VERSION and r["code_version"] == current_code_version("baseline")
        assert READ_BY_TABLES <= set(r)
    assert rec["status"] == "ok" and rec["error"] is None and rec["latency_ms_b1_iqr"] >= 0
    assert failed["status"] == "failed" and failed["error"] == "ZeroDivisionError: division by zero"
    assert "ZeroDivisionError" in failed["traceback"] and failed["failed_step"] is None
    assert (
        failed["cell_id"] == rec["cell_id"]
        and failed["student_top1"] is None
        and failed["env"]["device"] == "cpu"
    )


def test_code_version_names_the_methods_own_source():
    kd, dkd, baseline = (current_code_version(m) for m in ("kd", "dkd", "baseline"))
    assert kd["package"] and kd["core"] == baseline["core"] and len(kd["method"]) == record.DIGEST_CHARS
    assert kd["method"] == dkd["method"]  # one source file
    assert kd["method"] != baseline["method"]
    from kdbench.methods import get_method

    names = {p.name for p in method_files(get_method("kd"))}
    assert names == {"response.py", "base.py"}


def test_records_of_other_code_are_stale():
    assert is_stale({"method": "kd"})  # written before records had a code version
    assert is_stale({"method": "gone", "code_version": current_code_version("kd")})
    assert is_stale({"method": "kd", "code_version": {**current_code_version("kd"), "method": "0" * 12}})
    assert not is_stale({"method": "kd", "code_version": current_code_version("kd")})


def test_code_verified_equivalent_to_the_current_writes_current_records(monkeypatch):
    now = current_code_version("kd")
    older = {**now, "core": "core-v1", "method": "kd-v1"}
    oldest = {**now, "core": "core-v0", "method": "kd-v0"}
    assert is_stale({"method": "kd", "code_version": older})
    chain = {
        "core": {"core-v0": "core-v1", "core-v1": now["core"]},
        "kd": {"kd-v0": "kd-v1", "kd-v1": now["method"]},
    }
    monkeypatch.setattr(record, "code_equivalences", lambda: chain)
    assert not is_stale({"method": "kd", "code_version": older})
    assert not is_stale({"method": "kd", "code_version": oldest})  # followed through every verified step
    assert is_stale({"method": "dkd", "code_version": {**older, "method": "kd-v1"}})  # verified for kd only
    assert is_stale({"method": "kd", "code_version": {**older, "package": "0.0.0"}})
    monkeypatch.setattr(record, "code_equivalences", lambda: {"core": {"a": "b", "b": "a"}})
    assert is_stale({"method": "kd", "code_version": {**now, "core": "a"}})  # a cycle ends, it does not hang


def test_stale_cells_are_marked_kept_and_rerun_on_request(finished, tmp_path, monkeypatch, capsys):
    out, cache, grid_file = tmp_path / "out", finished / "cache", str(finished / "tiny.yaml")
    shutil.copytree(finished / "out", out)
    path, before = _only_record(out)
    assert not results.load(out)["stale"].any()

    real = record.current_code_version
    monkeypatch.setattr(
        record, "current_code_version", lambda method: {**real(method), "core": "changed code"}
    )
    assert results.load(out)["stale"].all() and results.load(out, current_only=True).empty

    with pytest.warns(KdbenchWarning, match="1 finished cells .* --rerun-stale"):
        counts = grid.run_grid(
            profiles.load_profile(grid_file), out, device="cpu", cache_dir=cache, progress=False
        )
    assert counts["stale"] == 1 and counts["skipped"] == 1 and counts["ok"] == 0
    assert results.read_record(path) == before  # kept as it was

    capsys.readouterr()
    code = main(grid_argv(grid_file, out, cache, "--rerun-stale"))
    counts = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and counts["stale"] == 1 and counts["ok"] == 1 and counts["skipped"] == 0
    rerun = results.read_record(path)
    assert rerun["code_version"]["core"] == "changed code" and rerun["finished_at"] >= before["finished_at"]
    frame = results.load(out, current_only=True)
    assert len(frame) == 1 and not frame["stale"].any()


@pytest.mark.parametrize("text", ['{"status": "ok", ', "[1, 2]", "\xff"])
def test_a_corrupt_record_is_a_one_line_error_naming_it(tmp_path, text):
    cfg = RunConfig(method="baseline", student="cifar_resnet8")
    path = results.record_path(tmp_path, cfg.cell_id())
    path.parent.mkdir()
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(KdbenchError) as err:
        results.load(tmp_path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    assert not grid.is_finished(cfg, tmp_path)  # a grid runs its cell again, replacing it


CODE = '''"""A module."""


def scale(x, factor=2):
    """Twice x, by default."""
    return x * factor  # the whole job
'''


def test_code_version_ignores_layout_and_docs_but_not_code():
    """Reformatting, comments and docstrings leave a record current; a changed value or operation does not."""
    same = (
        "def scale(x,factor = 2):\n    return (x*factor)\n",
        CODE.replace("Twice x, by default.", "Doubles x.").replace("  # the whole job", ""),
    )
    changed = (CODE.replace("factor=2", "factor=3"), CODE.replace("x * factor", "x + factor"))
    assert all(record.code_text(text) == record.code_text(CODE) for text in same)
    assert all(record.code_text(text) != record.code_text(CODE) for text in changed)


def test_a_profile_reuses_the_current_records_of_cells_it_shares(finished, tmp_path, monkeypatch):
    (cfg,) = profiles.all_cells(profiles.load_profile(finished / "tiny.yaml"))
    source = finished / "out"
    path, record_before = _only_record(source)
    assert grid.reuse_records([cfg], tmp_path / "copy", [source]) == 1
    assert results.read_record(tmp_path / "copy" / path.relative_to(source)) == record_before
    assert grid.reuse_records([cfg], tmp_path / "copy", [source]) == 0  # already there

    real = record.current_code_version
    monkeypatch.setattr(record, "current_code_version", lambda method: {**real(method), "core": "changed"})
    assert grid.reuse_records([cfg], tmp_path / "stale", [source]) == 0  # other code's records run again
    assert not (tmp_path / "stale").exists()


def test_the_claims_reuse_the_cpu_grids_cells():
    assert profiles.EXPERIMENTS["claims"].reuses == ("cpu",)
    claims = {c.cell_id() for c in profiles.all_cells(profiles.EXPERIMENTS["claims"])}
    assert claims & {c.cell_id() for c in profiles.all_cells(profiles.PROFILES["cpu"])}


def test_first_difference_ignores_timings_environment_and_code_version(finished):
    """Two runs of a cell with equal results compare equal whatever their times and environments; a moved number
    is named."""
    base = json.loads(next((finished / "out" / "records").glob("*.json")).read_text())
    rerun = {
        **base,
        "train_time_s": base["train_time_s"] + 5,
        "env": {**base["env"], "allocator": "glibc-tuned"},
        "code_version": {"core": "other"},
        "finished_at": "2030-01-01T00:00:00+0000",
    }
    assert results.first_difference(base, rerun) is None
    assert (
        results.first_difference(base, {**rerun, "student_top1": base["student_top1"] + 0.01})
        == "student_top1"
    )
