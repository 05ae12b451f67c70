"""The survey's "key trade-off" claims (its Table 4), each tested by a targeted experiment on the bundled data.

A claim is data: the survey's wording (from survey_table4.yaml), the experiment, its design (the cells it runs,
each with the labels the analysis reads), an effect signed so that a positive value is what the survey says,
and a figure. Every claim is judged by the same rule (`VERDICT_RULE`, `verdict`), applied to the effect's 95%
t-interval over independent replicates: seeds for training runs, timing rounds for the one timing experiment.

The `claims` profile (kdbench.grid.EXPERIMENTS) fixes the data budget: the cpu profile's (fashion-mnist, recipe
cpu, 3000 training images, 4 student epochs, 12 teacher epochs, teacher_seed 0, the full test set, seeds 0-2), so
every teacher whose key matches the cpu profile's (resnet20, mobilenetv2, wrn_16_2, the noisy-label resnet20s) comes from
the same teacher cache. The student is resnet8 throughout. Cells shared by claims (baseline, kd on resnet20→resnet8)
run once. Cells run without shared teacher outputs (`share_outputs=False`), so every cell's training time is its
own method's cost; a record whose teacher outputs came from the cache has its time ignored by the cost claims.

Estimated cost on the 2-core CPU this was sized on: a cell's wall time as the cpu profile's records show it
(training plus ~4 s of measurement; e.g. baseline 11 s, kd 17 s, fitnet 17 / 46 s, lwf 32 s, multiteacher 34 s),
scaled by the teacher's forward pass, the peers, the pool, the proxy batches; teachers as their cached training
times (resnet20 1.5 min, vgg8 2.5 min, resnet56 about 3x resnet20); the timing experiment 5 methods x 4 batch
sizes x 5 rounds. Seeds 0, 1, 2 everywhere.

| # | claim | new cells | estimate |
|---|---|---|---|
| - | teachers: resnet20 (clean, 20 %, 40 % noise), mobilenetv2, wrn_16_2 (all in the cpu profile's cache), resnet14, resnet32, resnet56, resnet14 and resnet20 of seeds 200 / 300 (ensemble members 3, 4) | 10 | ~19 min cold, ~10 min with the cpu cache |
| 1 | capacity gap: baseline, kd x 4 teachers, takd x 3 teachers | 24 | ~10 min |
| 2 | feature alignment: fitnet, at, sp x 2 pairs, kd on mobilenetv2 | 21 | ~9 min |
| 3 | relation cost: step time, 5 methods x 4 batch sizes x 5 rounds | 0 (100 timings) | ~4 min |
| 4 | online cost: dml with 2, 3, 4 peers | 9 | ~4 min |
| 5 | self-distillation under noise: pskd, byot, kd, baseline x 3 noise rates | 30 | ~6 min |
| 6 | cross-modal alignment: 2 modalities x (align 0, 1) + their baselines | 18 | ~5 min |
| 7 | data-free: deepinversion pools of 128, 512, 2048 | 9 | ~10 min |
| 8 | adversarial balance: adv_weight 0, 0.1, 1, 10 | 12 | ~4 min |
| 9 | quantization: qkd and qat at 8, 4, 3, 2 bits | 24 | ~9 min |
| 10 | NAS search: proxy batches 1, 2, 8 and the largest candidate | 12 | ~5 min |
| 11 | lifelong: fine-tune, joint, LwF 1 / 10, EWC 1 / 10 | 18 | ~11 min |
| 12 | multi-teacher: 2, 3, 4 teachers x mean / confidence (kd is the 1-teacher point) | 18 | ~11 min |
|   | total | 195 | ~1.8 h cold (~1.65 h with the cpu cache) |
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files, not windows
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from kdbench import env, grid, plots, tables  # noqa: E402
from kdbench.bench import Settings, fixed_batches, interleaved_medians, ready, training_step  # noqa: E402
from kdbench.data import BatchStream  # noqa: E402
from kdbench.data.modalities import MODALITIES  # noqa: E402
from kdbench.errors import unknown  # noqa: E402
from kdbench.methods import get_method  # noqa: E402
from kdbench.record import SCHEMA_VERSION, current_code_version  # noqa: E402
from kdbench.results import atomic_write_text, record_path, write_record  # noqa: E402
from kdbench.runner import RunConfig, build_method, default_cache_dir  # noqa: E402
from kdbench.teachers import TeacherCache  # noqa: E402

# ---- the verdict -------------------------------------------------------------------------------------------------
SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive at this scale"
VERDICT_RULE = (
    "Each claim's effect is signed so that a positive value is what the survey says. Its 95% confidence interval is "
    "the Student-t interval of the mean over independent replicates (seeds; timing rounds for claim 3). Verdict: "
    "supported if the whole interval lies above 0; not supported if the whole interval lies below 0 (the opposite "
    "was measured); inconclusive at this scale otherwise (the interval contains 0, or fewer than 2 replicates)."
)


def verdict(effect: float, half: float, n: int) -> str:
    """`VERDICT_RULE` applied to a mean effect and the half-width of its 95% interval over n replicates."""
    if n < 2 or math.isnan(effect) or math.isnan(half):
        return INCONCLUSIVE
    if effect - half > 0:
        return SUPPORTED
    if effect + half < 0:
        return NOT_SUPPORTED
    return INCONCLUSIVE


@dataclass
class Finding:
    """What one claim's experiment measured: the effect per replicate, and a table per setting."""

    values: pd.Series  # the effect of each replicate (NaN where a cell is missing)
    table: pd.DataFrame

    @property
    def summary(self) -> tuple[float, float, int]:
        return tables.mean_ci(self.values)

    @property
    def verdict(self) -> str:
        return verdict(*self.summary)


# ---- the cells ---------------------------------------------------------------------------------------------------
Entry = tuple[dict[str, Any], RunConfig]  # the labels the analysis reads, and the cell


@dataclass(frozen=True)
class Budget:
    """What the profile fixes for every claim cell; `full` is False for a plumbing check (smallest sweeps)."""

    profile: grid.Profile

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.profile.seeds

    @property
    def full(self) -> bool:
        return self.profile.meaningful

    @property
    def student(self) -> str:
        return self.profile.pairs[0].student

    @property
    def teacher(self) -> str:
        """The main teacher: the profile's first (same-family) pair's."""
        return self.profile.pairs[0].teacher

    def cfg(self, method: str, teachers: Sequence[str] = (), seed: int = 0, **fields: Any) -> RunConfig:
        p = self.profile
        return RunConfig(
            method=method, student=self.student, teachers=tuple(teachers), dataset=p.dataset, seed=seed,
            recipe=p.recipe, epochs=p.epochs, teacher_epochs=p.teacher_epochs, train_subset=p.train_subset,
            teacher_seed=p.teacher_seed if teachers else None, test_subset=p.test_subset,
            teacher_train_subset=p.teacher_train_subset if teachers else None, **fields,
        )

    def baseline(self, seed: int, **fields: Any) -> Entry:
        return {"method": "baseline"}, self.cfg("baseline", seed=seed, **fields)

    def sweep(self, values: Sequence[Any], *keep: Any) -> tuple[Any, ...]:
        """All `values`, or for a plumbing check only the ends and those the effect needs (`keep`)."""
        if self.full:
            return tuple(values)
        return tuple(v for v in values if v in (values[0], values[-1], *keep))


