"""Figures from records only: the measured Table 4 and what the methods cost (boost per technique, top-1 against
deployable size and latency, boost against training-time overhead), and the registry of every figure
(`FIGURES`, with `kdbench.run_figures`' figures of how runs behaved). Each function takes the records DataFrame
(frame.load_frame) and returns a titled matplotlib Figure, drawn as `kdbench.figure_style` says; `save_all`
writes them all as PNG under results/<profile>/figures/ (atomically).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from kdbench import figure_style, results, tables
from kdbench.frame import load_frame, main_setting, usable, with_reference
from kdbench.methods import TECHNIQUES
from kdbench.run_figures import epoch_curves, lifelong_curves, nas_search, robustness_curves


def boost_per_technique(df: pd.DataFrame) -> plt.Figure:
    """Accuracy boost over the reference per technique and pair: per-seed values pooled as tables.POOLING
    says."""
    title = "Accuracy boost over the reference, per technique"
    joined = with_reference(main_setting(df))
    rows = []
    for technique in TECHNIQUES:
        g = joined[joined["method"].isin(tables.technique_methods(technique))]
        for pair, gp in g.groupby("pair"):
            rows.append(
                {
                    "technique": technique,
                    "pair": pair,
                    **figure_style.ci_summary(tables.per_seed(gp, "boost")),
                }
            )
    data = pd.DataFrame(rows)
    if data.empty or data["n"].max() == 0:
        return figure_style.empty_figure(title)
    data = data[data["n"] > 0]
    pairs = sorted(data["pair"].unique())
    techniques = [t for t in TECHNIQUES if t in set(data["technique"])]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(techniques) + 2))
    height = 0.8 / len(pairs)
    for i, pair in enumerate(pairs):
        d = data[data["pair"] == pair].set_index("technique").reindex(techniques)
        ys = np.arange(len(techniques)) + i * height
        ax.barh(
            ys,
            d["mean"],
            height,
            xerr=figure_style.ci_errors(d["mean"], d["half"]),
            label=figure_style.pair_name(pair),
            capsize=2,
            color=plt.get_cmap("Set2")(i % 8),
        )
    ax.set_yticks(np.arange(len(techniques)) + 0.4 - height / 2, techniques)
    figure_style.boost_axis(ax)
    ax.invert_yaxis()
    ax.set_xlabel(f"top-1 boost over the reference (points, symlog), {figure_style.ci_text(data['n'])}")
    ax.legend(fontsize=8, title="teacher → student", title_fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _pareto(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Points not beaten by another with smaller-or-equal x and higher y."""
    best, front = -math.inf, []
    for _, row in points.sort_values([x, y], ascending=[True, False]).iterrows():
        if row[y] > best:
            front.append(row)
            best = row[y]
    return pd.DataFrame(front)


def _method_points(df: pd.DataFrame, col: str) -> pd.DataFrame:
    """Per (method, pair): mean top-1 with its 95% CI over seeds, and the mean of `col`."""
    ok = usable(main_setting(df))
    rows = []
    for (method, pair), g in ok.groupby(["method", "pair"]):
        top1 = g.groupby("seed")["student_top1"].mean()
        rows.append({"method": method, "pair": pair, "cost": g[col].mean(), **figure_style.ci_summary(top1)})
    return pd.DataFrame(rows, columns=["method", "pair", "cost", "mean", "half", "n"])


DODGE = 0.12  # at most ±12% on a log cost axis: points of one cost stay apart and near their value


def _dodge(points: pd.DataFrame) -> pd.Series:
    """A multiplicative x offset per point: points sharing a cost (every method deploys the same student) are
    spread evenly over ±DODGE instead of drawn on top of each other."""
    factor = pd.Series(1.0, index=points.index)
    for _, same in points.groupby("cost"):
        if len(same) > 1:
            factor[same.sort_values(["method", "pair"]).index] = np.linspace(1 - DODGE, 1 + DODGE, len(same))
    return factor


