"""Figures from records only. Each function takes the records DataFrame (tables.load_frame) and returns a
titled matplotlib Figure; `save_all` writes them as PNG under results/<profile>/figures/ (atomically).

Conventions shared by every figure, so that they read at a glance and alike:
- a method has one colour everywhere (`method_colour`, fixed by the registry);
- reference runs (the student alone, QAT alone, ...; MethodInfo.technique "Reference") are drawn grey and
  dashed, labelled "reference" and tagged with gid "reference"; they are never on a Pareto front;
- error bars are 95% t-intervals over seeds (stats.mean_ci) only when there is more than one seed, and are
  clipped to the metric's range; labels go in legends, never as text on the data;
- boosts are drawn on a symmetric-log axis (linear within ±1 point), so that a few large losses do not squeeze
  the bulk of the methods into a sliver.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files, not windows: batch runs and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

from kdbench import results, stats, tables  # noqa: E402
from kdbench.methods import METHODS, TECHNIQUES  # noqa: E402

REFERENCE_GID = "reference"
REFERENCE_COLOUR = "0.45"
# tab20 without its two greys (grey is the references'), then tab20b: 38 colours
_PALETTE = [c for i, c in enumerate(plt.get_cmap("tab20").colors) if i not in (14, 15)] + list(
    plt.get_cmap("tab20b").colors
)
_PAIR_MARKERS = "osD^v<>pPh*"
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


def _empty(title: str, reason: str = "no records yet") -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.text(0.5, 0.5, reason, ha="center", va="center")
    ax.axis("off")
    fig.suptitle(title)
    return fig


def _ci_errors(
    means: pd.Series, halves: pd.Series, low: float = -math.inf, high: float = math.inf
) -> np.ndarray:
    """Asymmetric error bars (2 × n) of mean ± half, clipped to [low, high]; none where there is no
    interval."""
    half = halves.fillna(0).to_numpy(float)
    mean = means.to_numpy(float)
    return np.vstack([np.minimum(half, mean - low), np.minimum(half, high - mean)]).clip(min=0)


def _ci_text(ns: pd.Series) -> str:
    """What the error bars are: '95% CI over seeds' only where some point has more than one seed."""
    if len(ns) and ns.max() > 1:
        return "mean ± 95% CI over seeds" + (" (no bar: single seed)" if ns.min() == 1 else "")
    return "single seed, no CI"


def _summary(values: pd.Series) -> pd.Series:
    mean, half, n = stats.mean_ci(values)
    return pd.Series({"mean": mean, "half": half, "n": n})


def _boost_axis(ax: plt.Axes, axis: str = "x") -> None:
    (ax.set_xscale if axis == "x" else ax.set_yscale)("symlog", linthresh=BOOST_LINTHRESH)
    signed = FuncFormatter(lambda v, _: f"{v:+g}" if v else "0")
    (ax.xaxis if axis == "x" else ax.yaxis).set_major_formatter(signed)
    (ax.axvline if axis == "x" else ax.axhline)(0, color="black", lw=0.8)


def _plain_log_x(ax: plt.Axes) -> None:
    """A log x axis labelled in plain numbers."""
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(_minor_log_label))


def _minor_log_label(value: float, _pos: int) -> str:
    """Plain numbers ('0.7', not '7×10⁻¹') on a log axis's minor ticks 2, 3, 5 and 7 of each decade, few
    enough not to collide."""
    mantissa = round(value / 10 ** math.floor(math.log10(value))) if value > 0 else 0
    return f"{value:g}" if mantissa in (2, 3, 5, 7) else ""


def _pair_name(pair: str) -> str:
    return pair.replace("—→", "") + " (no teacher)" if pair.startswith("—") else pair


def boost_per_technique(df: pd.DataFrame) -> plt.Figure:
    """Accuracy boost over the reference per technique and pair: per-seed values pooled as tables.POOLING
    says."""
    title = "Accuracy boost over the reference, per technique"
    joined = tables.with_reference(tables.main_setting(df))
    rows = []
    for technique in TECHNIQUES:
        g = joined[joined["method"].isin(tables.technique_methods(technique))]
        for pair, gp in g.groupby("pair"):
            rows.append({"technique": technique, "pair": pair, **_summary(tables.per_seed(gp, "boost"))})
    data = pd.DataFrame(rows)
    if data.empty or data["n"].max() == 0:
        return _empty(title)
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
            xerr=_ci_errors(d["mean"], d["half"]),
            label=_pair_name(pair),
            capsize=2,
            color=plt.get_cmap("Set2")(i % 8),
        )
    ax.set_yticks(np.arange(len(techniques)) + 0.4 - height / 2, techniques)
    _boost_axis(ax)
    ax.invert_yaxis()
    ax.set_xlabel(f"top-1 boost over the reference (points, symlog), {_ci_text(data['n'])}")
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


def _legend_outside(ax: plt.Axes, handles: list | None = None, **kw) -> None:
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0, **kw)


def _method_points(df: pd.DataFrame, col: str) -> pd.DataFrame:
    """Per (method, pair): mean top-1 with its 95% CI over seeds, and the mean of `col`."""
    ok = tables.usable(tables.main_setting(df))
    rows = []
    for (method, pair), g in ok.groupby(["method", "pair"]):
        top1 = g.groupby("seed")["student_top1"].mean()
        rows.append({"method": method, "pair": pair, "cost": g[col].mean(), **_summary(top1)})
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
        return _empty(title)
    fig, ax = plt.subplots(figsize=(10, 6))
    pairs = sorted(points["pair"].unique())
    markers = {p: _PAIR_MARKERS[i % len(_PAIR_MARKERS)] for i, p in enumerate(pairs)}
    dodge = _dodge(points)
    for (method, pair), g in points.groupby(["method", "pair"]):
        ref = is_reference(method)
        ax.errorbar(
            g["cost"] * dodge[g.index],
            g["mean"],
            yerr=_ci_errors(g["mean"], g["half"], 0, 100),
            fmt=markers[pair],
            color=method_colour(method),
            mfc="none" if ref else None,
            ms=7,
            capsize=2,
            alpha=0.85,
            ls="none",
            gid=REFERENCE_GID if ref else method,
        )
    front = _pareto(points[~references(points["method"])], "cost", "mean")
    if len(front):
        ax.plot(front["cost"], front["mean"], "k-", lw=1, alpha=0.6, gid="pareto")
    _plain_log_x(ax)
    ax.set_xlabel(f"{xlabel}; points of equal cost spread by up to ±{DODGE:.0%} to stay apart")
    ax.set_ylabel(f"student top-1 (%), {_ci_text(points['n'])}")
    shown = sorted(points["method"].unique(), key=lambda m: (is_reference(m), m))
    handles = [
        Line2D([], [], color=method_colour(m), marker="o", ls="none", label=m)
        for m in shown
        if not is_reference(m)
    ]
    handles += [
        Line2D(
            [],
            [],
            color=REFERENCE_COLOUR,
            marker="o",
            mfc="none",
            ls="none",
            gid=REFERENCE_GID,
            label="reference: " + ", ".join(m for m in shown if is_reference(m)),
        )
    ]
    handles += [
        Line2D([], [], color="black", marker=mk, ls="none", label=_pair_name(p)) for p, mk in markers.items()
    ]
    handles += [Line2D([], [], color="black", lw=1, alpha=0.6, label="Pareto front (methods only)")]
    _legend_outside(ax, handles)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def boost_vs_overhead(df: pd.DataFrame) -> plt.Figure:
    """Each method's boost (pooled over pairs per seed) against its standalone training time relative to its
    reference (geometric mean); the reference itself sits at (×1, +0)."""
    title = "Accuracy boost against training-time overhead"
    joined = tables.with_reference(tables.main_setting(df))
    joined = joined[~references(joined["method"])]
    rows = [
        {"method": m, "time_x": tables.pooled_ratio(g, "time_x"), **_summary(tables.per_seed(g, "boost"))}
        for m, g in joined.groupby("method")
    ]
    points = pd.DataFrame(rows, columns=["method", "time_x", "mean", "half", "n"])
    points = points.dropna(subset=["mean", "time_x"])
    if points.empty:
        return _empty(title)
    fig, ax = plt.subplots(figsize=(10, 6))
    for _, r in points.iterrows():
        yerr = None if r["n"] < 2 else [[r["half"]], [r["half"]]]
        ax.errorbar(
            [r["time_x"]],
            [r["mean"]],
            yerr=yerr,
            fmt="o",
            color=method_colour(r["method"]),
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
        color=REFERENCE_COLOUR,
        ls="none",
        gid=REFERENCE_GID,
        label="reference (each method's own: ×1, +0)",
    )
    _boost_axis(ax, "y")
    _plain_log_x(ax)
    ax.set_xlabel("standalone training time relative to the reference (×, log scale)")
    ax.set_ylabel(f"top-1 boost (points, symlog), {_ci_text(points['n'])}")
    _legend_outside(ax)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _line(ax: plt.Axes, method: str, xs, means, errors=None, **kw) -> None:
    """One method's curve in its colour; a reference run grey and dashed, labelled as the reference."""
    ref = is_reference(method)
    style = {
        "color": method_colour(method),
        "ls": "--" if ref else "-",
        "marker": "x" if ref else "o",
        "label": f"{method} (reference)" if ref else method,
        "gid": REFERENCE_GID if ref else method,
    }
    if errors is None:
        ax.plot(xs, means, **style, **kw)
    else:
        ax.errorbar(xs, means, yerr=errors, capsize=3, **style, **kw)


