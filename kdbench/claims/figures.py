"""The claims' figures: mean ± 95% CI lines and grouped bars, on panels of one size."""

from __future__ import annotations

import math
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from kdbench import tables


def lines(
    ax: plt.Axes,
    frame: pd.DataFrame,
    x: str,
    y: str,
    by: str | None = None,
    points: str | None = None,
    **kw: Any,
) -> None:
    """Mean ± 95% CI of `y` against `x`, one line per value of `by`; one point per value of `points` (default:
    of `x`), placed at its mean `x` (e.g. one point per teacher at its accuracy)."""
    groups = frame.groupby(by, sort=False) if by else [(None, frame)]
    for name, g in groups:
        stats = [(gx[x].mean(), *tables.mean_ci(gx[y])[:2]) for _, gx in g.groupby(points or x, sort=True)]
        stats = sorted(s for s in stats if not math.isnan(s[0]) and not math.isnan(s[1]))
        if stats:
            xs, means, halves = zip(*stats, strict=True)
            ax.errorbar(
                xs,
                means,
                yerr=[0 if math.isnan(h) else h for h in halves],
                marker="o",
                capsize=3,
                label=name,
                **kw,
            )
    if by and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def point(ax: plt.Axes, g: pd.DataFrame, x: str, y: str, label: str) -> None:
    """One setting as a point at its mean (`x`, `y`) over seeds, with ± 1 sd bars on both axes: for a trade-off
    drawn as a cloud of settings, where the spread of each is what a reader weighs."""
    ax.errorbar(g[x].mean(), g[y].mean(), xerr=g[x].std(), yerr=g[y].std(), fmt="o", capsize=3, label=label)


def bars(ax: plt.Axes, frame: pd.DataFrame, x: str, y: str, by: str) -> None:
    """Grouped bars of mean `y` with 95% CI, one group per `x`, one bar per `by`."""
    xs = list(dict.fromkeys(frame[x]))
    hues = list(dict.fromkeys(frame[by]))
    width = 0.8 / max(len(hues), 1)
    for i, hue in enumerate(hues):
        stats = [tables.mean_ci(frame[(frame[x] == v) & (frame[by] == hue)][y])[:2] for v in xs]
        ax.bar(
            [k + i * width for k in range(len(xs))],
            [s[0] for s in stats],
            width,
            yerr=[0 if math.isnan(s[1]) else s[1] for s in stats],
            capsize=2,
            label=str(hue),
        )
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(xs))], [str(v) for v in xs], fontsize=8)
    ax.axhline(0, color="black", lw=0.8)
    ax.legend(fontsize=7)


def figure(panels: int = 1, width: float = 5.0) -> tuple[plt.Figure, list[plt.Axes]]:
    fig, axes = plt.subplots(1, panels, figsize=(width * panels, 3.8), squeeze=False)
    return fig, list(axes[0])
