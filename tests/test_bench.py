"""The training-step bench on a tiny stream: its table, its ratios, what it finds to time, and perf.md."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from kdbench import results
from kdbench.bench import bench, features_fit_output_cache
from kdbench.cli import main
from kdbench.engine import RECIPES, Recipe
from kdbench.models import create_model
from kdbench.perf_report import target_lines, write_perf
from kdbench.timing import Settings
from tests.helpers import tiny_profile

COLUMNS = {
    "method",
    "step_ms",
    "samples_per_s",
    "vs_baseline",
    "student_ms",
    "teachers_ms",
    "modules_ms",
    "ideal_ms",
    "vs_ideal",
    "ideal_target",
    "setup_s",
    "peak_memory_mb",
    "student_step",
    "teachers_timed",
    "modules_timed",
}
TINY = tiny_profile("bench-tiny", ("baseline", "kd", "fitnet"), recipe="bench-tiny")


@pytest.fixture(scope="module")
def frame(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(RECIPES, "bench-tiny", Recipe("bench-tiny", 1, 32, 0.05))
        out = bench(
            TINY,
            device="cpu",
            settings=Settings(warmup=1, repeats=2, steps=2),
            cache_dir=tmp_path_factory.mktemp("cache"),
            progress=False,
        )
    return out.set_index("method", drop=False)


def test_table_has_every_method_and_column(frame):
    assert COLUMNS <= set(frame.columns)
    assert {"baseline", "kd", "fitnet"} <= set(frame.index)
    assert frame.attrs["env"]["device"] == "cpu" and frame.attrs["batch_size"] == 32


def test_ratios_positive_and_baseline_is_its_own_reference(frame):
    for column in ("vs_baseline", "vs_ideal", "step_ms", "ideal_ms", "samples_per_s"):
        assert all(math.isfinite(v) and v > 0 for v in frame[column]), column
    base = frame.loc["baseline"]
    assert base["vs_baseline"] == 1.0 and base["vs_ideal"] == 1.0 and base["teachers_ms"] == 0
    assert base["ideal_target"] == "" and frame.loc["kd", "ideal_target"] in ("met", "not met")
    assert frame.loc["kd", "ideal_ms"] == pytest.approx(frame.loc["kd", ["student_ms", "teachers_ms"]].sum())


def test_probe_finds_teachers_features_and_adapters(frame):
    kd, fitnet = frame.loc["kd"], frame.loc["fitnet"]
    assert kd["teachers_timed"] == "cifar_resnet14" and kd["teachers_ms"] > 0 and kd["modules_timed"] == ""
    assert fitnet["teachers_timed"] == "cifar_resnet14 +features"
    assert fitnet["modules_timed"] == "regressor" and fitnet["modules_ms"] > 0
    assert kd["student_step"] == "baseline"


def test_cached_rows_run_no_teacher(frame):
    for name in (
        "kd (cached teacher outputs)",
        "fitnet (cached teacher outputs)",
    ):  # tiny: features fit the budget
        cached = frame.loc[name]
        assert cached["teachers_timed"] == "" and cached["teachers_ms"] == 0 and cached["vs_baseline"] > 0
    assert "baseline (cached teacher outputs)" not in frame.index


def test_features_over_the_output_cache_budget_are_not_cacheable(fashion, tiny_stream):
    teacher = create_model("cifar_resnet14", fashion.info.num_classes, fashion.info.in_chans).eval()
    batch = next(tiny_stream.epoch(0))
    assert features_fit_output_cache([teacher], {0}, batch, batches=1)
    assert not features_fit_output_cache([teacher], {0}, batch, batches=10**6)
    assert features_fit_output_cache([teacher], set(), batch, batches=10**6)  # logits only: always kept


def test_perf_written_atomically_and_parses(frame, tmp_path, monkeypatch):
    path = write_perf(tmp_path, frame)
    text = path.read_text()
    rows = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert COLUMNS <= set(header) and len(rows) == 2 + len(frame)  # header, separator, one line per row
    assert "Targets" in text and frame.attrs["env"]["torch"] in text
    assert pd.read_csv(tmp_path / "perf.csv")["method"].tolist() == frame["method"].tolist()

    def interrupted(_fd):
        raise OSError("disk gone")

    monkeypatch.setattr(results.os, "fsync", interrupted)
    with pytest.raises(OSError):
        write_perf(tmp_path, frame.iloc[:1])
    assert path.read_text() == text, "a failed write must leave the previous perf.md whole"
    assert len(pd.read_csv(tmp_path / "perf.csv")) == len(frame)
    assert not list(tmp_path.glob(".*.tmp")), "temporary files left behind"


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "--profile", "smoke", "--methods", "nope"],
        ["bench", "--profile", "smoke", "--repeats", "0"],
        ["bench", "--profile", "nope"],
    ],
)
def test_cli_user_errors(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("kdbench: error:") and len(err.strip().splitlines()) == 1


def test_features_over_budget_get_a_held_row_not_a_cached_one(tmp_path):
    """Above the cache's budget the grid recomputes features, so no `cached` row may claim otherwise; the `held`
    row serves them anyway, splitting the step into its teacher forward and the rest."""
    import kdbench.bench as bench_module

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(RECIPES, "bench-tiny", Recipe("bench-tiny", 1, 32, 0.05))
        mp.setattr(bench_module, "DEFAULT_FEATURE_BUDGET_BYTES", 1)
        frame = bench(
            TINY,
            methods=["baseline", "fitnet"],
            device="cpu",
            settings=Settings(0, 1, 1),
            cache_dir=tmp_path,
            progress=False,
        ).set_index("method", drop=False)
    assert "fitnet (cached teacher outputs)" not in frame.index
    held = frame.loc["fitnet (teacher outputs held in memory)"]
    assert (
        held["teachers_ms"] == 0
        and held["modules_timed"] == "regressor"
        and held["ideal_target"] in ("met", "not met")
    )
    assert "exceeds the output cache's budget" in frame.loc["fitnet", "note"]
    assert "(teacher outputs held in memory) within" in "\n".join(target_lines(frame))
