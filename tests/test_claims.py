"""The claims: every claim's cells resolve on a tiny budget; the verdict rule on known inputs; every analysis, table
and figure on synthetic records (with directions set by hand for some claims); one end-to-end mini run."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import nbformat
import numpy as np
import pandas as pd
import pytest

from kdbench import claims, notebooks, profiles, results
from kdbench.claims.relation_cost import RELATION_METHODS
from kdbench.claims.steptime import Timing
from kdbench.runner import RunConfig

ROOT = Path(__file__).resolve().parents[1]

SMOKE = claims.smoke_profile()
THREE = claims.Budget(dataclasses.replace(SMOKE, seeds=(0, 1, 2)))  # smallest sweeps, 3 replicates
BY_KEY = {c.key: c for c in claims.CLAIMS}


def test_claims_profile_is_registered_on_the_cpu_budget():
    profile = profiles.get_profile("claims")
    cpu = profiles.get_profile("cpu")
    for name in (
        "dataset",
        "recipe",
        "epochs",
        "teacher_epochs",
        "train_subset",
        "teacher_train_subset",
        "test_subset",
        "teacher_seed",
    ):
        assert getattr(profile, name) == getattr(cpu, name), name
    assert set(profile.seeds) <= set(
        cpu.seeds
    )  # fewer seeds: a claim adds its own where its effect needs them
    ids = [c.cell_id() for c in profiles.all_cells(profile)]
    assert len(ids) == len(set(ids)) and len(ids) == len(claims.all_cells(profile))
    assert profiles.profile_summary(profile)["cells"] == len(ids)


def test_run_all_runs_the_claims_notebook():
    assert notebooks.notebooks_for("claims") == [notebooks.CLAIMS_NOTEBOOK]
    assert (
        notebooks.CLAIMS_NOTEBOOK in notebooks.JOB_NOTEBOOKS
        and notebooks.notebooks_for("cpu") == notebooks.NOTEBOOKS
    )
    nb = nbformat.read(ROOT / "notebooks" / f"{notebooks.CLAIMS_NOTEBOOK}.ipynb", as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and all(
        f"{name} =" in params[0].source
        for name in ("profile", "device", "results_dir", "executor", "workers")
    )


@pytest.mark.parametrize("claim", claims.CLAIMS, ids=lambda c: c.key)
def test_every_claim_has_cells_that_resolve(claim):
    b = claims.Budget(SMOKE)
    cells, timings = claim.cells(b), claim.timings(b)
    assert cells or timings
    for cfg in [*cells, *(t.cell for t in timings)]:
        resolved = cfg.resolve()
        assert resolved["epochs"] == 1 and cfg.train_subset == 128 and cfg.test_subset == 200
    assert claim.survey, "the survey's wording comes from survey_table4.yaml"


def test_verdict_rule_on_known_inputs():
    assert claims.verdict(2.0, 1.0, 3) == claims.SUPPORTED
    assert claims.verdict(-2.0, 1.0, 3) == claims.NOT_SUPPORTED
    assert claims.verdict(0.5, 1.0, 3) == claims.INCONCLUSIVE
    assert claims.verdict(5.0, math.nan, 1) == claims.INCONCLUSIVE  # one replicate has no interval
    assert claims.verdict(math.nan, math.nan, 0) == claims.INCONCLUSIVE


def test_promising_zone_is_where_two_more_seeds_would_decide():
    # 3 seeds: half-width h; with 5 seeds and the same spread it would be h * t(4)/t(2) * sqrt(3/5) = 0.50 h
    assert claims.promising(1.0, 1.5, 3)  # 1.0 > 0.75: two more seeds would exclude 0
    assert not claims.promising(0.5, 1.5, 3)  # small against its spread: they would not
    assert not claims.promising(-2.0, 1.0, 3)  # decided already
    assert not claims.promising(1.0, math.nan, 1)


class _Toy(claims.Claim):
    """A claim whose effect is each seed's baseline top-1 minus 80 (not registered)."""

    number, key, techniques = 99, "toy", ("Response-Based KD",)

    def design(self, b: claims.Budget) -> list[claims.Entry]:
        return [b.baseline(seed) for seed in b.seeds]

    def analyse(self, frame: pd.DataFrame) -> claims.Finding:
        return claims.Finding(frame.set_index("seed")["student_top1"] - 80, frame)

    def draw(self, frame: pd.DataFrame) -> plt.Figure:
        return plt.figure()


