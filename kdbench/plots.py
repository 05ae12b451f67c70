"""Figures from records only. Each function takes the records DataFrame and returns a matplotlib Figure;
`save_all` writes them as PNG under results/<profile>/figures/ (atomically)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files, not windows: batch runs and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from kdbench import results, tables  # noqa: E402
from kdbench.methods import METHODS, TECHNIQUES  # noqa: E402


def _empty(title: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.text(0.5, 0.5, f"{title}: no records yet", ha="center", va="center")
    ax.axis("off")
    return fig


def boost_per_technique(df: pd.DataFrame) -> plt.Figure:
    """Accuracy boost over the reference per technique, mean and 95% CI over seeds (pairs side by side)."""
    joined = tables.with_reference(tables.main_setting(df))
    rows = []
    for technique in TECHNIQUES:
        methods = [n for n, c in METHODS.items() if technique in c.info.techniques]
        for pair, g in joined[joined["method"].isin(methods)].groupby("pair"):
            mean, half, _ = tables.mean_ci(g["boost"])
            rows.append((technique, pair, mean, 0 if math.isnan(half) else half))
    if not rows:
        return _empty("boost per technique")
    data = pd.DataFrame(rows, columns=["technique", "pair", "mean", "half"])
    pairs = sorted(data["pair"].unique())
    techniques = [t for t in TECHNIQUES if t in set(data["technique"])]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(techniques) + 1.5))
    height = 0.8 / len(pairs)
    for i, pair in enumerate(pairs):
        d = data[data["pair"] == pair].set_index("technique").reindex(techniques)
        ys = [k + i * height for k in range(len(techniques))]
        ax.barh(ys, d["mean"], height, xerr=d["half"], label=pair, capsize=2)
    ax.set_yticks([k + 0.4 - height / 2 for k in range(len(techniques))], techniques)
    ax.axvline(0, color="black", lw=0.8)
    ax.invert_yaxis()
    ax.set_xlabel("top-1 boost over reference (points), mean ± 95% CI over seeds")
    ax.legend(fontsize=8)
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


def accuracy_vs_cost(df: pd.DataFrame, x: str, xlabel: str) -> plt.Figure:
    """Top-1 of every method (mean over seeds) against a deployment cost, with the Pareto front marked."""
    ok = tables.main_setting(df[df["status"] == "ok"])
    if ok.empty:
        return _empty(xlabel)
    points = ok.groupby(["method", "pair"], as_index=False).agg(top1=("student_top1", "mean"), cost=(x, "mean"))
    fig, ax = plt.subplots(figsize=(7, 5))
    for pair, g in points.groupby("pair"):
        ax.scatter(g["cost"], g["top1"], label=pair, alpha=0.7)
        for _, r in g.iterrows():
            ax.annotate(r["method"], (r["cost"], r["top1"]), fontsize=6, alpha=0.8)
    front = _pareto(points, "cost", "top1")
    ax.plot(front["cost"], front["top1"], "k--", lw=1, label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("student top-1 (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def boost_vs_overhead(df: pd.DataFrame) -> plt.Figure:
    """Each method's boost against its training-time overhead relative to its reference."""
    joined = tables.with_reference(tables.main_setting(df))
    joined = joined[joined["method"] != joined["compare_to"]]
    if joined.empty:
        return _empty("boost vs overhead")
    points = joined.groupby("method", as_index=False).agg(boost=("boost", "mean"), time_x=("time_x", "mean"))
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.scatter(points["time_x"], points["boost"])
    for _, r in points.iterrows():
        ax.annotate(r["method"], (r["time_x"], r["boost"]), fontsize=7)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("training time relative to reference (×, log scale)")
    ax.set_ylabel("top-1 boost (points, mean over pairs and seeds)")
    fig.tight_layout()
    return fig


