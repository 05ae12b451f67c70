"""Figures of how runs behaved, from records only: test top-1 after every epoch (`epoch_curves`), under label
noise and class imbalance (`robustness_curves`), on each task of a task sequence (`lifelong_curves`), and a NAS
method's search (`nas_search`). Each takes the records DataFrame (frame.load_frame) and returns a titled
matplotlib Figure, drawn as `kdbench.figure_style` says; `kdbench.plots.FIGURES` lists them with the Table 4
figures.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from kdbench import figure_style
from kdbench.frame import main_setting, on_pair, swept, usable
from kdbench.methods import METHODS, TECHNIQUES


def _line(ax: plt.Axes, method: str, xs, means, errors=None, **kw) -> None:
    """One method's curve in its colour; a reference run grey and dashed, labelled as the reference."""
    ref = figure_style.is_reference(method)
    style = {
        "color": figure_style.method_colour(method),
        "ls": "--" if ref else "-",
        "marker": "x" if ref else "o",
        "label": f"{method} (reference)" if ref else method,
        "gid": figure_style.REFERENCE_GID if ref else method,
    }
    if errors is None:
        ax.plot(xs, means, **style, **kw)
    else:
        ax.errorbar(xs, means, yerr=errors, capsize=3, **style, **kw)


def robustness_curves(df: pd.DataFrame) -> plt.Figure:
    """Top-1 against label-noise rate and against imbalance ratio, one line per method (mean ± 95% CI)."""
    cells, pair = swept(df)
    title = "Beyond compression: top-1 under label noise and class imbalance" + (f" ({pair})" if pair else "")
    if cells.empty:
        return figure_style.empty_figure(title)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ns = []
    for ax, col, other, default, label in (
        (axes[0], "config.label_noise", "config.imbalance_ratio", 1.0, "symmetric label noise rate"),
        (
            axes[1],
            "config.imbalance_ratio",
            "config.label_noise",
            0.0,
            "imbalance ratio (largest / smallest class)",
        ),
    ):
        for method, g in cells[cells[other] == default].groupby("method"):
            s = g.groupby(col).apply(
                lambda c: figure_style.ci_summary(c.groupby("seed")["student_top1"].mean())
            )
            ns.append(s["n"])
            _line(ax, method, s.index, s["mean"], figure_style.ci_errors(s["mean"], s["half"], 0, 100))
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 (%)")
    axes[1].set_xscale("log")
    axes[0].set_title(figure_style.ci_text(pd.concat(ns)) if ns else "", fontsize=8)
    figure_style.legend_outside(axes[1])
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def lifelong_curves(df: pd.DataFrame) -> plt.Figure:
    """Accuracy on each task's classes after every task, mean over seeds, for the task-sequence methods. Runs
    whose final top-1 is at chance are kept here: forgetting every earlier task is what this figure shows."""
    title = "Lifelong: accuracy on each task's classes after each task (mean over seeds)"
    col = "extras.task_accuracy"
    if col not in df:
        return figure_style.empty_figure(title)
    seq = df[(df["status"] == "ok") & ~df["stale"] & df[col].notna()]
    if seq.empty:
        return figure_style.empty_figure(title)
    methods = sorted(seq["method"].unique())
    fig, axes = plt.subplots(1, len(methods), figsize=(4 * len(methods), 3.8), squeeze=False)
    for ax, method in zip(axes[0], methods, strict=True):
        runs = seq[seq["method"] == method]
        mean = sum(pd.DataFrame(m) for m in runs[col]) / len(runs)
        for task in mean.columns:
            ax.plot(mean.index[task:], mean[task][task:], marker="o", label=f"task {task}")
        name = f"{method} (reference)" if figure_style.is_reference(method) else method
        ax.set_title(
            f"{name}: {runs['seed'].nunique()} seeds",
            fontsize=9,
            gid=figure_style.REFERENCE_GID if figure_style.is_reference(method) else method,
        )
        ax.set_xlabel("after training on task")
        ax.set_ylabel("accuracy on the task's classes (%)")
        ax.set_ylim(0, 100)
    figure_style.legend_outside(axes[0][-1])
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def nas_search(df: pd.DataFrame) -> plt.Figure:
    """Left: the searched candidates' proxy score against parameters (budget line, choice marked). Right:
    top-1 of the searched student against the smallest and the largest candidate in budget, distilled the same
    way."""
    title = "NAS-based distillation: the search and its choice"
    nas = usable(df[df["method"] == "nas"]) if "extras.candidates" in df else df[:0]
    searched = nas[nas["variant"] == ""]
    if searched.empty:
        return figure_style.empty_figure(title)
    rec = searched.iloc[0]
    cands = pd.DataFrame(rec["extras.candidates"]).dropna(subset=["score"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (_, r) in enumerate(cands.iterrows()):
        chosen = r["arch"] == rec["extras.chosen_arch"]
        left.scatter(
            r["params"],
            r["score"],
            marker=figure_style.PAIR_MARKERS[i % len(figure_style.PAIR_MARKERS)],
            s=90 if chosen else 40,
            facecolors=None if r["in_budget"] else "none",
            edgecolors="black" if chosen else None,
            label=f"{r['arch'].replace('cifar_', '')}{' (chosen)' if chosen else ''}"
            f"{'' if r['in_budget'] else ' (over budget)'}",
        )
    left.axvline(rec["extras.param_budget"], color="red", ls="--", label="parameter budget")
    left.set_xlabel("parameters")
    left.set_ylabel("proxy score (higher is better)")
    left.set_title(f"search: seed {rec['seed']}, {rec['pair']}", fontsize=9)
    left.legend(fontsize=7)
    summary = nas.groupby(["pair", "label"]).apply(
        lambda g: figure_style.ci_summary(g.groupby("seed")["student_top1"].mean())
    )
    for i, (pair, g) in enumerate(summary.groupby(level=0)):
        labels = [lbl if lbl != "nas" else "nas (searched)" for _, lbl in g.index]
        right.errorbar(
            [x + 0.1 * i for x in range(len(labels))],
            g["mean"],
            capsize=3,
            fmt="o",
            yerr=figure_style.ci_errors(g["mean"], g["half"], 0, 100),
            label=figure_style.pair_name(pair),
        )
        right.set_xticks(range(len(labels)), labels, fontsize=8)
    right.set_ylabel(f"student top-1 (%), {figure_style.ci_text(summary['n'])}")
    right.set_title("searched student against the budget's extremes", fontsize=9)
    right.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def representatives(available: set[str]) -> list[str]:
    """One method per technique for the per-epoch figure: among the methods that have runs, the technique's
    founding method where it ran (kd for response-based KD: `CANONICAL`), else the first registered one."""
    picks: dict[str, str] = {}
    for name in sorted(available & set(METHODS), key=lambda n: (n not in CANONICAL, list(METHODS).index(n))):
        picks.setdefault(METHODS[name].info.technique, name)
    return [picks[t] for t in TECHNIQUES if t in picks]


CANONICAL = {
    "kd",
    "fitnet",
    "rkd",
    "dml",
    "pskd",
    "crossmodal",
    "irg",
    "at",
    "dafl",
    "adversarial",
    "qkd",
    "nas",
    "lwf",
    "multiteacher",
}


def epoch_curves(df: pd.DataFrame) -> plt.Figure:
    """Test top-1 after every epoch (mean over seeds), per pair: the baseline as the reference, and one method
    per technique. Skipped (an empty figure that says why) when the records carry no per-epoch accuracy."""
    title = "Test top-1 after each epoch (mean over seeds): baseline and one method per technique"
    if df.empty:
        return figure_style.empty_figure(title)
    if "epoch_top1" not in df or df["epoch_top1"].isna().all():
        return figure_style.empty_figure(title, "no per-epoch accuracy in these records")
    ok = usable(main_setting(df))
    # one point per epoch of one training run; a run in phases (lifelong: a curve per task) has its own figure.
    # A boolean array, not a list: an empty list would select no columns rather than no rows.
    whole = [isinstance(c, list) and len(c) == e for c, e in zip(ok["epoch_top1"], ok["epochs"], strict=True)]
    ok = ok[np.array(whole, dtype=bool)]
    pairs = (
        ok[~ok["teacher_free"]][["teacher", "student", "epochs", "pair"]]
        .drop_duplicates()
        .sort_values("pair")
    )
    if pairs.empty:
        return figure_style.empty_figure(title, "no per-epoch accuracy in these records")
    shown = ["baseline", *representatives(set(ok["method"]))]
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.5 * len(pairs) + 2, 4.5), squeeze=False, sharey=True)
    for ax, (_, p) in zip(axes[0], pairs.iterrows(), strict=True):
        runs = on_pair(ok, p["teacher"], p["student"], p["epochs"])
        for method in shown:
            curves = runs[runs["method"] == method]["epoch_top1"].tolist()
            if curves:
                length = min(map(len, curves))
                _line(ax, method, range(1, length + 1), np.mean([c[:length] for c in curves], axis=0), ms=3)
        ax.set_title(p["pair"], fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylim(0, 100)
    images = ok["curve_test_images"].dropna() if "curve_test_images" in ok else ok[:0]
    axes[0][0].set_ylabel(f"test top-1 (%){f' on {int(images.max())} test images' if len(images) else ''}")
    figure_style.legend_outside(axes[0][-1])
    fig.suptitle(title)
    fig.tight_layout()
    return fig
