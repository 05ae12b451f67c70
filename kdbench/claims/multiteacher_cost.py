"""Claim 12, Multi-Teacher Distillation: aligning several teachers can be resource-intensive.

multiteacher with 2, 3 and 4 teachers, mean and confidence weighting; kd from the first of them is the 1-teacher
point.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import MaxNLocator

from kdbench.claims.core import Budget, Claim, Entry, Finding, register_claim
from kdbench.claims.figures import figure, lines
from kdbench.claims.frames import slope, summarise, versus_baseline

WEIGHTINGS = ("mean", "confidence")
ENSEMBLE_EXTRA = (
    "cifar_resnet14",
    "cifar_resnet20",
)  # members 3 and 4 (teacher i is trained with seed 100 i)


@register_claim
class MultiteacherCost(Claim):
    number = 12
    key = "multiteacher_cost"
    techniques = ("Multi-Teacher Distillation",)
    experiment = (
        "multiteacher with 2, 3, 4 teachers (resnet20, wrn_16_2, resnet14, resnet20 of another seed), "
        "mean and confidence weighting; kd from resnet20 is the 1-teacher point (the same loss with one "
        "teacher)"
    )
    effect = "slope of training time (× baseline) per added teacher, mean of both weightings: teachers cost"

    def design(self, b: Budget) -> list[Entry]:
        members = (b.teacher, *b.profile.extra_teachers[:1], *ENSEMBLE_EXTRA)
        out = []
        for seed in b.seeds:
            out.append(b.baseline(seed))
            out.append(
                ({"method": "kd", "teachers": 1, "weighting": "single"}, b.cfg("kd", members[:1], seed))
            )
            for k in b.sweep(range(2, len(members) + 1)):
                for weighting in WEIGHTINGS:
                    cfg = b.cfg("multiteacher", members[:k], seed, hparams={"weighting": weighting})
                    out.append(({"method": "multiteacher", "teachers": k, "weighting": weighting}, cfg))
        return out

    def analyse(self, frame: pd.DataFrame) -> Finding:
        frame = versus_baseline(frame)
        single = frame[frame["method"] == "kd"]
        slopes = []
        for weighting in WEIGHTINGS:  # kd is both lines' 1-teacher point
            rows = pd.concat([single, frame[frame["weighting"] == weighting]])
            slopes.append(
                rows.groupby("seed").apply(lambda g: slope(g["teachers"], g["time_x"]), include_groups=False)
            )
        values = pd.concat(slopes, axis=1).mean(axis=1)
        table = summarise(
            frame[frame["method"] != "baseline"],
            ["teachers", "weighting"],
            {
                "train time vs baseline (×)": ("time_x", False),
                "top-1 (%)": ("student_top1", False),
                "boost over baseline (pts)": ("boost", True),
            },
        )
        return Finding(values, table)

    def draw(self, frame: pd.DataFrame) -> plt.Figure:
        frame = versus_baseline(frame)
        single = frame[frame["method"] == "kd"]
        both = pd.concat(
            [pd.concat([single, frame[frame["weighting"] == w]]).assign(weighting=w) for w in WEIGHTINGS]
        )
        fig, (left, right) = figure(2)
        lines(left, both, "teachers", "time_x", "weighting")
        left.set_ylabel("training time relative to baseline (×)")
        lines(right, both, "teachers", "boost", "weighting")
        right.axhline(0, color="black", lw=0.8)
        right.set_ylabel("boost over baseline (pts)")
        for ax in (left, right):
            ax.set_xlabel("teachers (1 = kd)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        return fig
