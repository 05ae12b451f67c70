"""Claim 8, Adversarial KD: the adversarial and the distillation loss must be balanced.

adversarial with adv_weight 0, 0.1 (its default), 1 and 10 at a fixed distillation weight.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from kdbench.claims.core import Budget, Claim, Entry, Finding, register_claim
from kdbench.claims.figures import figure, lines
from kdbench.claims.frames import minus, series, summarise

ADV_WEIGHTS = (0.0, 0.1, 1.0, 10.0)
BALANCED = 0.1  # the adversarial method's default: KD leads, the adversarial term refines


@register_claim
class AdversarialBalance(Claim):
    number = 8
    key = "adversarial_balance"
    techniques = ("Adversarial KD",)
    experiment = "adversarial with adv_weight 0, 0.1 (default), 1, 10 at fixed distillation weight"
    effect = "top-1 at the balanced weight 0.1 minus the better of the two ends, 0 and 10 (pts): balance beats both"

    def design(self, b: Budget) -> list[Entry]:
        out = []
        for seed in b.seeds:
            out.append(b.baseline(seed))
            for w in b.sweep(ADV_WEIGHTS, BALANCED):
                out.append(
                    (
                        {"method": "adversarial", "adv_weight": w},
                        b.cfg("adversarial", (b.teacher,), seed, hparams={"adv_weight": w}),
                    )
                )
        return out

    def analyse(self, frame: pd.DataFrame) -> Finding:
        frame = frame.assign(boost=minus(frame, frame["method"] == "baseline", ["seed"]))
        adv = frame[frame["method"] == "adversarial"]
        mid = series(adv, adv_weight=BALANCED)
        ends = [mid - series(adv, adv_weight=w) for w in (adv["adv_weight"].min(), adv["adv_weight"].max())]
        values = pd.concat(ends, axis=1).min(axis=1, skipna=False)  # the balanced weight must beat both ends
        table = summarise(
            adv,
            ["adv_weight"],
            {"top-1 (%)": ("student_top1", False), "boost over baseline (pts)": ("boost", True)},
        )
        return Finding(values, table)

    def draw(self, frame: pd.DataFrame) -> plt.Figure:
        frame = frame.assign(boost=minus(frame, frame["method"] == "baseline", ["seed"]))
        fig, (ax,) = figure(1, 6)
        lines(ax, frame[frame["method"] == "adversarial"], "adv_weight", "boost")
        ax.set_xscale("symlog", linthresh=0.1)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xlabel("adversarial loss weight (distillation weight fixed)")
        ax.set_ylabel("boost over baseline (pts)")
        return fig
