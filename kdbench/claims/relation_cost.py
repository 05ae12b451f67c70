"""Claim 3, Relation-Based KD and Graph-Based Distillation: high computational cost.

A timing experiment (`kdbench.claims.steptime`), not training runs: the training step of rkd, sp and irg against
kd and baseline (resnet20 → resnet8) at four batch sizes, every method timed interleaved within a round; the
rounds are the replicates.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from kdbench.claims.core import Budget, Claim, Finding, register_claim
from kdbench.claims.figures import figure, lines
from kdbench.claims.frames import reference, series, summarise
from kdbench.claims.steptime import Timing

RELATION_METHODS = ("rkd", "sp", "irg")
TIMED_METHODS = (*RELATION_METHODS, "kd", "baseline")
BATCH_SIZES = (32, 64, 128, 256)
TIMING_ROUNDS = 5  # independent interleaved rounds: the replicates of the cost claim
TIMED_SAMPLES = 1024  # per measurement: steps = max(2, TIMED_SAMPLES // batch size)


def _versus_kd(frame: pd.DataFrame) -> pd.DataFrame:
    """Each step against kd's in the same round and batch size (the same teacher forward, a response-only loss):
    the ratio, and the extra time per sample in microseconds."""
    kd = reference(frame, frame["method"] == "kd", ["round", "batch_size"], "step_s")
    return frame.assign(
        step_ms=1000 * frame["step_s"],
        per_sample_us=1e6 * frame["step_s"] / frame["batch_samples"],
        vs_kd=frame["step_s"] / kd,
        extra_us=1e6 * (frame["step_s"] - kd) / frame["batch_samples"],
    )


@register_claim
class RelationCost(Claim):
    number = 3
    key = "relation_cost"
    techniques = ("Relation-Based KD", "Graph-Based Distillation")
    experiment = (
        "training-step time of rkd, sp and irg against kd and baseline (resnet20→resnet8) at batch 32, "
        f"64, 128, 256; {TIMING_ROUNDS} interleaved rounds"
    )
    effect = (
        "growth of the extra time per sample over kd from the smallest to the largest batch, mean of rkd, sp, "
        "irg (µs): a cost superlinear in the batch"
    )

    def timings(self, b: Budget) -> list[Timing]:
        samples = TIMED_SAMPLES if b.full else 64
        rounds = TIMING_ROUNDS if b.full else 1
        out = []
        for size in b.sweep(BATCH_SIZES):
            for r in range(rounds):
                for method in TIMED_METHODS:
                    cell = b.cfg(method, () if method == "baseline" else (b.teacher,), b.seeds[0])
                    out.append(Timing(cell, size, r, max(2, samples // size)))
        return out

    def analyse(self, frame: pd.DataFrame) -> Finding:
        frame = _versus_kd(frame)
        small, large = frame["batch_size"].min(), frame["batch_size"].max()
        growth = [
            series(frame, "extra_us", method=m, batch_size=large)
            - series(frame, "extra_us", method=m, batch_size=small)
            for m in RELATION_METHODS
        ]
        values = pd.concat(growth, axis=1).mean(axis=1) if small != large else pd.Series(dtype=float)
        table = summarise(
            frame,
            ["method", "batch_size"],
            {
                "step (ms)": ("step_ms", False),
                "time vs kd (×)": ("vs_kd", False),
                "extra µs / sample over kd": ("extra_us", True),
            },
        )
        return Finding(values, table.rename(columns={"seeds": "rounds"}))

    def draw(self, frame: pd.DataFrame) -> plt.Figure:
        frame = _versus_kd(frame)
        fig, (left, right) = figure(2)
        lines(left, frame, "batch_size", "per_sample_us", "method")
        left.set_ylabel("training step time per sample (µs)")
        lines(right, frame[frame["method"] != "kd"], "batch_size", "vs_kd", "method")
        right.axhline(1, color="black", lw=0.8)
        right.set_ylabel("step time relative to kd (×)")
        for ax in (left, right):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("batch size")
        return fig