# ---- reading records ---------------------------------------------------------------------------------------------
METRICS = ("student_top1", "teacher_top1", "teacher_params", "train_time_s", "extras.search_time_s",
           "extras.chosen_arch", "extras.synthesis_time_s", "extras.avg_forgetting", "extras.avg_accuracy",
           "extras.task_accuracy", "teacher_output_cache.hits")


def measured(df: pd.DataFrame, entries: list[Entry]) -> pd.DataFrame:
    """One row per designed cell: its labels, seed and the metrics of its successful record (NaN if none yet)."""
    rows = pd.DataFrame([{**labels, "seed": cfg.seed, "cell_id": cfg.cell_id()} for labels, cfg in entries])
    if rows.empty:
        return rows
    ok = df[df["status"] == "ok"] if "status" in df else df.iloc[0:0]
    ok = ok.reindex(columns=["cell_id", *METRICS]).drop_duplicates("cell_id").assign(recorded=True)
    frame = rows.drop_duplicates("cell_id").merge(ok, on="cell_id", how="left")
    frame["recorded"] = frame["recorded"].notna()
    # a cell whose teacher outputs came from the shared cache did not pay for its teachers: its time is no cost
    frame.loc[frame["teacher_output_cache.hits"].fillna(0) > 0, "train_time_s"] = math.nan
    return frame


def series(frame: pd.DataFrame, value: str = "student_top1", **match: Any) -> pd.Series:
    """`value` per seed over the rows whose labels equal `match` (NaN labels match None)."""
    keep = pd.Series(True, index=frame.index)
    for column, wanted in match.items():
        col = frame[column] if column in frame else pd.Series(None, index=frame.index, dtype=object)
        keep &= col.isna() if wanted is None else col == wanted
    return frame[keep].groupby("seed")[value].mean()


def reference(frame: pd.DataFrame, is_reference: pd.Series, on: Sequence[str], value: str = "student_top1"
              ) -> pd.Series:
    """For each row, `value` of its reference row: the row of `is_reference` with equal `on` labels."""
    ref = frame[is_reference].groupby(list(on))[value].mean()
    keys = pd.MultiIndex.from_frame(frame[list(on)]) if len(on) > 1 else pd.Index(frame[on[0]])
    return pd.Series(ref.reindex(keys).to_numpy(), index=frame.index)


def minus(frame: pd.DataFrame, is_reference: pd.Series, on: Sequence[str], value: str = "student_top1") -> pd.Series:
    """Each row's `value` minus its reference row's (see `reference`)."""
    return frame[value] - reference(frame, is_reference, on, value)


def ci_text(values: pd.Series, digits: int = 2, signed: bool = True) -> str:
    """Mean ± 95% CI half-width; a value every replicate shares (one teacher's size or accuracy, a reference's
    zero) alone, since an interval of width 0 says nothing, and a shared whole number (a parameter count) as one."""
    mean, half, n = tables.mean_ci(values)
    if n == 0:
        return "—"
    shared = pd.Series(values).dropna().nunique() == 1
    if shared and float(mean).is_integer() and not signed:
        return f"{mean:,.0f}"
    text = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    return text if shared else f"{text} ± {half:.{digits}f}"


def summarise(frame: pd.DataFrame, by: Sequence[str], columns: dict[str, tuple[str, bool]]) -> pd.DataFrame:
    """A per-setting table: for each group of `by`, each `column` (label → (source, signed)) as mean ± 95% CI."""
    rows = []
    for key, g in frame.groupby(list(by), sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = {k: _label(v) for k, v in zip(by, key, strict=True)}
        row["seeds"] = int(g["recorded"].sum())
        for label, (source, signed) in columns.items():
            row[label] = ci_text(g[source], signed=signed) if source in g else "—"
        rows.append(row)
    return pd.DataFrame(rows)


def _label(value: Any) -> Any:
    """A setting as a table shows it: "—" for none, 2048 rather than the 2048.0 a column with gaps holds."""
    if pd.isna(value):
        return "—"
    return int(value) if isinstance(value, float) and value.is_integer() else value


def slope(x: pd.Series, y: pd.Series) -> float:
    """Least-squares slope of y on x (NaN with fewer than 2 distinct x)."""
    ok = x.notna() & y.notna()
    if x[ok].nunique() < 2:
        return math.nan
    return float(np.polyfit(x[ok].astype(float), y[ok].astype(float), 1)[0])


# ---- figures -----------------------------------------------------------------------------------------------------
def lines(ax: plt.Axes, frame: pd.DataFrame, x: str, y: str, by: str | None = None, points: str | None = None,
          **kw: Any) -> None:
    """Mean ± 95% CI of `y` against `x`, one line per value of `by`; one point per value of `points` (default:
    of `x`), placed at its mean `x` (e.g. one point per teacher at its accuracy)."""
    groups = frame.groupby(by, sort=False) if by else [(None, frame)]
    for name, g in groups:
        stats = [(gx[x].mean(), *tables.mean_ci(gx[y])[:2]) for _, gx in g.groupby(points or x, sort=True)]
        stats = sorted(s for s in stats if not math.isnan(s[0]) and not math.isnan(s[1]))
        if stats:
            xs, means, halves = zip(*stats, strict=True)
            ax.errorbar(xs, means, yerr=[0 if math.isnan(h) else h for h in halves], marker="o", capsize=3,
                        label=name, **kw)
    if by and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def bars(ax: plt.Axes, frame: pd.DataFrame, x: str, y: str, by: str) -> None:
    """Grouped bars of mean `y` with 95% CI, one group per `x`, one bar per `by`."""
    xs = list(dict.fromkeys(frame[x]))
    hues = list(dict.fromkeys(frame[by]))
    width = 0.8 / max(len(hues), 1)
    for i, hue in enumerate(hues):
        stats = [tables.mean_ci(frame[(frame[x] == v) & (frame[by] == hue)][y])[:2] for v in xs]
        ax.bar([k + i * width for k in range(len(xs))], [s[0] for s in stats], width,
               yerr=[0 if math.isnan(s[1]) else s[1] for s in stats], capsize=2, label=str(hue))
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(xs))], [str(v) for v in xs], fontsize=8)
    ax.axhline(0, color="black", lw=0.8)
    ax.legend(fontsize=7)


