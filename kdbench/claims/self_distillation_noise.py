"""Claim 5, Self-Distillation: risk of reinforcing incorrect predictions.

pskd and byot against baseline and kd (its teacher trained on the same noisy labels) at 0, 20 and 40 % symmetric
label noise.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from kdbench.claims.core import Budget, Claim, Entry, Finding, register_claim
from kdbench.claims.figures import figure, lines
from kdbench.claims.frames import minus, series, summarise

NOISE = (0.0, 0.2, 0.4)
SELF_METHODS = ("pskd", "byot")


@register_claim
class SelfDistillationNoise(Claim):
    number = 5
    key = "self_distillation_noise"
    techniques = ("Self-Distillation",)
    experiment = (
        "pskd and byot against baseline and kd (teacher trained on the same noisy labels) at 0, 20, 40 % "
        "symmetric label noise"
    )
    effect = (
        "self-distillation's boost over baseline at 0 % minus at 40 % noise (pts, mean of pskd and byot): noise "
        "erodes it"
    )

    def design(self, b: Budget) -> list[Entry]:
        out = []
        for seed in b.seeds:
            for noise in b.sweep(NOISE):
                labels, cfg = b.baseline(seed, label_noise=noise)
                out.append(({**labels, "noise": noise}, cfg))
                out += [
                    ({"method": m, "noise": noise}, b.cfg(m, (), seed, label_noise=noise))
                    for m in SELF_METHODS
                ]
                out.append(
                    ({"method": "kd", "noise": noise}, b.cfg("kd", (b.teacher,), seed, label_noise=noise))
                )
        return out

    def analyse(self, frame: pd.DataFrame) -> Finding:
        frame = frame.assign(boost=minus(frame, frame["method"] == "baseline", ["seed", "noise"]))
        low, high = frame["noise"].min(), frame["noise"].max()
        drops = [
            series(frame, "boost", method=m, noise=low) - series(frame, "boost", method=m, noise=high)
            for m in SELF_METHODS
        ]
        values = pd.concat(drops, axis=1).mean(axis=1)
        table = summarise(
            frame,
            ["method", "noise"],
            {"top-1 (%)": ("student_top1", False), "boost over baseline (pts)": ("boost", True)},
        )
        return Finding(values, table)

    def draw(self, frame: pd.DataFrame) -> plt.Figure:
        frame = frame.assign(boost=minus(frame, frame["method"] == "baseline", ["seed", "noise"]))
        fig, (left, right) = figure(2)
        lines(left, frame, "noise", "student_top1", "method")
        left.set_ylabel("top-1 on the clean test set (%)")
        lines(right, frame[frame["method"] != "baseline"], "noise", "boost", "method")
        right.axhline(0, color="black", lw=0.8)
        right.set_ylabel("boost over baseline at that noise (pts)")
        for ax in (left, right):
            ax.set_xlabel("symmetric label noise (kd's teacher trained on the same labels)")
        return fig
