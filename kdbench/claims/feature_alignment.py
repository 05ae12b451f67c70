"""Claim 2, Feature-Based KD: may struggle with feature alignment across architectures.

fitnet, at and sp on the profile's same-family pair (resnet20 → resnet8) and its different-family pair
(mobilenetv2 → resnet8), with kd on both as the control for the two teachers' different accuracy.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from kdbench.claims.core import Budget, Claim, Entry, Finding, register_claim
from kdbench.claims.figures import bars, figure
from kdbench.claims.frames import ci_text, minus, series, summarise

FEATURE_METHODS = (
    "fitnet",
    "at",
    "sp",
)  # a hint stage, attention maps of every stage, last-stage Gram matrices


@register_claim
class FeatureAlignment(Claim):
    number = 2
    key = "feature_alignment"
    techniques = ("Feature-Based KD",)
    experiment = (
        "fitnet, at and sp on a same-family (resnet20→resnet8) and a different-family "
        "(mobilenetv2→resnet8) pair; kd on both as the control for the teachers' different accuracy"
    )
    effect = "feature methods' same- minus different-family top-1, minus kd's (pts): alignment costs across families"

    def design(self, b: Budget) -> list[Entry]:
        same, different = b.profile.pairs[0], b.profile.pairs[1]
        out = []
        for seed in b.seeds:
            out.append(b.baseline(seed))
            for method in (*b.sweep(FEATURE_METHODS), "kd"):
                for pair in (same, different):
                    out.append(({"method": method, "pair": pair.kind}, b.cfg(method, (pair.teacher,), seed)))
        return out

    def analyse(self, frame: pd.DataFrame) -> Finding:
        frame = frame.assign(boost=minus(frame, frame["method"] == "baseline", ["seed"]))

        def gap(method: str) -> pd.Series:  # same-family minus different-family top-1, per seed
            return series(frame, method=method, pair="same-family") - series(
                frame, method=method, pair="different-family"
            )

        methods = [m for m in FEATURE_METHODS if m in set(frame["method"])]
        values = pd.concat([gap(m) for m in methods], axis=1).mean(axis=1) - gap("kd")
        table = summarise(
            frame[frame["method"] != "baseline"],
            ["method", "pair"],
            {
                "teacher top-1 (%)": ("teacher_top1", False),
                "student top-1 (%)": ("student_top1", False),
                "boost over baseline (pts)": ("boost", True),
            },
        )
        gaps = {m: ci_text(gap(m)) for m in [*methods, "kd"]}
        table["same − different family (pts)"] = table["method"].map(gaps)
        return Finding(values, table)

    def draw(self, frame: pd.DataFrame) -> plt.Figure:
        frame = frame.assign(boost=minus(frame, frame["method"] == "baseline", ["seed"]))
        fig, (ax,) = figure(1, 7)
        bars(ax, frame[frame["method"] != "baseline"], "method", "boost", "pair")
        ax.set_ylabel("student boost over baseline (pts)")
        return fig