def figure(panels: int = 1, width: float = 5.0) -> tuple[plt.Figure, list[plt.Axes]]:
    fig, axes = plt.subplots(1, panels, figsize=(width * panels, 3.8), squeeze=False)
    return fig, list(axes[0])


# ---- 1. capacity gap (Response-Based KD) ---------------------------------------------------------------------------
LADDER = ("cifar_resnet14", "cifar_resnet20", "cifar_resnet32", "cifar_resnet56")  # one family, growing
ASSISTANT = "cifar_resnet14"  # takd's default assistant, between resnet8 and the larger teachers


def capacity_design(b: Budget) -> list[Entry]:
    out = []
    for seed in b.seeds:
        out.append(b.baseline(seed))
        for teacher in b.sweep(LADDER):
            out.append(({"method": "kd", "teacher": teacher}, b.cfg("kd", (teacher,), seed)))
            if teacher != ASSISTANT:
                cfg = b.cfg("takd", (teacher,), seed, hparams={"assistant": ASSISTANT})
                out.append(({"method": "takd", "teacher": teacher}, cfg))
    return out


def capacity_analysis(frame: pd.DataFrame) -> Finding:
    frame = frame.assign(boost=minus(frame, frame["method"] == "baseline", ["seed"]))
    ladder = [t for t in LADDER if t in set(frame["teacher"].dropna())]
    values = series(frame, method="kd", teacher=ladder[0]) - series(frame, method="kd", teacher=ladder[-1])
    table = summarise(frame[frame["method"] != "baseline"], ["method", "teacher"], {
        "teacher params": ("teacher_params", False), "teacher top-1 (%)": ("teacher_top1", False),
        "student top-1 (%)": ("student_top1", False), "boost over baseline (pts)": ("boost", True)})
    return Finding(values, table)


def capacity_figure(frame: pd.DataFrame) -> plt.Figure:
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


# ---- 2. feature alignment across architectures (Feature-Based KD) --------------------------------------------------
FEATURE_METHODS = ("fitnet", "at", "sp")  # a hint stage, attention maps of every stage, last-stage Gram matrices


def feature_design(b: Budget) -> list[Entry]:
    same, different = b.profile.pairs[0], b.profile.pairs[1]
    out = []
    for seed in b.seeds:
        out.append(b.baseline(seed))
        for method in (*b.sweep(FEATURE_METHODS), "kd"):
            for pair in (same, different):
                out.append(({"method": method, "pair": pair.kind}, b.cfg(method, (pair.teacher,), seed)))
    return out


def feature_analysis(frame: pd.DataFrame) -> Finding:
    frame = frame.assign(boost=minus(frame, frame["method"] == "baseline", ["seed"]))

    def gap(method: str) -> pd.Series:  # same-family minus different-family top-1, per seed
        return series(frame, method=method, pair="same-family") - series(frame, method=method, pair="different-family")

    methods = [m for m in FEATURE_METHODS if m in set(frame["method"])]
    values = pd.concat([gap(m) for m in methods], axis=1).mean(axis=1) - gap("kd")
    table = summarise(frame[frame["method"] != "baseline"], ["method", "pair"], {
        "teacher top-1 (%)": ("teacher_top1", False), "student top-1 (%)": ("student_top1", False),
        "boost over baseline (pts)": ("boost", True)})
    gaps = {m: ci_text(gap(m)) for m in [*methods, "kd"]}
    table["same − different family (pts)"] = table["method"].map(gaps)
    return Finding(values, table)


def feature_figure(frame: pd.DataFrame) -> plt.Figure:
    frame = frame.assign(boost=minus(frame, frame["method"] == "baseline", ["seed"]))
    fig, (ax,) = figure(1, 7)
    bars(ax, frame[frame["method"] != "baseline"], "method", "boost", "pair")
    ax.set_ylabel("student boost over baseline (pts)")
    return fig


# ---- 3. relation and graph cost (Relation-Based KD, Graph-Based Distillation): a timing experiment --------------
RELATION_METHODS = ("rkd", "sp", "irg")
TIMED_METHODS = (*RELATION_METHODS, "kd", "baseline")
BATCH_SIZES = (32, 64, 128, 256)
TIMING_ROUNDS = 5  # independent interleaved rounds: the replicates of the cost claim
TIMED_SAMPLES = 1024  # per measurement: steps = max(2, TIMED_SAMPLES // batch size)


@dataclass(frozen=True)
class Timing:
    """One timed measurement: a method's training step at a batch size, in one round."""

    cell: RunConfig  # built as that cell builds it (teacher from the cache), re-batched to `batch_size`
    batch_size: int
    round: int
    steps: int

    def cell_id(self) -> str:
        spec = json.dumps([self.cell.cell_id(), self.batch_size, self.round, self.steps])
        return f"step_time-{hashlib.sha256(spec.encode()).hexdigest()[:16]}"


