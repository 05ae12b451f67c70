"""Tables and statistics on a small folder of fake records: replicates are seeds, copies count once, stale and
collapsed runs are left out, the survey's Table 4 is transcribed whole, and the notebooks survive an empty
folder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from kdbench import readme, stats, tables
from kdbench.frame import load_frame, main_setting, on_pair, with_reference
from kdbench.methods import METHODS, TECHNIQUES
from kdbench.record import current_code_version

ROOT = Path(__file__).resolve().parents[1]
PAIRS = (("cifar_resnet20", "cifar_resnet8"), ("cifar_vgg8", "cifar_resnet8"))
SEEDS = (0, 1, 2)
# top-1 over the baseline, per method, pair index and seed: known boosts to check the pooling against
BOOST = {"kd": (2.0, 4.0), "dkd": (1.0, 3.0), "fitnet": (0.5, 0.5), "qkd": (1.0, 1.0)}


def record(method: str, seed: int, teacher: str | None, top1: float, **extra) -> dict:
    """A record with the fields the tables and figures read."""
    teachers = [teacher] if teacher else []
    return {
        "cell_id": f"{method}-{teacher}-{seed}-{extra.get('variant', '')}-{extra.get('copy', 0)}",
        "status": "ok",
        "method": method,
        "variant": "",
        "dataset": "fashion-mnist",
        "student": "cifar_resnet8",
        "teacher": teacher,
        "teachers": teachers,
        "seed": seed,
        "epochs": 4,
        "compare_to": "baseline",
        "config": {
            "label_noise": 0.0,
            "imbalance_ratio": 1.0,
            "train_subset": 3000,
            "teachers": teachers,
            "teacher_epochs": 12,
            "seed": seed,
            "method": method,
        },
        "student_top1": top1,
        "teacher_top1": 80.0 if teacher else None,
        "best_top1": top1 + 0.5,
        "epoch_top1": [top1 * (e + 1) / 4 for e in range(4)],
        "train_time_s": 10.0 * (2 if teacher else 1),
        "standalone_train_time_s": 10.0 * (2 if teacher else 1),
        "train_samples_per_s": 300.0,
        "train_flops_per_sample": 1e8 * (3 if teacher else 1),
        "deployable_bytes": 330_000,
        "teacher_bytes": 1_100_000 if teacher else None,
        "latency_ms_b1": 0.7,
        "teacher_latency_ms_b1": 1.0 if teacher else None,
        "extra_params": 0,
        "student_params": 77_754,
        "peak_memory_bytes": 5e7,
        "finished_at": f"2026-11-24T09:{seed:02d}:00+0000",
        "code_version": current_code_version(method),
        **{k: v for k, v in extra.items() if k != "copy"},
    }


def fake_records() -> list[dict]:
    out = []
    for seed in SEEDS:
        base = 60.0 + 3 * seed
        # the old grid: the teacher-free baseline and qat filed once per pair, identical but for the teacher
        for i, (teacher, _) in enumerate(PAIRS):
            out.append(record("baseline", seed, teacher, base, copy=i))
            out.append(record("qat", seed, teacher, base - 5, copy=i))
        # the new grid: once, without a teacher
        out.append(record("dml", seed, None, base + 1.0, extra_params=77_754))
        for i, (teacher, _) in enumerate(PAIRS):
            for method in ("kd", "dkd", "fitnet"):
                out.append(record(method, seed, teacher, base + BOOST[method][i]))
            out.append(record("qkd", seed, teacher, base - 5 + BOOST["qkd"][i], compare_to="qat"))
    # stale: written by other code than the current
    out.append(record("kd", 1, PAIRS[0][0], 99.0, stale=True, code_version={"package": "0.0.0"}, copy=9))
    out.append(
        record("at", 0, PAIRS[0][0], math.nan, status="failed", error="ZeroDivisionError", failed_step=0)
    )
    out.append(record("at", 1, PAIRS[0][0], 11.0))  # collapsed: within 5 pts of chance (10%)
    return out


def write_results(folder: Path, records: list[dict]) -> Path:
    (folder / "records").mkdir(parents=True, exist_ok=True)
    for r in records:
        (folder / "records" / f"{r['cell_id']}.json").write_text(json.dumps(r))
    return folder


@pytest.fixture
def frame(tmp_path):
    return load_frame(write_results(tmp_path / "fake", fake_records()))


def test_t_critical_is_exact_for_integer_df():
    for df, value in {1: 12.7062, 2: 4.3027, 4: 2.7764, 10: 2.2281, 30: 2.0423, 100: 1.9840}.items():
        assert stats.t_critical(df) == pytest.approx(value, abs=1e-4)
    assert math.isnan(stats.t_critical(0))


def test_mean_ci_by_hand_and_single_value():
    mean, half, n = stats.mean_ci([1.0, 2.0, 3.0])
    assert (mean, n) == (2.0, 3) and half == pytest.approx(4.302653 / 3**0.5, rel=1e-5)
    assert math.isnan(stats.mean_ci([5.0])[1]) and stats.mean_ci([math.nan])[2] == 0
    assert stats.fmt(1.234, math.nan) == "+1.23" and stats.fmt(-1.0, 0.5) == "-1.00 ± 0.50"


@pytest.mark.parametrize(
    "top1, classes, collapsed",
    [
        (14.9, 10, True),
        (15.1, 10, False),
        (3.0, 10, True),
        (5.9, 100, True),
        (6.5, 100, False),
        (math.nan, 10, False),
    ],
)
def test_is_collapsed(top1, classes, collapsed):
    assert stats.is_collapsed(top1, classes) is collapsed


def test_teacher_free_copies_count_once(frame):
    baseline = frame[frame["method"] == "baseline"]
    assert len(baseline) == len(SEEDS) and baseline["teacher"].isna().all()
    assert frame.attrs["copies_dropped"] == 2 * len(SEEDS)  # a copy of baseline and of qat per seed
    methods = tables.method_table(frame).set_index(["method", "pair"])
    assert methods.loc[("baseline", "—→resnet8"), "seeds"] == len(SEEDS)


def test_boost_joins_the_reference_whatever_the_teacher(frame):
    joined = with_reference(main_setting(frame))
    kd = joined[joined["method"] == "kd"]
    assert len(kd) == len(SEEDS) * len(PAIRS)  # the stale record is not among them
    assert sorted(kd.groupby("pair")["boost"].mean().round(6)) == [2.0, 4.0]
    qkd = joined[joined["method"] == "qkd"]
    assert qkd["ref_top1"].notna().all()  # against qat, on the same student and seed


def test_a_pair_trained_longer_is_its_own_pair_with_its_own_reference(tmp_path):
    """A folder whose second pair trains for 8 epochs: that pair's runs, and the student alone at 8 epochs, are
    named with their length, and each boost is over the reference of the same length."""
    records = []
    for seed in SEEDS:
        records += [record("baseline", seed, None, 60.0), record("kd", seed, PAIRS[0][0], 62.0)]
        longer = {"epochs": 8, "epoch_top1": [70.0] * 8, "copy": 1}
        records += [
            record("baseline", seed, None, 70.0, **longer),
            record("kd", seed, PAIRS[1][0], 71.0, **longer),
        ]
    df = load_frame(write_results(tmp_path / "two-lengths", records))
    table = tables.method_table(df).set_index(["method", "pair"])
    assert table.loc[("baseline", "—→resnet8, 4 epochs"), "top-1 (%)"].startswith("60.00")
    assert table.loc[("baseline", "—→resnet8, 8 epochs"), "top-1 (%)"].startswith("70.00")
    assert table.loc[("kd", "resnet20→resnet8, 4 epochs"), "boost (pts, 95% CI)"].startswith("+2.00")
    assert table.loc[("kd", "vgg8→resnet8, 8 epochs"), "boost (pts, 95% CI)"].startswith("+1.00")
    runs = on_pair(df, PAIRS[1][0], PAIRS[1][1], 8)
    assert set(runs["epochs"]) == {8} and set(runs["method"]) == {"baseline", "kd"}


def test_a_later_reference_run_replaces_an_earlier_one(tmp_path):
    rerun = record("baseline", 0, None, 70.0, finished_at="2026-11-25T00:00:00+0000")
    rerun["config"]["recipe"] = {"lr": 0.05}  # not a copy: another run of the same reference cell
    df = load_frame(write_results(tmp_path / "rerun", [*fake_records(), rerun]))
    joined = with_reference(main_setting(df))
    kd = joined[(joined["method"] == "kd") & (joined["seed"] == 0)]
    assert len(kd) == len(PAIRS) and (kd["ref_top1"] == 70.0).all()


def test_technique_n_counts_seeds_not_methods_or_pairs(frame):
    table = tables.table4(frame).set_index("technique")
    response = table.loc["Response-Based KD"]  # kd and dkd on two pairs: 12 runs, 3 seeds
    assert response["seeds"] == len(SEEDS) and response["runs"] == 12
    # per seed: the mean over (kd, dkd) on each pair, then over pairs; every seed gives (3.0 + 2.0 ... ) / 4
    joined = with_reference(main_setting(frame))
    per_seed = tables.per_seed(joined.query("method in ['kd', 'dkd']"), "boost")
    assert list(per_seed.index) == list(SEEDS) and per_seed.round(6).eq(2.5).all()
    assert response["boost pooled (pts, 95% CI)"] == "+2.50 ± 0.00"


def test_stale_failed_and_collapsed_runs_are_counted_and_left_out(frame):
    methods = tables.method_table(frame).set_index(["method", "pair"])
    at = methods.loc[("at", "resnet20→resnet8")]
    assert (at["failed"], at["collapsed"], at["seeds"], at["top-1 (%)"]) == (1, 1, 0, "failed")
    assert methods.loc[("kd", "resnet20→resnet8"), "top-1 (%)"].startswith("65.00 ±")  # not the stale 99
    note = tables.exclusion_note(frame)
    assert "1 stale" in note and "1 failed" in note and "1 collapsed" in note
    assert f"{2 * len(SEEDS)} copies" in note


def test_single_seed_says_so(tmp_path):
    one = [r for r in fake_records() if r["seed"] == 0 and not r.get("stale")]
    df = load_frame(write_results(tmp_path / "one", one))
    row = tables.method_table(df).set_index(["method", "pair"]).loc[("kd", "vgg8→resnet8")]
    assert row["boost (pts, 95% CI)"] == "+4.00 (single seed)" and "single seed" in row["top-1 (%)"]


def test_rank_labels_terciles_and_top_outlier():
    values = {f"t{i}": float(i) for i in range(9)}
    labels = tables.rank_labels(values)
    picked = [labels[f"t{i}"] for i in (0, 2, 3, 5, 6, 8)]
    assert picked == ["Low", "Low", "Moderate", "Moderate", "High", "High"]
    assert tables.rank_labels({**values, "t9": 100.0})["t9"] == "Very High"
    assert tables.rank_labels({"a": 1.0, "b": 2.0}, higher=False) == {"a": "High", "b": "Low"}
    assert tables.rank_labels({"a": math.nan, "b": 1.0})["a"] == "—"


def test_survey_ranges_accept_either_end():
    assert tables.survey_levels("Moderate-High") == {"Moderate", "High"}
    assert tables.survey_levels("Low-Moderate") == {"Low", "Moderate"}
    assert tables.survey_levels("Very High") == {"Very High"}


def test_survey_table4_is_transcribed_whole():
    survey = tables.survey_labels()
    assert list(survey) == list(TECHNIQUES)
    vocabulary = {"Low", "Moderate", "High", "Very High"}
    for row in survey.values():
        assert set(row) == {*tables.KINDS, "ideal_use_cases", "key_trade_off"}
        assert all(tables.survey_levels(row[k]) <= vocabulary for k in tables.KINDS)
        assert row["ideal_use_cases"] and row["key_trade_off"]
    assert survey["Quantized KD"]["resource_efficiency"] == "Very High"
    assert survey["NAS-Based Distillation"]["computational_complexity"] == "Very High"
    assert tables.survey_source()["doi"] == "10.1016/j.mlwa.2024.100605"


def test_table4_marks_agreement_and_readme_counts_it(frame, tmp_path):
    table = tables.table4(frame)
    marks = table[[c for c in table.columns if c.endswith(": agree")]].to_numpy().ravel()
    assert set(marks) <= {"✔", "✘", "n/a"} and (marks != "n/a").sum() > 0
    agree, compared, total = tables.agreement(table)
    assert total == 45 and compared == (marks != "n/a").sum() and agree == (marks == "✔").sum()
    folder = tmp_path / "fake"
    tables.write_table(folder, "table4", table, tables.NOTES["table4"](frame))
    section = readme.table4_section(folder)
    assert f"{agree} of its 45 labelled cells ({compared} measured)" in section
    assert "Moslemi" in section and "→" in section


def test_empty_frame_gives_empty_tables(tmp_path):
    df = load_frame(tmp_path / "nothing")
    assert df.empty and tables.method_table(df).empty and tables.robustness_table(df).empty
    assert tables.failed_table(df).empty and len(tables.table4(df)) == len(TECHNIQUES)
    assert len(tables.catalogue_table(df)) == len(METHODS)


def run_notebook(name: str, results_dir: Path) -> dict:
    """Run a notebook's code cells in this process (its parameters cell first, then `results_dir` set)."""
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    namespace: dict = {}
    for cell in nb.cells:
        if cell.cell_type == "code":
            exec(compile(cell.source, f"{name}.ipynb", "exec"), namespace)
            if "parameters" in cell.metadata.get("tags", []):
                namespace["results_dir"] = str(results_dir)
    return namespace


@pytest.mark.parametrize("name", ["03_table4", "04_beyond_compression", "05_figures"])
def test_notebooks_stop_gracefully_without_records(name, tmp_path, capsys):
    namespace = run_notebook(name, tmp_path / "empty")
    assert namespace["records"] is False and "no records yet" in capsys.readouterr().out
    assert not (tmp_path / "empty").exists()  # nothing written for an empty folder


def test_table4_notebook_writes_its_tables(tmp_path):
    folder = write_results(tmp_path / "fake", fake_records())
    run_notebook("03_table4", folder)
    text = (folder / "tables" / "table4.md").read_text()
    assert "Pooling: The replicate is the seed" in text and "1 stale records" in text
    assert pd.read_csv(folder / "tables" / "methods.csv")["method"].str.contains("kd").any()
