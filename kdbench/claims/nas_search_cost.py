"""Claim 10, NAS-Based Distillation: the initial search is computationally demanding.

nas (DisWOT proxy search) scoring 1, 2 and 8 proxy batches per candidate, against the largest candidate in budget
distilled without a search.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd

from kdbench.claims.core import Budget, Claim, Entry, Finding, register_claim
from kdbench.claims.figures import figure, lines, point
from kdbench.claims.frames import minus, series, summarise
from kdbench.methods import get_method

PROXY_BATCHES = (1, 2, 8)


def _nas_costs(frame: pd.DataFrame) -> pd.DataFrame:
    search = frame["extras.search_time_s"].where(frame["pick"] == "search", 0.0)
    return frame.assign(
        search_s=search,
        distil_s=frame["train_time_s"] - search,
        search_x=search / (frame["train_time_s"] - search),
        vs_largest=minus(frame, frame["pick"] == "largest", ["seed"]),
    )


@register_claim
class NasSearchCost(Claim):
    number = 10
    key = "nas_search_cost"
    techniques = ("NAS-Based Distillation",)
    experiment = (
        "nas search (DisWOT proxy) with 1, 2, 8 proxy batches per candidate, against the largest "
        "candidate in budget without search"
    )
    effect = (
        "search time over the chosen student's distillation time, minus 1, at the default 2 proxy batches: the "
        "search costs more than the training it serves"
    )

    def design(self, b: Budget) -> list[Entry]:
        default = get_method("nas").defaults["proxy_batches"]
        out = []
        for seed in b.seeds:
            for n in b.sweep(PROXY_BATCHES, default):
                out.append(
                    (
                        {"pick": "search", "proxy_batches": n},
                        b.cfg("nas", (b.teacher,), seed, hparams={"proxy_batches": n}),
                    )
                )
            out.append(
                (
                    {"pick": "largest", "proxy_batches": math.nan},
                    b.cfg("nas", (b.teacher,), seed, hparams={"pick": "largest"}),
                )
            )
        return out

    def analyse(self, frame: pd.DataFrame) -> Finding:
        frame = _nas_costs(frame)
        default = get_method("nas").defaults["proxy_batches"]
        values = series(frame, "search_x", pick="search", proxy_batches=default) - 1.0
        table = summarise(
            frame,
            ["pick", "proxy_batches"],
            {
                "search (s)": ("search_s", False),
                "distillation (s)": ("distil_s", False),
                "search / distillation (×)": ("search_x", False),
                "top-1 (%)": ("student_top1", False),
                "vs largest (pts)": ("vs_largest", True),
            },
        )
        chosen = frame.groupby(["pick", "proxy_batches"], sort=False, dropna=False)["extras.chosen_arch"].agg(
            lambda s: ", ".join(sorted({str(v).replace("cifar_", "") for v in s.dropna()})) or "—"
        )
        table["chosen"] = chosen.to_numpy()  # the same groups in the same order as the table's
        return Finding(values, table)

    def draw(self, frame: pd.DataFrame) -> plt.Figure:
        frame = _nas_costs(frame)
        fig, (left, right) = figure(2)
        for (pick, n), g in frame.groupby(["pick", "proxy_batches"], sort=False):
            label = "largest in budget (no search)" if pick == "largest" else f"search, {n:.0f} proxy batches"
            point(left, g, "search_s", "student_top1", label)
        left.set_xlabel("search time (s), mean ± sd over seeds")
        left.set_ylabel("student top-1 (%)")
        left.legend(fontsize=7)
        lines(right, frame[frame["pick"] == "search"], "proxy_batches", "search_x")
        right.axhline(1, color="black", lw=0.8, ls="--", label="search = distillation")
        right.set_xlabel("proxy batches scored per candidate")
        right.set_ylabel("search time / distillation time (×)")
        right.legend(fontsize=7)
        return fig