@pytest.mark.parametrize(
    "top1, extended", [({0: 81.5, 1: 80.5, 2: 82.5}, True), ({0: 81.0, 1: 78.0, 2: 81.5}, False)]
)
def test_a_promising_claim_gets_two_more_seeds_on_a_full_budget(top1, extended):
    full = claims.Budget(dataclasses.replace(SMOKE, seeds=(0, 1, 2), meaningful=True))
    toy = _Toy()
    df = frame([_record(cfg, student_top1=top1[cfg.seed]) for _, cfg in toy.design(full)])
    assert claims.promising(*toy.find(df, full)[1].summary) == extended
    assert toy.budget(df, full).seeds == ((0, 1, 2, 3, 4) if extended else (0, 1, 2))
    assert toy.budget(df, THREE).seeds == (0, 1, 2)  # a plumbing budget is never extended
    more = frame([_record(cfg, student_top1=81.0) for _, cfg in toy.design(toy.budget(df, full))])
    both = pd.concat([df, more]).drop_duplicates("cell_id")
    finding, fig = toy.evaluate(both, toy.budget(both, full))
    assert finding.summary[2] == (5 if extended else 3)  # the verdict is read on every seed it ran
    plt.close(fig)


# ---- synthetic records -------------------------------------------------------------------------------------------
Metric = Callable[[dict, RunConfig], dict]


def _record(cfg: RunConfig, **values) -> dict:
    extras = {k.removeprefix("extras."): values.pop(k) for k in list(values) if k.startswith("extras.")}
    return {
        "cell_id": cfg.cell_id(),
        "status": "ok",
        "method": cfg.method,
        "student": cfg.student,
        "teacher": cfg.teachers[0] if cfg.teachers else None,
        "seed": cfg.seed,
        "extras": extras,
        **values,
    }


def _random(labels: dict, cfg: RunConfig, rng: np.random.Generator) -> dict:
    return {
        "student_top1": 60 + 10 * rng.random(),
        "teacher_top1": 80 + rng.random(),
        "teacher_params": 2e5,
        "train_time_s": 10 + rng.random(),
        "extras.search_time_s": rng.random(),
        "extras.chosen_arch": "a",
        "extras.synthesis_time_s": rng.random(),
        "extras.avg_forgetting": 50 * rng.random(),
        "extras.avg_accuracy": 30 * rng.random(),
        "extras.task_accuracy": [[90.0, 10 * rng.random()]] * 2,
    }


def records(claim: claims.Claim, metric: Metric | None = None, seed: int = 0) -> list[dict]:
    """One record per designed cell of `claim` on THREE: random metrics, overridden by `metric`."""
    rng = np.random.default_rng(seed)
    out = [
        _record(cfg, **{**_random(labels, cfg, rng), **(metric(labels, cfg) if metric else {})})
        for labels, cfg in claim.design(THREE)
    ]
    for t in claim.timings(THREE):
        step = 0.01 * t.batch_size * (1 + 0.01 * rng.random())
        if metric:
            step = metric({"method": t.cell.method, "batch_size": t.batch_size}, t.cell)["step_s"]
        out.append(_step_record(t, step))
    return out


def _step_record(t: Timing, step_s: float) -> dict:
    """A timing record as `claims.steptime` writes one."""
    return {
        "cell_id": t.cell_id(),
        "status": "ok",
        "kind": "step_time",
        "method": t.cell.method,
        "student": t.cell.student,
        "teacher": None,
        "batch_size": t.batch_size,
        "batch_samples": t.batch_size,
        "round": t.round,
        "step_s": step_s,
    }


def frame(recs: list[dict]) -> pd.DataFrame:
    return pd.json_normalize(recs)


@pytest.mark.parametrize("claim", claims.CLAIMS, ids=lambda c: c.key)
def test_analysis_table_and_figure_on_synthetic_records(claim):
    finding, fig = claim.evaluate(frame(records(claim)), THREE)
    mean, half, n = finding.summary
    assert n == (1 if claim.timings(THREE) else 3) and math.isfinite(mean)  # smoke timing has one round
    assert len(finding.table) and finding.table["seeds" if "seeds" in finding.table else "rounds"].min() >= 1
    assert isinstance(fig, plt.Figure)
    plt.close(fig)


def _by_seed(values: dict[int, float]) -> Callable[[RunConfig], float]:
    return lambda cfg: values[cfg.seed]


@pytest.mark.parametrize("sign, expected", [(1, claims.SUPPORTED), (-1, claims.NOT_SUPPORTED)])
def test_quantization_direction(sign, expected):
    def metric(labels, cfg):  # qkd loses (or gains) 5 points a bit, with seed noise of ±0.5
        return {"student_top1": 50 + sign * 5 * cfg.hparams.get("bits", 8) + 0.5 * (cfg.seed - 1)}

    finding, _ = BY_KEY["quantization_bits"].evaluate(
        frame(records(BY_KEY["quantization_bits"], metric)), THREE
    )
    assert finding.summary[0] == pytest.approx(sign * 30) and finding.verdict == expected


def test_overlapping_interval_is_inconclusive():
    top1 = {(8, 0): 60.0, (8, 1): 50.0, (8, 2): 70.0, (2, 0): 65.0, (2, 1): 55.0, (2, 2): 55.0}

    def metric(labels, cfg):  # per-seed differences -5, -5, +15: mean +1.7, interval ±28.7
        return {"student_top1": top1[(cfg.hparams["bits"], cfg.seed)]}

    finding, _ = BY_KEY["quantization_bits"].evaluate(
        frame(records(BY_KEY["quantization_bits"], metric)), THREE
    )
    assert finding.verdict == claims.INCONCLUSIVE


