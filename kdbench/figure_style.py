"""The conventions shared by every figure, and the helpers that keep them, so that figures read at a glance and
alike (`kdbench.plots`: Table 4 and cost figures; `kdbench.run_figures`: how runs behaved; the claims' figures):
- a method has one colour everywhere (`method_colour`, fixed by the registry);
- reference runs (the student alone, QAT alone, ...; MethodInfo.technique "Reference") are drawn grey and
  dashed, labelled "reference" and tagged with gid "reference"; they are never on a Pareto front;
- error bars are 95% t-intervals over seeds (stats.mean_ci) only when there is more than one seed, and are
  clipped to the metric's range (`ci_errors`); labels go in legends, never as text on the data;
- boosts are drawn on a symmetric-log axis (linear within ±1 point, `boost_axis`), so that a few large losses do
  not squeeze the bulk of the methods into a sliver.

Importing this module leaves matplotlib's backend alone: a notebook keeps its inline figures, and a machine
without a display gets matplotlib's own headless fallback (Agg), as batch runs and CI do.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter

from kdbench import stats
from kdbench.methods import METHODS

REFERENCE_GID = "reference"
REFERENCE_COLOUR = "0.45"
# tab20 without its two greys (grey is the references'), then tab20b: 38 colours
_PALETTE = [c for i, c in enumerate(plt.get_cmap("tab20").colors) if i not in (14, 15)] + list(
    plt.get_cmap("tab20b").colors
)
PAIR_MARKERS = "osD^v<>pPh*"
BOOST_LINTHRESH = 1.0  # points: the boost axis is linear within ±1 point, logarithmic beyond


def is_reference(method: str) -> bool:
    return method in METHODS and METHODS[method].info.technique == "Reference"


def references(methods: pd.Series) -> pd.Series:
    """Whether each method is a reference run (a boolean Series, for masks)."""
    return methods.map(is_reference).astype(bool)


def method_colour(method: str) -> tuple[float, ...] | str:
    """The colour of a method in every figure: its place among the registered non-reference methods (sorted by
    name) in a palette without greys; grey for reference runs."""
    if is_reference(method):
        return REFERENCE_COLOUR
    names = sorted(m for m in METHODS if not is_reference(m))
    return _PALETTE[names.index(method) % len(_PALETTE)] if method in names else "black"


def empty_figure(title: str, reason: str = "no records yet") -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.text(0.5, 0.5, reason, ha="center", va="center")
    ax.axis("off")
    fig.suptitle(title)
    return fig


def ci_errors(
    means: pd.Series, halves: pd.Series, low: float = -math.inf, high: float = math.inf
) -> np.ndarray:
    """Asymmetric error bars (2 × n) of mean ± half, clipped to [low, high]; none where there is no
    interval."""
    half = halves.fillna(0).to_numpy(float)
    mean = means.to_numpy(float)
    return np.vstack([np.minimum(half, mean - low), np.minimum(half, high - mean)]).clip(min=0)


def ci_text(ns: pd.Series) -> str:
    """What the error bars are: '95% CI over seeds' only where some point has more than one seed."""
    if len(ns) and ns.max() > 1:
        return "mean ± 95% CI over seeds" + (" (no bar: single seed)" if ns.min() == 1 else "")
    return "single seed, no CI"


def ci_summary(values: pd.Series) -> pd.Series:
    mean, half, n = stats.mean_ci(values)
    return pd.Series({"mean": mean, "half": half, "n": n})


def boost_axis(ax: plt.Axes, axis: str = "x") -> None:
    (ax.set_xscale if axis == "x" else ax.set_yscale)("symlog", linthresh=BOOST_LINTHRESH)
    signed = FuncFormatter(lambda v, _: f"{v:+g}" if v else "0")
    (ax.xaxis if axis == "x" else ax.yaxis).set_major_formatter(signed)
    (ax.axvline if axis == "x" else ax.axhline)(0, color="black", lw=0.8)


def plain_log_x(ax: plt.Axes) -> None:
    """A log x axis labelled in plain numbers."""
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(_minor_log_label))


def _minor_log_label(value: float, _pos: int) -> str:
    """Plain numbers ('0.7', not '7×10⁻¹') on a log axis's minor ticks 2, 3, 5 and 7 of each decade, few
    enough not to collide."""
    mantissa = round(value / 10 ** math.floor(math.log10(value))) if value > 0 else 0
    return f"{value:g}" if mantissa in (2, 3, 5, 7) else ""


def pair_name(pair: str) -> str:
    return pair.replace("—→", "") + " (no teacher)" if pair.startswith("—") else pair


def legend_outside(ax: plt.Axes, handles: list | None = None, **kw) -> None:
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0, **kw)