def accuracy_vs_cost(df: pd.DataFrame, x: str, xlabel: str, title: str) -> plt.Figure:
    """Top-1 of every method on every pair against a deployment cost; the Pareto front of the methods
    (references excluded); references drawn grey. Colour: method; marker: pair."""
    points = _method_points(df, x).dropna(subset=["cost", "mean"])
    if points.empty:
        return figure_style.empty_figure(title)
    fig, ax = plt.subplots(figsize=(10, 6))
    pairs = sorted(points["pair"].unique())
    markers = {p: figure_style.PAIR_MARKERS[i % len(figure_style.PAIR_MARKERS)] for i, p in enumerate(pairs)}
    dodge = _dodge(points)
    for (method, pair), g in points.groupby(["method", "pair"]):
        ref = figure_style.is_reference(method)
        ax.errorbar(
            g["cost"] * dodge[g.index],
            g["mean"],
            yerr=figure_style.ci_errors(g["mean"], g["half"], 0, 100),
            fmt=markers[pair],
            color=figure_style.method_colour(method),
            mfc="none" if ref else None,
            ms=7,
            capsize=2,
            alpha=0.85,
            ls="none",
            gid=figure_style.REFERENCE_GID if ref else method,
        )
    front = _pareto(points[~figure_style.references(points["method"])], "cost", "mean")
    if len(front):
        ax.plot(front["cost"], front["mean"], "k-", lw=1, alpha=0.6, gid="pareto")
    figure_style.plain_log_x(ax)
    ax.set_xlabel(f"{xlabel}; points of equal cost spread by up to ±{DODGE:.0%} to stay apart")
    ax.set_ylabel(f"student top-1 (%), {figure_style.ci_text(points['n'])}")
    shown = sorted(points["method"].unique(), key=lambda m: (figure_style.is_reference(m), m))
    handles = [
        Line2D([], [], color=figure_style.method_colour(m), marker="o", ls="none", label=m)
        for m in shown
        if not figure_style.is_reference(m)
    ]
    handles += [
        Line2D(
            [],
            [],
            color=figure_style.REFERENCE_COLOUR,
            marker="o",
            mfc="none",
            ls="none",
            gid=figure_style.REFERENCE_GID,
            label="reference: " + ", ".join(m for m in shown if figure_style.is_reference(m)),
        )
    ]
    handles += [
        Line2D([], [], color="black", marker=mk, ls="none", label=figure_style.pair_name(p))
        for p, mk in markers.items()
    ]
    handles += [Line2D([], [], color="black", lw=1, alpha=0.6, label="Pareto front (methods only)")]
    figure_style.legend_outside(ax, handles)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def boost_vs_overhead(df: pd.DataFrame) -> plt.Figure:
    """Each method's boost (pooled over pairs per seed) against its standalone training time relative to its
    reference (geometric mean); the reference itself sits at (×1, +0)."""
    title = "Accuracy boost against training-time overhead"
    joined = with_reference(main_setting(df))
    joined = joined[~figure_style.references(joined["method"])]
    rows = [
        {
            "method": m,
            "time_x": tables.pooled_ratio(g, "time_x"),
            **figure_style.ci_summary(tables.per_seed(g, "boost")),
        }
        for m, g in joined.groupby("method")
    ]
    points = pd.DataFrame(rows, columns=["method", "time_x", "mean", "half", "n"])
    points = points.dropna(subset=["mean", "time_x"])
    if points.empty:
        return figure_style.empty_figure(title)
    fig, ax = plt.subplots(figsize=(10, 6))
    for _, r in points.iterrows():
        yerr = None if r["n"] < 2 else [[r["half"]], [r["half"]]]
        ax.errorbar(
            [r["time_x"]],
            [r["mean"]],
            yerr=yerr,
            fmt="o",
            color=figure_style.method_colour(r["method"]),
            capsize=3,
            ms=7,
            label=r["method"],
            gid=r["method"],
        )
    ax.plot(
        [1],
        [0],
        marker="X",
        ms=10,
        color=figure_style.REFERENCE_COLOUR,
        ls="none",
        gid=figure_style.REFERENCE_GID,
        label="reference (each method's own: ×1, +0)",
    )
    figure_style.boost_axis(ax, "y")
    figure_style.plain_log_x(ax)
    ax.set_xlabel("standalone training time relative to the reference (×, log scale)")
    ax.set_ylabel(f"top-1 boost (points, symlog), {figure_style.ci_text(points['n'])}")
    figure_style.legend_outside(ax)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


FIGURES = {
    "boost_per_technique": boost_per_technique,
    "accuracy_vs_size": lambda df: accuracy_vs_cost(
        df, "deployable_bytes", "deployable size (bytes, log scale)", "Top-1 against deployable size"
    ),
    "accuracy_vs_latency": lambda df: accuracy_vs_cost(
        df, "latency_ms_b1", "latency at batch 1 (ms, log scale)", "Top-1 against batch-1 latency"
    ),
    "boost_vs_overhead": boost_vs_overhead,
    "epoch_curves": epoch_curves,
    "robustness": robustness_curves,
    "lifelong": lifelong_curves,
    "nas_search": nas_search,
}


def save(fig: plt.Figure, path: str | Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return results.atomic_write_bytes(path, buffer.getvalue())


def save_all(results_dir: str | Path) -> dict[str, Path]:
    df = load_frame(results_dir)
    out = Path(results_dir) / "figures"
    return {name: save(make(df), out / f"{name}.png") for name, make in FIGURES.items()}
