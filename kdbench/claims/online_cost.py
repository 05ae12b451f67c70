"""Claim 4, Online Distillation: high computational cost due to simultaneous training.

dml with 2, 3 and 4 peers against the student trained alone.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import MaxNLocator

from kdbench.claims.core import Budget, Claim, Entry, Finding, register_claim
from kdbench.claims.figures import figure, lines
from kdbench.claims.frames import slope, summarise, versus_baseline

PEERS = (2, 3, 4)


@register_claim
class OnlineCost(Claim):
    number = 4
    key = "online_cost"
    techniques = ("Online Distillation",)
    experiment = "dml with 2, 3, 4 peers against the student trained alone"
    effect = "slope of training time (× baseline) per added peer: peers cost as they train together"

    def design(self, b: Budget) -> list[Entry]:
        out = []
        for seed in b.seeds:
            out.append(b.baseline(seed))
            out += [
                ({"method": "dml", "peers": k}, b.cfg("dml", (), seed, hparams={"peers": k}))
                for k in b.sweep(PEERS)
            ]
        return out

    def analyse(self, frame: pd.DataFrame) -> Finding:
        frame = versus_baseline(frame)
        dml = frame[frame["method"] == "dml"]
        values = dml.groupby("seed").apply(lambda g: slope(g["peers"], g["time_x"]), include_groups=False)
        table = summarise(
            dml,
            ["peers"],
            {
                "train time vs baseline (×)": ("time_x", False),
                "train time (s)": ("train_time_s", False),
                "boost over baseline (pts)": ("boost", True),
            },
        )
        return Finding(values, table)

    def draw(self, frame: pd.DataFrame) -> plt.Figure:
        dml = versus_baseline(frame)
        dml = dml[dml["method"] == "dml"]
        fig, (left, right) = figure(2)
        lines(left, dml, "peers", "time_x")
        left.set_ylabel("training time relative to baseline (×)")
        lines(right, dml, "peers", "boost")
        right.axhline(0, color="black", lw=0.8)
        right.set_ylabel("boost over baseline (pts)")
        for ax in (left, right):
            ax.set_xlabel("peers trained together")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        return fig
