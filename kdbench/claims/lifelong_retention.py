"""Claim 11, Lifelong Distillation: reusable prior knowledge must be carefully selected.

Five class-incremental tasks: LwF and EWC, each at two weights, between fine-tuning (no retention) and joint
training (the upper bound).
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd

from kdbench.claims.core import Budget, Claim, Entry, Finding, register_claim
from kdbench.claims.figures import figure, point
from kdbench.claims.frames import series, summarise

# LwF's paper weight 1 and ten times it; EWC 1 and 10: in a check at the cpu recipe's lr 0.1 (2 epochs a task),
# weight 30 blew up on the last task and 100 diverged
RETENTION = {"lwf": (1.0, 10.0), "ewc": (1.0, 10.0)}


def _lifelong_columns(frame: pd.DataFrame) -> pd.DataFrame:
    last = frame["extras.task_accuracy"].map(lambda m: m[-1][-1] if isinstance(m, list) and m else math.nan)
    return frame.assign(
        new_task=last, forgetting=frame["extras.avg_forgetting"], average=frame["extras.avg_accuracy"]
    )


@register_claim
class LifelongRetention(Claim):
    number = 11
    key = "lifelong_retention"
    techniques = ("Lifelong Distillation",)
    experiment = (
        "5 class-incremental tasks: LwF weight 1, 10 and EWC weight 1, 10 between fine-tuning (no "
        "retention) and joint training (upper bound)"
    )
    effect = (
        "smaller of forgetting avoided and new-task accuracy lost, strongest retention vs fine-tuning (pts, mean "
        "of LwF and EWC): retention has a price, so it must be chosen"
    )

    def design(self, b: Budget) -> list[Entry]:
        out = []
        for seed in b.seeds:
            out.append(
                (
                    {"method": "lifelong_finetune", "term": "none", "weight": 0.0},
                    b.cfg("lifelong_finetune", (), seed),
                )
            )
            out.append(
                (
                    {"method": "lifelong_joint", "term": "none", "weight": math.nan},
                    b.cfg("lifelong_joint", (), seed),
                )
            )
            for term, weights in RETENTION.items():
                for w in b.sweep(weights):
                    hp = {"lwf_weight": w} if term == "lwf" else {"lwf_weight": 0.0, "ewc_weight": w}
                    out.append(
                        ({"method": "lwf", "term": term, "weight": w}, b.cfg("lwf", (), seed, hparams=hp))
                    )
        return out

    def analyse(self, frame: pd.DataFrame) -> Finding:
        frame = _lifelong_columns(frame)
        sides = []
        for term in RETENTION:
            w = frame[frame["term"] == term]["weight"].max()
            kept = series(frame, "forgetting", method="lifelong_finetune") - series(
                frame, "forgetting", term=term, weight=w
            )
            lost = series(frame, "new_task", method="lifelong_finetune") - series(
                frame, "new_task", term=term, weight=w
            )
            sides.append(
                pd.concat([kept, lost], axis=1).min(axis=1, skipna=False)
            )  # both sides of the trade-off
        values = pd.concat(sides, axis=1).mean(axis=1)
        table = summarise(
            frame,
            ["method", "term", "weight"],
            {
                "avg forgetting (pts)": ("forgetting", False),
                "new-task accuracy (%)": ("new_task", False),
                "avg accuracy, all tasks (%)": ("average", False),
            },
        )
        return Finding(values, table)

    def draw(self, frame: pd.DataFrame) -> plt.Figure:
        frame = _lifelong_columns(frame)
        fig, (ax,) = figure(1, 6)
        for (method, term, w), g in frame.groupby(["method", "term", "weight"], sort=False, dropna=False):
            label = method if term == "none" else f"{term} weight {w:g}"
            point(ax, g, "forgetting", "new_task", label)
        ax.set_xlabel("average forgetting (pts; lower keeps more)")
        ax.set_ylabel("accuracy on the newest task (%)")
        ax.legend(fontsize=7)
        return fig