def robustness_curves(df: pd.DataFrame) -> plt.Figure:
    """Top-1 against label-noise rate and against imbalance ratio, one line per method (mean ± 95% CI)."""
    ok = df[df["status"] == "ok"]
    swept = set(ok[(ok["config.label_noise"] > 0) | (ok["config.imbalance_ratio"] > 1)]["method"])
    if not swept:
        return _empty("robustness")
    first_pair = ok[ok["method"].isin(swept)]["pair"].iloc[0]
    ok = ok[ok["method"].isin(swept) & (ok["pair"] == first_pair)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, col, other, default, label in (
        (axes[0], "config.label_noise", "config.imbalance_ratio", 1.0, "symmetric label noise rate"),
        (axes[1], "config.imbalance_ratio", "config.label_noise", 0.0, "imbalance ratio (largest / smallest class)"),
    ):
        for method, g in ok[ok[other] == default].groupby("method"):
            stats = g.groupby(col)["student_top1"].apply(lambda s: tables.mean_ci(s)[:2]).apply(pd.Series)
            ax.errorbar(stats.index, stats[0], yerr=stats[1].fillna(0), marker="o", capsize=3, label=method)
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 (%)")
        ax.legend(fontsize=8)
    axes[1].set_xscale("log")
    fig.suptitle(f"Beyond compression: {first_pair}")
    fig.tight_layout()
    return fig


def lifelong_curves(df: pd.DataFrame) -> plt.Figure:
    """Accuracy on each task's classes after every task, mean over seeds, for the task-sequence methods."""
    col = "extras.task_accuracy"
    if col not in df:
        return _empty("lifelong")
    seq = df[(df["status"] == "ok") & df[col].notna()]
    if seq.empty:
        return _empty("lifelong")
    methods = sorted(seq["method"].unique())
    fig, axes = plt.subplots(1, len(methods), figsize=(4 * len(methods), 3.5), squeeze=False)
    for ax, method in zip(axes[0], methods, strict=True):
        mats = [pd.DataFrame(m) for m in seq[seq["method"] == method][col]]
        mean = sum(mats) / len(mats)
        for task in mean.columns:
            ax.plot(mean.index[task:], mean[task][task:], marker="o", label=f"task {task}")
        ax.set_title(method)
        ax.set_xlabel("after training on task")
        ax.set_ylabel("accuracy on the task's classes (%)")
        ax.set_ylim(0, 100)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def nas_search(df: pd.DataFrame) -> plt.Figure:
    """Left: the searched candidates' proxy score against parameters (budget line, choice marked). Right: top-1
    of the searched student against the smallest and the largest candidate in budget, distilled the same way."""
    nas = df[(df["method"] == "nas") & (df["status"] == "ok")] if "extras.candidates" in df else df[:0]
    searched = nas[nas["variant"] == ""]
    if searched.empty:
        return _empty("NAS search")
    rec = searched.iloc[0]
    cands = pd.DataFrame(rec["extras.candidates"]).dropna(subset=["score"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for fits, g in cands.groupby("in_budget"):
        left.scatter(g["params"], g["score"], label="in budget" if fits else "over budget", alpha=0.8)
    for _, r in cands.iterrows():
        left.annotate(r["arch"].replace("cifar_", ""), (r["params"], r["score"]), fontsize=7)
    left.axvline(rec["extras.param_budget"], color="red", ls="--", label="parameter budget")
    left.set_xlabel("parameters")
    left.set_ylabel("proxy score (higher is better)")
    left.set_title(f"search (seed {rec['seed']}, {rec['pair']}): chose {rec['extras.chosen_arch']}", fontsize=9)
    left.legend(fontsize=7)
    summary = nas.groupby(["pair", "label"])["student_top1"].apply(lambda v: tables.mean_ci(v)[:2]).apply(pd.Series)
    for i, (pair, g) in enumerate(summary.groupby(level=0)):
        labels = [lbl for _, lbl in g.index]
        right.errorbar([x + 0.1 * i for x in range(len(labels))], g[0], yerr=g[1].fillna(0), fmt="o", capsize=3,
                       label=pair)
        right.set_xticks(range(len(labels)), labels, fontsize=8)
    right.set_ylabel("student top-1 (%), mean ± 95% CI over seeds")
    right.legend(fontsize=7)
    fig.tight_layout()
    return fig


FIGURES = {
    "boost_per_technique": boost_per_technique,
    "accuracy_vs_size": lambda df: accuracy_vs_cost(df, "deployable_bytes", "deployable size (bytes, log scale)"),
    "accuracy_vs_latency": lambda df: accuracy_vs_cost(df, "latency_ms_b1", "latency at batch 1 (ms, log scale)"),
    "boost_vs_overhead": boost_vs_overhead,
    "robustness": robustness_curves,
    "lifelong": lifelong_curves,
    "nas_search": nas_search,
}


def save(fig: plt.Figure, path: str | Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return results.atomic_write_bytes(path, buffer.getvalue())


def save_all(results_dir: str | Path) -> dict[str, Path]:
    df = tables.load_frame(results_dir)
    out = Path(results_dir) / "figures"
    return {name: save(make(df), out / f"{name}.png") for name, make in FIGURES.items()}