def test_online_cost_slope_is_time_per_peer():
    def metric(labels, cfg):  # baseline 10 s; each peer costs one baseline training
        return {"train_time_s": 10.0 * cfg.hparams.get("peers", 1) * (1 + 0.01 * cfg.seed)}

    finding, _ = BY_KEY["online_cost"].evaluate(frame(records(BY_KEY["online_cost"], metric)), THREE)
    assert finding.summary[0] == pytest.approx(1.0, abs=0.03) and finding.verdict == claims.SUPPORTED


def test_cached_teacher_outputs_void_a_cost():
    claim = BY_KEY["multiteacher_cost"]
    recs = records(claim)
    for r in recs:
        r["teacher_output_cache"] = {"hits": 5, "misses": 0} if r["method"] == "multiteacher" else None
    finding, _ = claim.evaluate(frame(recs), THREE)
    assert finding.verdict == claims.INCONCLUSIVE  # kd alone is one point: no slope


def test_relation_cost_superlinear_growth_is_supported():
    def metric(labels, cfg):  # kd linear in the batch; the relation terms add a quadratic part
        b = labels["batch_size"]
        quadratic = 1e-6 * b * b if labels["method"] in RELATION_METHODS else 0.0
        return {"step_s": 0.002 + 1e-4 * b + quadratic}

    claim = BY_KEY["relation_cost"]
    budget = claims.Budget(dataclasses.replace(THREE.profile, meaningful=True))  # 5 rounds
    recs = [
        r
        | {
            "step_s": metric({"method": r["method"], "batch_size": r["batch_size"]}, None)["step_s"]
            * (1 + 1e-3 * r["round"])
        }
        for r in records(claim)
        if "step_s" in r
    ]
    recs += [
        _step_record(
            t,
            metric({"method": t.cell.method, "batch_size": t.batch_size}, None)["step_s"]
            * (1 + 1e-3 * t.round),
        )
        for t in claim.timings(budget)
    ]
    finding, _ = claim.evaluate(frame(recs), budget)
    expected = 1e6 * 1e-6 * (256 - 32)  # extra µs per sample: 1e-6 * b, from b = 32 to 256
    assert finding.summary[0] == pytest.approx(expected, rel=0.01) and finding.verdict == claims.SUPPORTED


def test_report_is_written_from_records(tmp_path):
    for claim in claims.CLAIMS:
        for rec in records(claim):
            results.write_record(rec, tmp_path)
    path = claims.write_report(tmp_path, dataclasses.replace(SMOKE, seeds=(0, 1, 2)))
    text = path.read_text()
    assert claims.VERDICT_RULE in text
    for claim in claims.CLAIMS:
        assert (tmp_path / "figures" / claim.figure_name).stat().st_size > 0
        assert f"## {claim.number}. " in text
    summary = pd.read_csv(tmp_path / "claims.csv")
    assert len(summary) == len(claims.CLAIMS) and set(summary["verdict"]) <= {
        claims.SUPPORTED,
        claims.NOT_SUPPORTED,
        claims.INCONCLUSIVE,
    }


def test_end_to_end_mini_run(tmp_path):
    """Two claims at smoke scale through the real runner, the timing experiment and the report."""
    out, cache = tmp_path / "results", tmp_path / "cache"
    keys = ["online_cost", "relation_cost"]
    counts = claims.run(SMOKE, out, device="cpu", cache_dir=cache, keys=keys, progress=False)
    assert counts["ok"] == len(claims.all_cells(SMOKE, keys)) and counts["failed"] == 0
    assert counts["timed"] == len(BY_KEY["relation_cost"].timings(claims.Budget(SMOKE)))
    again = claims.run(SMOKE, out, device="cpu", cache_dir=cache, keys=keys, progress=False)
    assert again["ok"] == 0 and again["timed"] == 0  # resumable: everything recorded is skipped
    claims.write_report(out, SMOKE)
    summary = pd.read_csv(out / "claims.csv").set_index("#")
    assert summary.loc[4, "replicates"] == 1 and summary.loc[3, "replicates"] == 1
    assert summary.loc[1, "replicates"] == 0 and summary.loc[1, "verdict"] == claims.INCONCLUSIVE


def test_table_cells_show_an_interval_only_where_replicates_differ():
    assert claims.ci_text(pd.Series([1.0, 2.0, 3.0])) == "+2.00 ± 2.48"
    assert (
        claims.ci_text(pd.Series([174970.0] * 3), signed=False) == "174,970"
    )  # one teacher's size, every seed
    assert claims.ci_text(pd.Series([80.38] * 3), signed=False) == "80.38"
    assert claims.ci_text(pd.Series([0.0] * 3)) == "+0.00"  # a reference against itself
    assert claims.ci_text(pd.Series([5.0])) == "+5.00" and claims.ci_text(pd.Series([], dtype=float)) == "—"
