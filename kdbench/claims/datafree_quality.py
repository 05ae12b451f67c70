"""Claim 7, Data-Free KD: the quality of the synthetic data impacts its effectiveness.

deepinversion with synthetic pools of 128, 512 and 2048 images, against kd on the real images and the baseline.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd

from kdbench import tables
from kdbench.claims.core import Budget, Claim, Entry, Finding, register_claim
from kdbench.claims.figures import figure, lines
from kdbench.claims.frames import minus, series, summarise

POOL_SIZES = (128, 512, 2048)
SYNTHESIS_STEPS = 20  # the cpu profile's deepinversion setting (its time budget)


@register_claim
class DatafreeQuality(Claim):
    number = 7
    key = "datafree_quality"
    techniques = ("Data-Free KD",)
    experiment = (
        f"deepinversion ({SYNTHESIS_STEPS} steps) with 128, 512, 2048 synthetic images, against kd on "
        "the real images"
    )
    effect = (
        "top-1 with the largest minus the smallest synthetic pool (pts): more synthetic data, better student"
    )

    def design(self, b: Budget) -> list[Entry]:
        out = []
        for seed in b.seeds:
            out.append(b.baseline(seed))
            out.append(({"method": "kd", "pool_size": math.nan}, b.cfg("kd", (b.teacher,), seed)))
            for pool in b.sweep(POOL_SIZES):
                cfg = b.cfg(
                    "deepinversion",
                    (b.teacher,),
                    seed,
                    hparams={"pool_size": pool, "synthesis_steps": SYNTHESIS_STEPS},
                )
                out.append(({"method": "deepinversion", "pool_size": pool}, cfg))
        return out

    def analyse(self, frame: pd.DataFrame) -> Finding:
        di = frame[frame["method"] == "deepinversion"]
        values = series(di, pool_size=di["pool_size"].max()) - series(di, pool_size=di["pool_size"].min())
        frame = frame.assign(
            boost=minus(frame, frame["method"] == "baseline", ["seed"]),
            vs_kd=minus(frame, frame["method"] == "kd", ["seed"]),
        )
        table = summarise(
            frame[frame["method"] != "baseline"],
            ["method", "pool_size"],
            {
                "synthesis time (s)": ("extras.synthesis_time_s", False),
                "top-1 (%)": ("student_top1", False),
                "vs real-data kd (pts)": ("vs_kd", True),
                "boost over baseline (pts)": ("boost", True),
            },
        )
        return Finding(values, table)

    def draw(self, frame: pd.DataFrame) -> plt.Figure:
        fig, (ax,) = figure(1, 6)
        lines(ax, frame[frame["method"] == "deepinversion"], "pool_size", "student_top1")
        for method, style in (("kd", "--"), ("baseline", ":")):
            mean, half, _ = tables.mean_ci(frame[frame["method"] == method]["student_top1"])
            if not math.isnan(mean):
                ax.axhline(mean, ls=style, color="gray", label=f"{method} on the real images")
                if not math.isnan(half):
                    ax.axhspan(mean - half, mean + half, color="gray", alpha=0.15)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(f"synthetic images (DeepInversion, {SYNTHESIS_STEPS} optimisation steps each)")
        ax.set_ylabel("student top-1 (%)")
        ax.legend(fontsize=7)
        return fig