def robustness_curves(df: pd.DataFrame) -> plt.Figure:
    """Top-1 against label-noise rate and against imbalance ratio, one line per method (mean ± 95% CI)."""
    cells, pair = tables.swept(df)
    title = "Beyond compression: top-1 under label noise and class imbalance" + (f" ({pair})" if pair else "")
    if cells.empty:
        return _empty(title)
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
            s = g.groupby(col).apply(lambda c: _summary(c.groupby("seed")["student_top1"].mean()))
            ns.append(s["n"])
            _line(ax, method, s.index, s["mean"], _ci_errors(s["mean"], s["half"], 0, 100))
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 (%)")
    axes[1].set_xscale("log")
    axes[0].set_title(_ci_text(pd.concat(ns)) if ns else "", fontsize=8)
    _legend_outside(axes[1])
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def lifelong_curves(df: pd.DataFrame) -> plt.Figure:
    """Accuracy on each task's classes after every task, mean over seeds, for the task-sequence methods. Runs
    whose final top-1 is at chance are kept here: forgetting every earlier task is what this figure shows."""
    title = "Lifelong: accuracy on each task's classes after each task (mean over seeds)"
    col = "extras.task_accuracy"
    if col not in df:
        return _empty(title)
    seq = df[(df["status"] == "ok") & ~df["stale"] & df[col].notna()]
    if seq.empty:
        return _empty(title)
    methods = sorted(seq["method"].unique())
    fig, axes = plt.subplots(1, len(methods), figsize=(4 * len(methods), 3.8), squeeze=False)
    for ax, method in zip(axes[0], methods, strict=True):
        runs = seq[seq["method"] == method]
        mean = sum(pd.DataFrame(m) for m in runs[col]) / len(runs)
        for task in mean.columns:
            ax.plot(mean.index[task:], mean[task][task:], marker="o", label=f"task {task}")
        name = f"{method} (reference)" if is_reference(method) else method
        ax.set_title(
            f"{name}: {runs['seed'].nunique()} seeds",
            fontsize=9,
            gid=REFERENCE_GID if is_reference(method) else method,
        )
        ax.set_xlabel("after training on task")
        ax.set_ylabel("accuracy on the task's classes (%)")
        ax.set_ylim(0, 100)
    _legend_outside(axes[0][-1])
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def nas_search(df: pd.DataFrame) -> plt.Figure:
    """Left: the searched candidates' proxy score against parameters (budget line, choice marked). Right:
    top-1 of the searched student against the smallest and the largest candidate in budget, distilled the same
    way."""
    title = "NAS-based distillation: the search and its choice"
    nas = tables.usable(df[df["method"] == "nas"]) if "extras.candidates" in df else df[:0]
    searched = nas[nas["variant"] == ""]
    if searched.empty:
        return _empty(title)
    rec = searched.iloc[0]
    cands = pd.DataFrame(rec["extras.candidates"]).dropna(subset=["score"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (_, r) in enumerate(cands.iterrows()):
        chosen = r["arch"] == rec["extras.chosen_arch"]
        left.scatter(
            r["params"],
            r["score"],
            marker=_PAIR_MARKERS[i % len(_PAIR_MARKERS)],
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
        lambda g: _summary(g.groupby("seed")["student_top1"].mean())
    )
    for i, (pair, g) in enumerate(summary.groupby(level=0)):
        labels = [lbl if lbl != "nas" else "nas (searched)" for _, lbl in g.index]
        right.errorbar(
            [x + 0.1 * i for x in range(len(labels))],
            g["mean"],
            capsize=3,
            fmt="o",
            yerr=_ci_errors(g["mean"], g["half"], 0, 100),
            label=_pair_name(pair),
        )
        right.set_xticks(range(len(labels)), labels, fontsize=8)
    right.set_ylabel(f"student top-1 (%), {_ci_text(summary['n'])}")
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
        return _empty(title)
    if "epoch_top1" not in df or df["epoch_top1"].isna().all():
        return _empty(title, "no per-epoch accuracy in these records")
    ok = tables.usable(tables.main_setting(df))
    ok = ok[ok["epoch_top1"].map(lambda v: isinstance(v, list) and len(v) > 0)]
    # one point per epoch of one training run; a run in phases (lifelong: a curve per task) has its own figure
    ok = ok[[len(curve) == epochs for curve, epochs in zip(ok["epoch_top1"], ok["epochs"], strict=True)]]
    pairs = ok[~ok["teacher_free"]][["teacher", "student", "pair"]].drop_duplicates().sort_values("pair")
    if pairs.empty:
        return _empty(title, "no per-epoch accuracy in these records")
    shown = ["baseline", *representatives(set(ok["method"]))]
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.5 * len(pairs) + 2, 4.5), squeeze=False, sharey=True)
    for ax, (_, p) in zip(axes[0], pairs.iterrows(), strict=True):
        runs = tables.on_pair(ok, p["teacher"], p["student"])
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
    _legend_outside(axes[0][-1])
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
    df = tables.load_frame(results_dir)
    out = Path(results_dir) / "figures"
    return {name: save(make(df), out / f"{name}.png") for name, make in FIGURES.items()}