def relation_timings(b: Budget) -> list[Timing]:
    samples = TIMED_SAMPLES if b.full else 64
    rounds = TIMING_ROUNDS if b.full else 1
    out = []
    for size in b.sweep(BATCH_SIZES):
        for r in range(rounds):
            for method in TIMED_METHODS:
                cell = b.cfg(method, () if method == "baseline" else (b.teacher,), b.seeds[0])
                out.append(Timing(cell, size, r, max(2, samples // size)))
    return out


def relation_frame(df: pd.DataFrame, timings: list[Timing]) -> pd.DataFrame:
    rows = pd.DataFrame([{"method": t.cell.method, "batch_size": t.batch_size, "round": t.round,
                          "cell_id": t.cell_id()} for t in timings])
    if rows.empty:
        return rows
    got = df.reindex(columns=["cell_id", "step_s", "batch_samples"]).dropna().drop_duplicates("cell_id")
    frame = rows.merge(got.assign(recorded=True), on="cell_id", how="left")
    return frame.assign(recorded=frame["recorded"].notna(), seed=frame["round"])  # rounds are the replicates


def _versus_kd(frame: pd.DataFrame) -> pd.DataFrame:
    """Each step against kd's in the same round and batch size (the same teacher forward, a response-only loss):
    the ratio, and the extra time per sample in microseconds."""
    kd = reference(frame, frame["method"] == "kd", ["round", "batch_size"], "step_s")
    return frame.assign(step_ms=1000 * frame["step_s"], per_sample_us=1e6 * frame["step_s"] / frame["batch_samples"],
                        vs_kd=frame["step_s"] / kd, extra_us=1e6 * (frame["step_s"] - kd) / frame["batch_samples"])


def relation_analysis(frame: pd.DataFrame) -> Finding:
    frame = _versus_kd(frame)
    small, large = frame["batch_size"].min(), frame["batch_size"].max()
    growth = [series(frame, "extra_us", method=m, batch_size=large) - series(frame, "extra_us", method=m,
                                                                             batch_size=small)
              for m in RELATION_METHODS]
    values = pd.concat(growth, axis=1).mean(axis=1) if small != large else pd.Series(dtype=float)
    table = summarise(frame, ["method", "batch_size"], {
        "step (ms)": ("step_ms", False), "time vs kd (×)": ("vs_kd", False),
        "extra µs / sample over kd": ("extra_us", True)})
    return Finding(values, table.rename(columns={"seeds": "rounds"}))


def relation_figure(frame: pd.DataFrame) -> plt.Figure:
    frame = _versus_kd(frame)
    fig, (left, right) = figure(2)
    lines(left, frame, "batch_size", "per_sample_us", "method")
    left.set_ylabel("training step time per sample (µs)")
    lines(right, frame[frame["method"] != "kd"], "batch_size", "vs_kd", "method")
    right.axhline(1, color="black", lw=0.8)
    right.set_ylabel("step time relative to kd (×)")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
    return fig


def measure_timings(timings: list[Timing], results_dir: str | Path, device: str = "auto",
                    cache_dir: str | Path | None = None) -> int:
    """Time the training steps not yet recorded, one batch size at a time, all methods interleaved within a round
    (a drift in background load hits them alike); one record per measurement. Returns how many were measured."""
    dev = env.resolve_device(device)
    cache = TeacherCache(cache_dir or default_cache_dir())
    todo = [t for t in timings if not record_path(results_dir, t.cell_id()).exists()]
    for size in sorted({t.batch_size for t in todo}):
        group = [t for t in todo if t.batch_size == size]
        cells = {t.cell.method: t.cell for t in group}
        steps: dict[str, Callable[[int], object]] = {}
        counts: dict[str, int] = {}
        for name, cell in cells.items():
            method, prepared, _ = build_method(cell, dev, cache, progress=False)
            s = prepared.train
            stream, _ = ready(method, BatchStream(s.images, s.labels, s.info, size, s.seed, True, s.device, s.index))
            batches = fixed_batches(stream, group[0].steps)
            steps[name], counts[name] = training_step(method, batches, cell.recipe), len(batches[0])
        rounds = sorted({t.round for t in group})
        for r in rounds:
            settings = Settings(warmup=2 if r == rounds[0] else 0, repeats=1, steps=group[0].steps)
            seconds = interleaved_medians(steps, settings, dev)
            for t in (t for t in group if t.round == r):
                write_record(timing_record(t, seconds[t.cell.method], counts[t.cell.method], dev), results_dir)
    return len(todo)


def timing_record(t: Timing, step_s: float, batch_samples: int, device: Any) -> dict[str, Any]:
    return {"schema": SCHEMA_VERSION, "kind": "step_time", "status": "ok", "cell_id": t.cell_id(),
            "method": t.cell.method, "code_version": current_code_version(t.cell.method),
            "student": t.cell.student, "teacher": t.cell.teachers[0] if t.cell.teachers else None,
            "teachers": list(t.cell.teachers), "dataset": t.cell.dataset, "seed": t.cell.seed,
            "config": t.cell.resolve(), "batch_size": t.batch_size, "batch_samples": batch_samples,
            "round": t.round, "steps": t.steps, "step_s": step_s, "env": env.describe(device),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


# ---- 4. online distillation cost (Online Distillation) -------------------------------------------------------------
PEERS = (2, 3, 4)


def online_design(b: Budget) -> list[Entry]:
    out = []
    for seed in b.seeds:
        out.append(b.baseline(seed))
        out += [({"method": "dml", "peers": k}, b.cfg("dml", (), seed, hparams={"peers": k})) for k in b.sweep(PEERS)]
    return out


def _versus_baseline(frame: pd.DataFrame) -> pd.DataFrame:
    base = frame["method"] == "baseline"
    return frame.assign(boost=minus(frame, base, ["seed"]),
                        time_x=frame["train_time_s"] / reference(frame, base, ["seed"], "train_time_s"))


def online_analysis(frame: pd.DataFrame) -> Finding:
    frame = _versus_baseline(frame)
    dml = frame[frame["method"] == "dml"]
    values = dml.groupby("seed").apply(lambda g: slope(g["peers"], g["time_x"]), include_groups=False)
    table = summarise(dml, ["peers"], {"train time vs baseline (×)": ("time_x", False),
                                       "train time (s)": ("train_time_s", False),
                                       "boost over baseline (pts)": ("boost", True)})
    return Finding(values, table)


def online_figure(frame: pd.DataFrame) -> plt.Figure:
    dml = _versus_baseline(frame)
    dml = dml[dml["method"] == "dml"]
    fig, (left, right) = figure(2)
    lines(left, dml, "peers", "time_x")
    left.set_ylabel("training time relative to baseline (×)")
    lines(right, dml, "peers", "boost")
    right.axhline(0, color="black", lw=0.8)
    right.set_ylabel("boost over baseline (pts)")
    for ax in (left, right):
        ax.set_xlabel("peers trained together")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


# ---- 5. self-distillation under label noise (Self-Distillation) ----------------------------------------------------
NOISE = (0.0, 0.2, 0.4)
SELF_METHODS = ("pskd", "byot")


def noise_design(b: Budget) -> list[Entry]:
    out = []
    for seed in b.seeds:
        for noise in b.sweep(NOISE):
            labels, cfg = b.baseline(seed, label_noise=noise)
            out.append(({**labels, "noise": noise}, cfg))
            out += [({"method": m, "noise": noise}, b.cfg(m, (), seed, label_noise=noise)) for m in SELF_METHODS]
            out.append(({"method": "kd", "noise": noise}, b.cfg("kd", (b.teacher,), seed, label_noise=noise)))
    return out


def noise_analysis(frame: pd.DataFrame) -> Finding:
    frame = frame.assign(boost=minus(frame, frame["method"] == "baseline", ["seed", "noise"]))
    low, high = frame["noise"].min(), frame["noise"].max()
    drops = [series(frame, "boost", method=m, noise=low) - series(frame, "boost", method=m, noise=high)
             for m in SELF_METHODS]
    values = pd.concat(drops, axis=1).mean(axis=1)
    table = summarise(frame, ["method", "noise"], {"top-1 (%)": ("student_top1", False),
                                                   "boost over baseline (pts)": ("boost", True)})
    return Finding(values, table)


def noise_figure(frame: pd.DataFrame) -> plt.Figure:
    frame = frame.assign(boost=minus(frame, frame["method"] == "baseline", ["seed", "noise"]))
    fig, (left, right) = figure(2)
    lines(left, frame, "noise", "student_top1", "method")
    left.set_ylabel("top-1 on the clean test set (%)")
    lines(right, frame[frame["method"] != "baseline"], "noise", "boost", "method")
    right.axhline(0, color="black", lw=0.8)
    right.set_ylabel("boost over baseline at that noise (pts)")
    for ax in (left, right):
        ax.set_xlabel("symmetric label noise (kd's teacher trained on the same labels)")
    return fig


# ---- 6. cross-modal feature alignment (Cross-Modal Distillation) ---------------------------------------------------
# Gupta et al. 2016 supervise the paired modality with the L2 feature loss alone, unweighted; added to KD here at
# the same unit weight (at initialisation it is about a fifth of the KD term on resnet20 → resnet8 embeddings)
ALIGN_WEIGHT = 1.0


def crossmodal_design(b: Budget) -> list[Entry]:
    out = []
    for seed in b.seeds:
        for modality in MODALITIES:
            out.append(({"method": "crossmodal_baseline", "modality": modality},
                        b.cfg("crossmodal_baseline", (), seed, hparams={"modality": modality})))
            for weight in (0.0, ALIGN_WEIGHT):
                cfg = b.cfg("crossmodal", (b.teacher,), seed, hparams={"modality": modality, "align_weight": weight})
                out.append(({"method": "crossmodal", "modality": modality, "align_weight": weight}, cfg))
    return out


def crossmodal_analysis(frame: pd.DataFrame) -> Finding:
    frame = frame.assign(boost=minus(frame, frame["method"] == "crossmodal_baseline", ["seed", "modality"]))
    gains = [series(frame, method="crossmodal", modality=m, align_weight=ALIGN_WEIGHT)
             - series(frame, method="crossmodal", modality=m, align_weight=0.0) for m in MODALITIES]
    values = pd.concat(gains, axis=1).mean(axis=1)
    table = summarise(frame, ["modality", "method", "align_weight"], {
        "top-1 (%)": ("student_top1", False), "boost over the modality's baseline (pts)": ("boost", True)})
    return Finding(values, table)


def crossmodal_figure(frame: pd.DataFrame) -> plt.Figure:
    frame = frame.assign(boost=minus(frame, frame["method"] == "crossmodal_baseline", ["seed", "modality"]))
    kd = frame[frame["method"] == "crossmodal"]
    fig, (ax,) = figure(1, 6)
    bars(ax, kd.assign(alignment=kd["align_weight"].map(lambda w: f"align_weight {w:g}")), "modality", "boost",
         "alignment")
    ax.set_ylabel("boost over the same modality's baseline (pts)")
    return fig


# ---- 7. data-free KD and its synthetic data (Data-Free KD) ---------------------------------------------------------
POOL_SIZES = (128, 512, 2048)
SYNTHESIS_STEPS = 20  # the cpu profile's deepinversion setting (its time budget)


def datafree_design(b: Budget) -> list[Entry]:
    out = []
    for seed in b.seeds:
        out.append(b.baseline(seed))
        out.append(({"method": "kd", "pool_size": math.nan}, b.cfg("kd", (b.teacher,), seed)))
        for pool in b.sweep(POOL_SIZES):
            cfg = b.cfg("deepinversion", (b.teacher,), seed,
                        hparams={"pool_size": pool, "synthesis_steps": SYNTHESIS_STEPS})
            out.append(({"method": "deepinversion", "pool_size": pool}, cfg))
    return out


def datafree_analysis(frame: pd.DataFrame) -> Finding:
    di = frame[frame["method"] == "deepinversion"]
    values = series(di, pool_size=di["pool_size"].max()) - series(di, pool_size=di["pool_size"].min())
    frame = frame.assign(boost=minus(frame, frame["method"] == "baseline", ["seed"]),
                         vs_kd=minus(frame, frame["method"] == "kd", ["seed"]))
    table = summarise(frame[frame["method"] != "baseline"], ["method", "pool_size"], {
        "synthesis time (s)": ("extras.synthesis_time_s", False), "top-1 (%)": ("student_top1", False),
        "vs real-data kd (pts)": ("vs_kd", True), "boost over baseline (pts)": ("boost", True)})
    return Finding(values, table)


def datafree_figure(frame: pd.DataFrame) -> plt.Figure:
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


# ---- 8. adversarial vs distillation balance (Adversarial KD) -------------------------------------------------------
ADV_WEIGHTS = (0.0, 0.1, 1.0, 10.0)
BALANCED = 0.1  # the adversarial method's default: KD leads, the adversarial term refines


def adversarial_design(b: Budget) -> list[Entry]:
    out = []
    for seed in b.seeds:
        out.append(b.baseline(seed))
        for w in b.sweep(ADV_WEIGHTS, BALANCED):
            out.append(({"method": "adversarial", "adv_weight": w},
                        b.cfg("adversarial", (b.teacher,), seed, hparams={"adv_weight": w})))
    return out


def adversarial_analysis(frame: pd.DataFrame) -> Finding:
    frame = frame.assign(boost=minus(frame, frame["method"] == "baseline", ["seed"]))
    adv = frame[frame["method"] == "adversarial"]
    mid = series(adv, adv_weight=BALANCED)
    ends = [mid - series(adv, adv_weight=w) for w in (adv["adv_weight"].min(), adv["adv_weight"].max())]
    values = pd.concat(ends, axis=1).min(axis=1, skipna=False)  # the balanced weight must beat both ends
    table = summarise(adv, ["adv_weight"], {"top-1 (%)": ("student_top1", False),
                                            "boost over baseline (pts)": ("boost", True)})
    return Finding(values, table)


def adversarial_figure(frame: pd.DataFrame) -> plt.Figure:
    frame = frame.assign(boost=minus(frame, frame["method"] == "baseline", ["seed"]))
    fig, (ax,) = figure(1, 6)
    lines(ax, frame[frame["method"] == "adversarial"], "adv_weight", "boost")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("adversarial loss weight (distillation weight fixed)")
    ax.set_ylabel("boost over baseline (pts)")
    return fig


# ---- 9. quantization bit width (Quantized KD) ----------------------------------------------------------------------
BITS = (8, 4, 3, 2)


def quantized_design(b: Budget) -> list[Entry]:
    out = []
    for seed in b.seeds:
        for bits in b.sweep(BITS):
            out.append(({"method": "qkd", "bits": bits}, b.cfg("qkd", (b.teacher,), seed, hparams={"bits": bits})))
            out.append(({"method": "qat", "bits": bits}, b.cfg("qat", (), seed, hparams={"bits": bits})))
    return out


def quantized_analysis(frame: pd.DataFrame) -> Finding:
    qkd = frame[frame["method"] == "qkd"]
    values = series(qkd, bits=qkd["bits"].max()) - series(qkd, bits=qkd["bits"].min())
    frame = frame.assign(kd_gain=minus(frame, frame["method"] == "qat", ["seed", "bits"]))
    table = summarise(frame, ["bits", "method"], {"top-1 (%)": ("student_top1", False),
                                                  "KD gain over qat (pts)": ("kd_gain", True)})
    return Finding(values, table)


def quantized_figure(frame: pd.DataFrame) -> plt.Figure:
    fig, (ax,) = figure(1, 6)
    lines(ax, frame, "bits", "student_top1", "method")
    ax.set_xlabel("weight and activation bits (first and last layer at 8)")
    ax.set_ylabel("student top-1 (%)")
    return fig


# ---- 10. NAS search cost (NAS-Based Distillation) ------------------------------------------------------------------
PROXY_BATCHES = (1, 2, 8)


def nas_design(b: Budget) -> list[Entry]:
    default = get_method("nas").defaults["proxy_batches"]
    out = []
    for seed in b.seeds:
        for n in b.sweep(PROXY_BATCHES, default):
            out.append(({"pick": "search", "proxy_batches": n},
                        b.cfg("nas", (b.teacher,), seed, hparams={"proxy_batches": n})))
        out.append(({"pick": "largest", "proxy_batches": math.nan}, b.cfg("nas", (b.teacher,), seed,
                                                                           hparams={"pick": "largest"})))
    return out


def _nas_costs(frame: pd.DataFrame) -> pd.DataFrame:
    search = frame["extras.search_time_s"].where(frame["pick"] == "search", 0.0)
    return frame.assign(search_s=search, distil_s=frame["train_time_s"] - search,
                        search_x=search / (frame["train_time_s"] - search),
                        vs_largest=minus(frame, frame["pick"] == "largest", ["seed"]))


def nas_analysis(frame: pd.DataFrame) -> Finding:
    frame = _nas_costs(frame)
    default = get_method("nas").defaults["proxy_batches"]
    values = series(frame, "search_x", pick="search", proxy_batches=default) - 1.0
    table = summarise(frame, ["pick", "proxy_batches"], {
        "search (s)": ("search_s", False), "distillation (s)": ("distil_s", False),
        "search / distillation (×)": ("search_x", False), "top-1 (%)": ("student_top1", False),
        "vs largest (pts)": ("vs_largest", True)})
    chosen = frame.groupby(["pick", "proxy_batches"], sort=False, dropna=False)["extras.chosen_arch"].agg(
        lambda s: ", ".join(sorted({str(v).replace("cifar_", "") for v in s.dropna()})) or "—")
    table["chosen"] = chosen.to_numpy()  # the same groups in the same order as the table's
    return Finding(values, table)


def nas_figure(frame: pd.DataFrame) -> plt.Figure:
    frame = _nas_costs(frame)
    fig, (left, right) = figure(2)
    for (pick, n), g in frame.groupby(["pick", "proxy_batches"], sort=False):
        label = "largest in budget (no search)" if pick == "largest" else f"search, {n:.0f} proxy batches"
        left.errorbar(g["search_s"].mean(), g["student_top1"].mean(), xerr=g["search_s"].std(),
                      yerr=g["student_top1"].std(), fmt="o", capsize=3, label=label)
    left.set_xlabel("search time (s), mean ± sd over seeds")
    left.set_ylabel("student top-1 (%)")
    left.legend(fontsize=7)
    lines(right, frame[frame["pick"] == "search"], "proxy_batches", "search_x")
    right.axhline(1, color="black", lw=0.8, ls="--", label="search = distillation")
    right.set_xlabel("proxy batches scored per candidate")
    right.set_ylabel("search time / distillation time (×)")
    right.legend(fontsize=7)
    return fig


# ---- 11. lifelong retention (Lifelong Distillation) ----------------------------------------------------------------
# LwF's paper weight 1 and ten times it; EWC 1 and 10: in a check at the cpu recipe's lr 0.1 (2 epochs a task),
# weight 30 blew up on the last task and 100 diverged
RETENTION = {"lwf": (1.0, 10.0), "ewc": (1.0, 10.0)}


def lifelong_design(b: Budget) -> list[Entry]:
    out = []
    for seed in b.seeds:
        out.append(({"method": "lifelong_finetune", "term": "none", "weight": 0.0},
                    b.cfg("lifelong_finetune", (), seed)))
        out.append(({"method": "lifelong_joint", "term": "none", "weight": math.nan},
                    b.cfg("lifelong_joint", (), seed)))
        for term, weights in RETENTION.items():
            for w in b.sweep(weights):
                hp = {"lwf_weight": w} if term == "lwf" else {"lwf_weight": 0.0, "ewc_weight": w}
                out.append(({"method": "lwf", "term": term, "weight": w}, b.cfg("lwf", (), seed, hparams=hp)))
    return out


def _lifelong_columns(frame: pd.DataFrame) -> pd.DataFrame:
    last = frame["extras.task_accuracy"].map(lambda m: m[-1][-1] if isinstance(m, list) and m else math.nan)
    return frame.assign(new_task=last, forgetting=frame["extras.avg_forgetting"],
                        average=frame["extras.avg_accuracy"])


def lifelong_analysis(frame: pd.DataFrame) -> Finding:
    frame = _lifelong_columns(frame)
    sides = []
    for term in RETENTION:
        w = frame[frame["term"] == term]["weight"].max()
        kept = series(frame, "forgetting", method="lifelong_finetune") - series(frame, "forgetting", term=term,
                                                                                 weight=w)
        lost = series(frame, "new_task", method="lifelong_finetune") - series(frame, "new_task", term=term, weight=w)
        sides.append(pd.concat([kept, lost], axis=1).min(axis=1, skipna=False))  # both sides of the trade-off
    values = pd.concat(sides, axis=1).mean(axis=1)
    table = summarise(frame, ["method", "term", "weight"], {
        "avg forgetting (pts)": ("forgetting", False), "new-task accuracy (%)": ("new_task", False),
        "avg accuracy, all tasks (%)": ("average", False)})
    return Finding(values, table)


def lifelong_figure(frame: pd.DataFrame) -> plt.Figure:
    frame = _lifelong_columns(frame)
    fig, (ax,) = figure(1, 6)
    for (method, term, w), g in frame.groupby(["method", "term", "weight"], sort=False, dropna=False):
        label = method if term == "none" else f"{term} weight {w:g}"
        ax.errorbar(g["forgetting"].mean(), g["new_task"].mean(), xerr=g["forgetting"].std(),
                    yerr=g["new_task"].std(), fmt="o", capsize=3, label=label)
    ax.set_xlabel("average forgetting (pts; lower keeps more)")
    ax.set_ylabel("accuracy on the newest task (%)")
    ax.legend(fontsize=7)
    return fig


# ---- 12. multi-teacher cost (Multi-Teacher Distillation) -----------------------------------------------------------
WEIGHTINGS = ("mean", "confidence")
ENSEMBLE_EXTRA = ("cifar_resnet14", "cifar_resnet20")  # members 3 and 4 (teacher i is trained with seed 100 i)


def multiteacher_design(b: Budget) -> list[Entry]:
    members = (b.teacher, *b.profile.extra_teachers[:1], *ENSEMBLE_EXTRA)
    out = []
    for seed in b.seeds:
        out.append(b.baseline(seed))
        out.append(({"method": "kd", "teachers": 1, "weighting": "single"}, b.cfg("kd", members[:1], seed)))
        for k in b.sweep(range(2, len(members) + 1)):
            for weighting in WEIGHTINGS:
                cfg = b.cfg("multiteacher", members[:k], seed, hparams={"weighting": weighting})
                out.append(({"method": "multiteacher", "teachers": k, "weighting": weighting}, cfg))
    return out


def multiteacher_analysis(frame: pd.DataFrame) -> Finding:
    frame = _versus_baseline(frame)
    single = frame[frame["method"] == "kd"]
    slopes = []
    for weighting in WEIGHTINGS:  # kd is both lines' 1-teacher point
        rows = pd.concat([single, frame[frame["weighting"] == weighting]])
        slopes.append(rows.groupby("seed").apply(lambda g: slope(g["teachers"], g["time_x"]), include_groups=False))
    values = pd.concat(slopes, axis=1).mean(axis=1)
    table = summarise(frame[frame["method"] != "baseline"], ["teachers", "weighting"], {
        "train time vs baseline (×)": ("time_x", False), "top-1 (%)": ("student_top1", False),
        "boost over baseline (pts)": ("boost", True)})
    return Finding(values, table)


def multiteacher_figure(frame: pd.DataFrame) -> plt.Figure:
    frame = _versus_baseline(frame)
    single = frame[frame["method"] == "kd"]
    both = pd.concat([pd.concat([single, frame[frame["weighting"] == w]]).assign(weighting=w) for w in WEIGHTINGS])
    fig, (left, right) = figure(2)
    lines(left, both, "teachers", "time_x", "weighting")
    left.set_ylabel("training time relative to baseline (×)")
    lines(right, both, "teachers", "boost", "weighting")
    right.axhline(0, color="black", lw=0.8)
    right.set_ylabel("boost over baseline (pts)")
    for ax in (left, right):
        ax.set_xlabel("teachers (1 = kd)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


# ---- the claims --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Claim:
    number: int
    key: str
    techniques: tuple[str, ...]  # the survey's Table 4 row(s); the first gives the wording
    experiment: str
    effect: str  # the measured effect, signed so that positive = what the survey says
    analyse: Callable[[pd.DataFrame], Finding]
    draw: Callable[[pd.DataFrame], plt.Figure]
    design: Callable[[Budget], list[Entry]] = lambda b: []
    timings: Callable[[Budget], list[Timing]] = lambda b: []

    @property
    def survey(self) -> str:
        return tables.survey_labels()[self.techniques[0]]["key_trade_off"]

    @property
    def figure_name(self) -> str:
        return f"claim_{self.number:02d}_{self.key}.png"

    def cells(self, b: Budget) -> list[RunConfig]:
        return [cfg for _, cfg in self.design(b)]

    def frame(self, df: pd.DataFrame, b: Budget) -> pd.DataFrame:
        if self.timings(b):
            return relation_frame(df, self.timings(b))
        return measured(df, self.design(b))

    def evaluate(self, df: pd.DataFrame, b: Budget) -> tuple[Finding, plt.Figure]:
        frame = self.frame(df, b)
        if frame.empty or not frame["recorded"].any():
            return Finding(pd.Series(dtype=float), pd.DataFrame()), plots._empty(f"claim {self.number}")
        fig = self.draw(frame)
        fig.suptitle(f"{self.number}. {' / '.join(self.techniques)}: {self.survey}", fontsize=9)
        fig.tight_layout()
        return self.analyse(frame), fig


CLAIMS: tuple[Claim, ...] = (
    Claim(1, "capacity_gap", ("Response-Based KD",),
          "kd from 4 growing teachers of one family (resnet14, 20, 32, 56) to resnet8; takd (assistant resnet14) "
          "from the larger three",
          "kd top-1 with the smallest teacher minus with the largest (pts): a larger teacher teaches worse",
          capacity_analysis, capacity_figure, capacity_design),
    Claim(2, "feature_alignment", ("Feature-Based KD",),
          "fitnet, at and sp on a same-family (resnet20→resnet8) and a different-family (mobilenetv2→resnet8) pair; kd on "
          "both as the control for the teachers' different accuracy",
          "feature methods' same- minus different-family top-1, minus kd's (pts): alignment costs across families",
          feature_analysis, feature_figure, feature_design),
    Claim(3, "relation_cost", ("Relation-Based KD", "Graph-Based Distillation"),
          "training-step time of rkd, sp and irg against kd and baseline (resnet20→resnet8) at batch 32, 64, 128, "
          f"256; {TIMING_ROUNDS} interleaved rounds",
          "growth of the extra time per sample over kd from the smallest to the largest batch, mean of rkd, sp, "
          "irg (µs): a cost superlinear in the batch",
          relation_analysis, relation_figure, timings=relation_timings),
    Claim(4, "online_cost", ("Online Distillation",),
          "dml with 2, 3, 4 peers against the student trained alone",
          "slope of training time (× baseline) per added peer: peers cost as they train together",
          online_analysis, online_figure, online_design),
    Claim(5, "self_distillation_noise", ("Self-Distillation",),
          "pskd and byot against baseline and kd (teacher trained on the same noisy labels) at 0, 20, 40 % "
          "symmetric label noise",
          "self-distillation's boost over baseline at 0 % minus at 40 % noise (pts, mean of pskd and byot): noise "
          "erodes it",
          noise_analysis, noise_figure, noise_design),
    Claim(6, "crossmodal_alignment", ("Cross-Modal Distillation",),
          f"crossmodal (image teacher resnet20) with align_weight 0 and {ALIGN_WEIGHT:g} on both paired modalities "
          "(profile, edges), each against its modality's baseline",
          "top-1 with minus without the feature-alignment term (pts, mean over modalities): alignment is needed",
          crossmodal_analysis, crossmodal_figure, crossmodal_design),
    Claim(7, "datafree_quality", ("Data-Free KD",),
          f"deepinversion ({SYNTHESIS_STEPS} steps) with 128, 512, 2048 synthetic images, against kd on the real "
          "images",
          "top-1 with the largest minus the smallest synthetic pool (pts): more synthetic data, better student",
          datafree_analysis, datafree_figure, datafree_design),
    Claim(8, "adversarial_balance", ("Adversarial KD",),
          "adversarial with adv_weight 0, 0.1 (default), 1, 10 at fixed distillation weight",
          "top-1 at the balanced weight 0.1 minus the better of the two ends, 0 and 10 (pts): balance beats both",
          adversarial_analysis, adversarial_figure, adversarial_design),
    Claim(9, "quantization_bits", ("Quantized KD",),
          "qkd (with KD) and qat (without) at 8, 4, 3, 2 bits",
          "qkd top-1 at 8 bits minus at 2 bits (pts): accuracy falls with the bits",
          quantized_analysis, quantized_figure, quantized_design),
    Claim(10, "nas_search_cost", ("NAS-Based Distillation",),
          "nas search (DisWOT proxy) with 1, 2, 8 proxy batches per candidate, against the largest candidate in "
          "budget without search",
          "search time over the chosen student's distillation time, minus 1, at the default 2 proxy batches: the "
          "search costs more than the training it serves",
          nas_analysis, nas_figure, nas_design),
    Claim(11, "lifelong_retention", ("Lifelong Distillation",),
          "5 class-incremental tasks: LwF weight 1, 10 and EWC weight 1, 10 between fine-tuning (no retention) and "
          "joint training (upper bound)",
          "smaller of forgetting avoided and new-task accuracy lost, strongest retention vs fine-tuning (pts, mean "
          "of LwF and EWC): retention has a price, so it must be chosen",
          lifelong_analysis, lifelong_figure, lifelong_design),
    Claim(12, "multiteacher_cost", ("Multi-Teacher Distillation",),
          "multiteacher with 2, 3, 4 teachers (resnet20, wrn_16_2, resnet14, resnet20 of another seed), mean and "
          "confidence weighting; kd from resnet20 is the 1-teacher point (the same loss with one teacher)",
          "slope of training time (× baseline) per added teacher, mean of both weightings: teachers cost",
          multiteacher_analysis, multiteacher_figure, multiteacher_design),
)


def get_claims(keys: Sequence[str] | None = None) -> list[Claim]:
    by_key = {c.key: c for c in CLAIMS}
    for key in keys or ():
        if key not in by_key:
            raise unknown("claim", key, by_key)
    return [by_key[k] for k in keys] if keys else list(CLAIMS)


def _unique(cells: list[RunConfig]) -> list[RunConfig]:
    return list({cfg.cell_id(): cfg for cfg in cells}.values())


def all_cells(profile: grid.Profile, keys: Sequence[str] | None = None) -> list[RunConfig]:
    """Every training cell of the claims (each shared cell once); grid.all_cells calls this for the profile."""
    b = Budget(profile)
    return _unique([cfg for claim in get_claims(keys) for cfg in claim.cells(b)])


def smoke_profile() -> grid.Profile:
    """The claims on a plumbing budget: one seed, one epoch, tiny subsets, the smallest sweeps."""
    return dataclasses.replace(
        grid.EXPERIMENTS["claims"], name="claims-smoke", seeds=(0,), epochs=1, teacher_epochs=1, train_subset=128,
        teacher_train_subset=None, test_subset=200, meaningful=False, description="The claims' plumbing check; numbers mean nothing.")


def plan(profile: grid.Profile) -> pd.DataFrame:
    """Cells per claim, and how many are new (not run by an earlier claim), plus the timing measurements."""
    b, seen, rows = Budget(profile), set(), []
    for claim in CLAIMS:
        ids = {cfg.cell_id() for cfg in claim.cells(b)}
        rows.append({"claim": claim.number, "key": claim.key, "cells": len(ids), "new cells": len(ids - seen),
                     "timed steps": len(claim.timings(b))})
        seen |= ids
    return pd.DataFrame(rows)


def run(profile: grid.Profile | str = "claims", results_dir: str | Path | None = None, device: str = "auto",
        workers: int | None = None, executor: str | None = None, cache_dir: str | Path | None = None,
        keys: Sequence[str] | None = None, progress: bool = True) -> dict[str, int]:
    """Run the claims' unfinished cells, then their unrecorded timings (alone, after the cells, so no training
    shares the machine with them). Teacher outputs are not shared between cells: each cell's time is its cost."""
    profile = grid.get_profile(profile) if isinstance(profile, str) else profile
    results_dir = grid.results_dir_for(profile.name, results_dir)
    counts = grid.run_grid(profile, results_dir, device=device, cache_dir=cache_dir, workers=workers,
                           progress=progress, cells=all_cells(profile, keys), executor=executor, share_outputs=False)
    timings = [t for claim in get_claims(keys) for t in claim.timings(Budget(profile))]
    counts["timed"] = measure_timings(timings, results_dir, device, cache_dir)
    return counts


# ---- the report --------------------------------------------------------------------------------------------------
def report(df: pd.DataFrame, profile: grid.Profile) -> tuple[pd.DataFrame, dict[int, Finding], dict[int, plt.Figure]]:
    """One row per claim (wording, experiment, effect ± 95% CI, verdict), with each claim's finding and figure."""
    b = Budget(profile)
    rows, findings, figures = [], {}, {}
    for claim in CLAIMS:
        finding, fig = claim.evaluate(df, b)
        findings[claim.number], figures[claim.number] = finding, fig
        mean, half, n = finding.summary
        rows.append({
            "#": claim.number, "technique": " / ".join(claim.techniques), "the survey says": claim.survey,
            "experiment": claim.experiment, "effect (positive = as the survey says)": claim.effect,
            "measured (95% CI)": tables.fmt(mean, half), "replicates": n, "verdict": finding.verdict,
            "figure": f"[figure](figures/{claim.figure_name})",
        })
    return pd.DataFrame(rows), findings, figures


def write_report(results_dir: str | Path, profile: grid.Profile | str = "claims") -> Path:
    """results_dir/claims.md (and claims.csv) and one figure per claim under results_dir/figures/, all from the
    records in results_dir and written atomically. Returns the Markdown path."""
    profile = grid.get_profile(profile) if isinstance(profile, str) else profile
    results_dir = Path(results_dir)
    df = tables.load_frame(results_dir)
    summary, findings, figures = report(df, profile)
    for claim in CLAIMS:
        plots.save(figures[claim.number], results_dir / "figures" / claim.figure_name)
    lines_ = [f"# The survey's key trade-offs, tested ({profile.name} profile)", "",
              "Generated by `kdbench.claims.write_report` from the records in `records/`; do not edit.", "",
              f"Data: {profile.dataset}, {profile.train_subset or 'all'} training images, {profile.epochs} student "
              f"epochs, {profile.teacher_epochs} teacher epochs, seeds {', '.join(map(str, profile.seeds))}, "
              f"student {Budget(profile).student}.", "", f"**Verdict rule.** {VERDICT_RULE}", "",
              tables.to_markdown(summary), ""]
    for claim in CLAIMS:
        finding = findings[claim.number]
        lines_ += [f"## {claim.number}. {' / '.join(claim.techniques)}: {claim.survey}", "",
                   f"- experiment: {claim.experiment}", f"- effect: {claim.effect}",
                   f"- measured: {tables.fmt(*finding.summary[:2])} over {finding.summary[2]} replicates → "
                   f"**{finding.verdict}**", "", tables.to_markdown(finding.table), "",
                   f"![claim {claim.number}](figures/{claim.figure_name})", ""]
    atomic_write_text(results_dir / "claims.csv", summary.to_csv(index=False))
    return atomic_write_text(results_dir / "claims.md", "\n".join(lines_))
