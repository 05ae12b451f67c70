"""The paper profile at toy size, offline: every pair, every method, one step each on synthetic CIFAR-100 with the
`cifar` recipe, through the grid (teachers, records, tables). What would break on a GPU (a method that cannot map a
pair's features, a 100-class head, 3-channel 32x32 inputs) breaks here first."""

from __future__ import annotations

import dataclasses

import pytest

from kdbench import metrics, tables
from kdbench.frame import load_frame
from kdbench.grid import run_grid
from kdbench.profiles import PROFILES, all_cells, on_dataset, validate
from kdbench.results import load

PAPER = PROFILES["paper"]


def toy(pair) -> object:
    """The paper profile on one pair, synthetic CIFAR-100, one seed, one epoch of one batch."""
    profile = on_dataset(PAPER, "synthetic:cifar100")
    return dataclasses.replace(
        profile,
        name=f"paper-toy-{pair.teacher}-{pair.student}",
        pairs=(pair,),
        seeds=(0,),
        epochs=1,
        teacher_epochs=1,
        train_subset=64,  # the cifar recipe's batch: one step an epoch
        test_subset=100,
        hparams={"deepinversion": {"synthesis_steps": 2, "pool_size": 64}},
    )


@pytest.mark.slow
@pytest.mark.parametrize("pair", PAPER.pairs, ids=lambda p: f"{p.teacher}-{p.student}")
def test_every_method_runs_on_every_paper_pair(pair, tmp_path, monkeypatch):
    # latency is not what this checks (tests/test_cost_columns.py does), and timing CIFAR teachers at batch 256 on
    # two cores would take most of the test: each deployable is "timed" at once
    monkeypatch.setattr(
        metrics, "latencies", lambda models, *a, **kw: {name: metrics.Latency(1.0, 0.0) for name in models}
    )
    profile = toy(pair)
    validate(profile)
    assert profile.recipe == "cifar" and not profile.meaningful
    counts = run_grid(profile, tmp_path / "res", device="cpu", cache_dir=tmp_path / "cache", progress=False)
    df = load(tmp_path / "res")
    failed = df[df["status"] != "ok"]
    assert failed.empty, failed[["method", "error"]].to_string()
    assert counts["ok"] == len(all_cells(profile)) and set(df["dataset"]) == {"synthetic:cifar100"}
    assert not tables.method_table(load_frame(tmp_path / "res")).empty
