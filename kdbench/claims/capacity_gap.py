"""Claim 1, Response-Based KD: limited by the capacity gap between teacher and student.

kd to resnet8 from four growing teachers of one family (resnet14, 20, 32, 56), against the baseline; takd, with
resnet14 as the assistant, from the larger three.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from kdbench.claims.core import Budget, Claim, Entry, Finding, register_claim
from kdbench.claims.figures import figure, lines
from kdbench.claims.frames import minus, series, summarise

LADDER = ("cifar_resnet14", "cifar_resnet20", "cifar_resnet32", "cifar_resnet56")  # one family, growing
ASSISTANT = "cifar_resnet14"  # takd's default assistant, between resnet8 and the larger teachers


@register_claim
class CapacityGap(Claim):
    number = 1
    key = "capacity_gap"
    techniques = ("Response-Based KD",)
    experiment = (
        "kd from 4 growing teachers of one family (resnet14, 20, 32, 56) to resnet8; takd (assistant "
        "resnet14) from the larger three"
    )
    effect = "kd top-1 with the smallest teacher minus with the largest (pts): a larger teacher teaches worse"

    def design(self, b: Budget) -> list[Entry]:
        out = []
        for seed in b.seeds:
            out.append(b.baseline(seed))
            for teacher in b.sweep(LADDER):
                out.append(({"method": "kd", "teacher": teacher}, b.cfg("kd", (teacher,), seed)))
                if teacher != ASSISTANT:
                    cfg = b.cfg("takd", (teacher,), seed, hparams={"assistant": ASSISTANT})
                    out.append(({"method": "takd", "teacher": teacher}, cfg))
        return out

    def analyse(self, frame: pd.DataFrame) -> Finding:
        frame = frame.assign(boost=minus(frame, frame["method"] == "baseline", ["seed"]))
        ladder = [t for t in LADDER if t in set(frame["teacher"].dropna())]
        values = series(frame, method="kd", teacher=ladder[0]) - series(
            frame, method="kd", teacher=ladder[-1]
        )
        table = summarise(
            frame[frame["method"] != "baseline"],
            ["method", "teacher"],
            {
                "teacher params": ("teacher_params", False),
                "teacher top-1 (%)": ("teacher_top1", False),
                "student top-1 (%)": ("student_top1", False),
                "boost over baseline (pts)": ("boost", True),
            },
        )
        return Finding(values, table)

    def draw(self, frame: pd.DataFrame) -> plt.Figure:
        frame = frame.assign(boost=minus(frame, frame["method"] == "baseline", ["seed"]))
        kd = frame[frame["method"] != "baseline"]
        fig, (left, right) = figure(2)
        lines(left, kd, "teacher_top1", "boost", "method", points="teacher")
        left.set_xlabel("teacher top-1 (%)")
        lines(right, kd, "teacher_params", "boost", "method", points="teacher")
        right.set_xscale("log")
        right.set_xlabel("teacher parameters (resnet14 → resnet56)")
        for ax in (left, right):
            ax.axhline(0, color="black", lw=0.8)
            ax.set_ylabel("student boost over baseline (pts)")
        return fig
