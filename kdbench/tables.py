"""The survey's tables rebuilt from records: the method catalogue (Tables 1–3) and the measured Table 4.

Nothing here is typed by hand: every number comes from records under results/, and every label from a
documented rule (LABEL_RULES) applied to those numbers. The survey's own labels come from survey_table4.yaml,
as data. Statistics follow POOLING: the replicate is the seed, and copies of one run are counted once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from kdbench import results
from kdbench.data.catalog import DATASETS
from kdbench.methods import METHODS, TECHNIQUES, catalogue
from kdbench.stats import fmt, is_collapsed, mean_ci
from kdbench.stats import t_critical as t_critical  # re-exported: callers read the statistics from here too
from kdbench.wall_time import compute_time

POOLING = (
    "The replicate is the seed. Each record is one run; copies of a teacher-free run (the same method, "
    "variant, student, seed and data setting, recorded once per pair by older grids) count once. A method's "
    "value on a pair is its mean per seed, and its 95% CI is over seeds (n = distinct seeds). A technique "
    "pools its methods and pairs within each seed first - the mean over its methods on each (pair, seed), "
    "then the mean over pairs for that seed - and its CI is over those per-seed values, so n is the number "
    "of distinct seeds: never methods, pairs or copies. Pairs are not counted as replicates because every "
    "boost on one seed is measured against the same reference run (the student trained alone with that "
    "seed), so their errors are shared. Failed, stale and collapsed runs (top-1 within 5 pts of chance) are "
    "counted and left out of every mean; a boost whose reference collapsed is left out too."
)

# How a measurement becomes a label. The survey's labels compare its 15 techniques with each other and give no
# absolute thresholds, and the size of a boost or of a cost ratio depends on the dataset, schedule and
# networks (a 4-epoch run's boosts are not a 240-epoch run's). So a label is the technique's rank among the
# techniques measured in the same results folder: terciles of that rank (lowest third Low, middle Moderate,
# top third High), and Very High for a top outlier (beyond Tukey's upper fence, Q3 + 1.5 IQR, of the measured
# values; log scale for ratios; needs 4 or more measured techniques). A survey range such as "Moderate-High"
# agrees with either end.
LABEL_RULES = {
    "accuracy_boost": "rank of the pooled boost (top-1 points over the method's reference, mean over seeds "
    "per POOLING): terciles Low / Moderate / High, Very High for a top outlier",
    "resource_efficiency": "rank of the training footprint, reversed (smallest footprint = High): footprint "
    "= geometric mean of trained parameters (deployed + extra, over the plain "
    "student's) and training FLOPs per sample, both relative to the method's "
    "reference; Very High for an outlier on the small side. Not the deployable's size "
    "(the pair fixes that), and not peak memory (on the CPU it is a resident-set "
    "figure not comparable between runs)",
    "computational_complexity": "rank of the standalone training time relative to the reference (geometric "
    "mean per POOLING): terciles Low / Moderate / High, Very High for a top "
    "outlier",
}
LEVELS = ("Low", "Moderate", "High")
TOP_LEVEL = "Very High"
MARKS = {True: "✔", False: "✘"}
KINDS = ("accuracy_boost", "resource_efficiency", "computational_complexity")

# What makes two runs the same experiment, apart from the method and the teachers: boosts compare a method
# with its reference on the same student, seed and data setting, whatever the teacher.
SETTING = [
    "dataset",
    "student",
    "seed",
    "config.label_noise",
    "config.imbalance_ratio",
    "epochs",
    "config.train_subset",
    "config.test_subset",
]
_TEACHER_CONFIG = (
    "config.teachers",
    "config.teacher_epochs",
    "config.teacher_seed",
    "config.teacher_train_subset",
)
_DEFAULTS = (
    ("config.label_noise", 0.0),
    ("config.imbalance_ratio", 1.0),
    ("compare_to", "baseline"),
    ("stale", False),
    ("config.train_subset", None),
    ("config.test_subset", None),
)
# Where a record keeps its test top-1 after every epoch (kdbench.runner.EpochCurve writes `curve_top1`, on a
# fixed subset of `curve_test_images` test images); the frame calls it `epoch_top1`.
EPOCH_CURVE_FIELDS = ("epoch_top1", "curve_top1")
# The columns the tables and figures read; an empty results folder gets a frame with these and no rows.
COLUMNS = [
    "cell_id",
    "method",
    "variant",
    "status",
    "stale",
    "collapsed",
    *SETTING,
    "teacher",
    "compare_to",
    "student_top1",
    "teacher_top1",
    "train_time_s",
    "standalone_train_time_s",
    "train_samples_per_s",
    "train_flops_per_sample",
    "deployable_bytes",
    "teacher_bytes",
    "latency_ms_b1",
    "teacher_latency_ms_b1",
    "extra_params",
    "student_params",
    "peak_memory_bytes",
    "error",
    "failed_step",
    "finished_at",
]


def survey_labels() -> dict[str, dict]:
    """The survey's Table 4 rows by technique: its three labels, ideal use cases and key trade-off."""
    return _survey()["techniques"]


def survey_source() -> dict[str, str]:
    """Title, authors, journal, year and DOI of the survey the labels come from."""
    return _survey()["source"]


def _survey() -> dict:
    return yaml.safe_load((resources.files("kdbench") / "survey_table4.yaml").read_text())


def teacher_free(methods: pd.Series) -> pd.Series:
    """Whether each method trains without a frozen teacher (its runs are the same on every pair)."""
    return methods.map(lambda m: m in METHODS and METHODS[m].info.teachers == 0).astype(bool)


def load_frame(results_dir: str | Path) -> pd.DataFrame:
    """All records of a results folder, one row per distinct run, with the columns every table groups by.

    Adds `stale` (results.load's; False where absent), `collapsed` (stats.is_collapsed, unless recorded),
    `teacher_free`, `pair` and `label`; copies of a teacher-free run count once (frame.attrs['copies_dropped']
    says how many were dropped). An empty folder gives an empty frame with COLUMNS."""
    df = results.load(results_dir)
    if df.empty:
        return _prepare(pd.DataFrame({col: pd.Series(dtype=object) for col in COLUMNS}))
    return _prepare(df)


def _prepare(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for col in COLUMNS:
        if col not in df:
            df[col] = np.nan
    for col, default in _DEFAULTS:
        if default is not None:
            df[col] = df[col].astype(object).where(df[col].notna(), default).infer_objects()
    df["stale"] = df["stale"].astype(bool)
    if "config.variant" in df:
        df["variant"] = df["variant"].fillna(df["config.variant"])
    df["variant"] = df["variant"].astype(object).fillna("").astype(str)
    df["status"] = df["status"].fillna("ok")
    # the registry is the source of truth for what a method is compared with (records keep what was run)
    compare_to = [
        METHODS[m].info.compare_to if m in METHODS else c
        for m, c in zip(df["method"], df["compare_to"], strict=True)
    ]
    df["compare_to"] = pd.Series(compare_to, index=df.index, dtype=object)
    recorded = df["collapsed"].astype(object)
    df["collapsed"] = pd.Series(
        [
            bool(r) if isinstance(r, bool) else status == "ok" and _collapsed(top1, ds)
            for r, top1, ds, status in zip(
                recorded, df["student_top1"], df["dataset"], df["status"], strict=True
            )
        ],
        index=df.index,
        dtype=bool,
    )
    for name in EPOCH_CURVE_FIELDS:  # one name for the per-epoch curve, whichever the records use
        if name in df and "epoch_top1" not in df:
            df["epoch_top1"] = df[name]
    df["teacher_free"] = teacher_free(df["method"])
    before = len(df)
    df = _drop_copies(df)
    # a teacher-free run has no teacher, whatever pair an older grid filed it under
    df["teacher"] = df["teacher"].where(~df["teacher_free"], None)
    for col in ("teacher_top1", "teacher_bytes", "teacher_latency_ms_b1"):
        df[col] = df[col].where(~df["teacher_free"])
    df["pair"] = (
        df["teacher"].fillna("—").astype(str).str.replace("cifar_", "")
        + "→"
        + df["student"].astype(str).str.replace("cifar_", "")
    )
    df["label"] = df["method"].where(df["variant"] == "", df["method"] + " (" + df["variant"] + ")")
    df.attrs["copies_dropped"] = before - len(df)
    return df.reset_index(drop=True)


def _collapsed(top1: float, dataset: str) -> bool:
    info = DATASETS.get(dataset)
    return bool(info) and is_collapsed(top1, info.num_classes)


def _drop_copies(df: pd.DataFrame) -> pd.DataFrame:
    """Keep one record per teacher-free run: the same method, variant and configuration apart from the
    teachers (older grids ran such a method once per pair). A record already written without a teacher is
    preferred, then the most recent."""
    free = df[df["teacher_free"]]
    if free.empty:
        return df
    config = [c for c in df.columns if c.startswith("config.") and c not in _TEACHER_CONFIG]
    key = free[["method", "variant", "status", *SETTING, *config]].apply(
        lambda row: json.dumps([None if _missing(v) else v for v in row], default=str), axis=1
    )
    order = free.assign(_key=key, _has_teacher=free["teacher"].notna(), _when=free["finished_at"])
    order = order.sort_values(["_has_teacher", "_when"], ascending=[True, False], na_position="last")
    keep = order.drop_duplicates("_key").index
    return df[~df["teacher_free"] | df.index.isin(keep)]


def _missing(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def usable(df: pd.DataFrame) -> pd.DataFrame:
    """Runs that enter means: finished, not stale, not collapsed."""
    return df[(df["status"] == "ok") & ~df["stale"] & ~df["collapsed"]]


def main_setting(df: pd.DataFrame, variants: bool = False) -> pd.DataFrame:
    """Cells of the main grid: clean labels, balanced classes; named control variants only if asked."""
    keep = (df["config.label_noise"] == 0) & (df["config.imbalance_ratio"] == 1)
    return df[keep if variants else keep & (df["variant"] == "")]


def with_reference(df: pd.DataFrame) -> pd.DataFrame:
    """Usable cells joined to their reference cell: the method's `compare_to` on the same student, seed and
    data setting. A reference that trains with a teacher (none does today) is matched on the teacher as
    well."""
    ok = usable(df).copy()
    # a method's cost as run alone: shared teacher outputs (kdbench.teacher_outputs) only speed the grid up
    ok["cost_time_s"] = ok["standalone_train_time_s"].fillna(ok["train_time_s"])
    ok["cost_samples_per_s"] = ok["train_samples_per_s"] * ok["train_time_s"] / ok["cost_time_s"]
    ok["trained_params"] = _plain_student_params(ok) + ok["extra_params"].fillna(0)
    ok["ref_teacher"] = _reference_teacher(ok["method"], ok["teacher"])
    ref = ok[ok["variant"] == ""][
        [
            *SETTING,
            "ref_teacher",
            "method",
            "student_top1",
            "cost_time_s",
            "train_flops_per_sample",
            "trained_params",
        ]
    ]
    # two current runs of one reference cell (a folder that mixes recipes, say) cannot both be the reference:
    # the later one is, as a re-run replaces a record
    ref = ref.assign(_when=ok.loc[ref.index, "finished_at"]).sort_values("_when", na_position="first")
    ref = ref.drop_duplicates([*SETTING, "ref_teacher", "method"], keep="last").drop(columns="_when")
    ref = ref.rename(
        columns={
            "method": "compare_to",
            "student_top1": "ref_top1",
            "cost_time_s": "ref_time",
            "train_flops_per_sample": "ref_flops",
            "trained_params": "ref_params",
        }
    )
    ok["ref_teacher"] = _reference_teacher(ok["compare_to"], ok["teacher"])
    joined = ok.merge(ref, on=[*SETTING, "compare_to", "ref_teacher"], how="left", validate="many_to_one")
    joined["boost"] = joined["student_top1"] - joined["ref_top1"]
    joined["time_x"] = joined["cost_time_s"] / joined["ref_time"]
    joined["flops_x"] = joined["train_flops_per_sample"] / joined["ref_flops"]
    joined["params_x"] = joined["trained_params"] / joined["ref_params"]
    joined["footprint_x"] = np.sqrt(joined["params_x"] * joined["flops_x"])
    joined["size_vs_teacher"] = joined["deployable_bytes"] / joined["teacher_bytes"]
    return joined


def _reference_teacher(methods: pd.Series, teachers: pd.Series) -> pd.Series:
    """The teacher a reference must share: its own for a reference with a teacher, '*' (any) otherwise."""
    return teachers.where(~teacher_free(methods), "*").fillna("*")


def _plain_student_params(ok: pd.DataFrame) -> pd.Series:
    """Parameters of the plain student network: the smallest positive `student_params` recorded for that
    student (a quantized deployable records 0, and a searched student may be larger than the configured
    one)."""
    sizes = ok[ok["student_params"] > 0].groupby("student")["student_params"].min()
    return ok["student"].map(sizes).astype(float)


def catalogue_table(df: pd.DataFrame) -> pd.DataFrame:
    """Survey Tables 1–3 from the registry, with the networks and data each method actually ran on."""
    rows = []
    for row in catalogue():
        ran = df[df["method"] == row["name"]] if not df.empty else df
        rows.append(
            {
                "technique": row["technique"] + "".join(f"; {t}" for t in row["also_represents"]),
                "method": row["name"],
                "scheme": row["scheme"],
                "knowledge": row["knowledge"],
                "teacher → student (run)": ", ".join(sorted(ran["pair"].unique())) if len(ran) else "not run",
                "dataset": ", ".join(sorted(ran["dataset"].unique())) if len(ran) else "—",
                "reference": row["reference"],
            }
        )
    return pd.DataFrame(rows)


def per_seed(g: pd.DataFrame, col: str, geometric: bool = False) -> pd.Series:
    """One value per seed (POOLING): the mean over methods on each (pair, seed), then over pairs per seed.
    Ratios are pooled geometrically (means of logs), so that ×2 and ×0.5 average to ×1."""
    values = g[col].astype(float)
    if geometric:
        values = np.log(values.where(values > 0))
    units = values.groupby([g["pair"], g["seed"]]).mean()
    seeds = units.groupby(level="seed").mean().dropna()
    return np.exp(seeds) if geometric else seeds


def pooled_ratio(g: pd.DataFrame, col: str) -> float:
    """A cost ratio pooled per POOLING: the geometric mean over seeds of the per-seed geometric means."""
    value = per_seed(g, col, geometric=True)
    return math.exp(np.log(value).mean()) if len(value) else math.nan


def _ratio(g: pd.DataFrame, col: str) -> str:
    value = pooled_ratio(g, col)
    return "—" if math.isnan(value) else f"{value:.2f}"


def _top1(values: pd.Series) -> str:
    mean, half, n = mean_ci(values)
    if n == 0:
        return "—"
    return f"{mean:.2f} ± {half:.2f}" if n > 1 else f"{mean:.2f} (single seed)"


def _boost(values: pd.Series) -> str:
    mean, half, n = mean_ci(values)
    return fmt(mean, half) + (" (single seed)" if n == 1 else "")


def _counts(df: pd.DataFrame) -> pd.DataFrame:
    """Per record: whether it failed, collapsed or went stale (stale wins: a stale record is not looked
    at)."""
    return pd.DataFrame(
        {
            "stale": df["stale"],
            "failed": ~df["stale"] & (df["status"] == "failed"),
            "collapsed": ~df["stale"] & (df["status"] == "ok") & df["collapsed"],
        }
    )


def method_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per method and pair: top-1, boost over its reference with 95% CI over seeds, cost ratios, and how many
    runs failed or collapsed. A method whose every run failed or collapsed keeps its row rather than
    vanishing."""
    main = main_setting(df, variants=True)
    joined = with_reference(main)
    counts = _counts(main)
    rows = []
    for (label, pair), cells in main.groupby(["label", "pair"], sort=True):
        g = joined[(joined["label"] == label) & (joined["pair"] == pair)]
        method = cells["method"].iloc[0]
        technique = METHODS[method].info.technique if method in METHODS else "?"
        is_reference = technique == "Reference"
        n = counts.loc[cells.index].sum()
        top1 = g.groupby("seed")["student_top1"].mean()
        rows.append(
            {
                "technique": technique,
                "method": label,
                "pair": pair,
                "vs": "—" if is_reference else cells["compare_to"].iloc[0],
                "seeds": len(top1),
                "collapsed": int(n["collapsed"]),
                "failed": int(n["failed"]),
                "top-1 (%)": _top1(top1) if len(g) else _none_left(n),
                "teacher top-1 (%)": _mean(g["teacher_top1"], ".2f"),
                "boost (pts, 95% CI)": "reference" if is_reference else _boost(per_seed(g, "boost")),
                "train time ×": _ratio(g, "time_x"),
                "train FLOPs ×": _ratio(g, "flops_x"),
                "trained params ×": _ratio(g, "params_x"),
                "samples/s": _mean(g["cost_samples_per_s"], ".0f"),
                "size vs teacher": _mean(g["size_vs_teacher"], ".3f"),
            }
        )
    return pd.DataFrame(rows, columns=_METHOD_COLUMNS).astype(object).fillna("—")


_METHOD_COLUMNS = [
    "technique",
    "method",
    "pair",
    "vs",
    "seeds",
    "collapsed",
    "failed",
    "top-1 (%)",
    "teacher top-1 (%)",
    "boost (pts, 95% CI)",
    "train time ×",
    "train FLOPs ×",
    "trained params ×",
    "samples/s",
    "size vs teacher",
]


def _mean(values: pd.Series, spec: str) -> str:
    return format(values.mean(), spec) if values.notna().any() else "—"


def _none_left(n: pd.Series) -> str:
    """What a row without a usable run shows instead of a number."""
    return "failed" if n["failed"] else "collapsed" if n["collapsed"] else "—"


def technique_methods(technique: str) -> list[str]:
    """The registered methods that stand for a Table 4 row (their own technique or one they also
    represent)."""
    return sorted(n for n, c in METHODS.items() if technique in c.info.techniques)


def survey_levels(label: str) -> set[str]:
    """The measured labels a survey label accepts: a range such as 'Moderate-High' accepts both ends."""
    return {part.strip() for part in label.split("-")}


def rank_labels(values: dict[str, float], higher: bool = True, log: bool = False) -> dict[str, str]:
    """LABEL_RULES: each measured value's label from its rank among the others (terciles of the mid-rank), and
    Very High beyond Tukey's upper fence. `higher=False` reverses the scale (a small footprint is High
    efficiency); `log` ranks and fences ratios on a log scale. Unmeasured (NaN) values get '—'."""
    labels = {k: "—" for k in values}
    s = pd.Series({k: v for k, v in values.items() if not math.isnan(v)}, dtype=float)
    if s.empty:
        return labels
    x = np.log(s) if log else s
    x = x if higher else -x
    position = (x.rank(method="average") - 0.5) / len(x)
    q1, q3 = x.quantile(0.25), x.quantile(0.75)
    fence = q3 + 1.5 * (q3 - q1) if len(x) >= 4 and q3 > q1 else math.inf
    for name, value in x.items():
        labels[name] = TOP_LEVEL if value > fence else LEVELS[min(int(position[name] * 3), 2)]
    return labels


def _measure(g: pd.DataFrame) -> dict[str, float]:
    """The technique's three measurements, pooled per POOLING (ratios geometrically)."""
    boost = per_seed(g, "boost")
    return {
        "accuracy_boost": boost.mean() if len(boost) else math.nan,
        "resource_efficiency": pooled_ratio(g, "footprint_x"),
        "computational_complexity": pooled_ratio(g, "time_x"),
    }


def table4(df: pd.DataFrame) -> pd.DataFrame:
    """The measured Table 4: one row per survey technique, pooled over its methods and pairs within each seed
    (POOLING), with the survey's label, the measured label (LABEL_RULES) and whether they agree."""
    main = main_setting(df)
    joined = with_reference(main)
    counts = _counts(main)
    survey = survey_labels()
    measured, rows = {}, []
    for technique in TECHNIQUES:
        methods = technique_methods(technique)
        g = joined[joined["method"].isin(methods)]
        n = counts[main["method"].isin(methods)].sum()
        boost = mean_ci(per_seed(g, "boost"))
        measured[technique] = _measure(g)
        per_pair = "; ".join(f"{p}: {_boost(per_seed(gp, 'boost'))}" for p, gp in g.groupby("pair"))
        rows.append(
            {
                "technique": technique,
                # the methods measured here (a technique may have registered methods this grid does not run)
                "methods": ", ".join(sorted(set(main["method"]) & set(methods))) or "—",
                "seeds": boost[2],
                "runs": len(g),
                "collapsed": int(n["collapsed"]),
                "failed": int(n["failed"]),
                "boost pooled (pts, 95% CI)": _boost(per_seed(g, "boost")),
                "boost per pair": per_pair or "—",
                "trained params ×": _ratio(g, "params_x"),
                "train FLOPs ×": _ratio(g, "flops_x"),
                "footprint ×": _ratio(g, "footprint_x"),
                "train time ×": _ratio(g, "time_x"),
            }
        )
    labels = {
        kind: rank_labels(
            {t: m[kind] for t, m in measured.items()},
            higher=kind != "resource_efficiency",
            log=kind != "accuracy_boost",
        )
        for kind in KINDS
    }
    for row in rows:
        for kind in KINDS:
            said = (survey.get(row["technique"]) or {}).get(kind)
            got = labels[kind][row["technique"]]
            short = kind.split("_")[0]
            row[f"{short}: survey"] = said or "n/a"
            row[f"{short}: measured"] = got
            row[f"{short}: agree"] = "n/a" if not said or got == "—" else MARKS[got in survey_levels(said)]
    return pd.DataFrame(rows)


def agreement(table: pd.DataFrame) -> tuple[int, int, int]:
    """(cells that agree, cells compared, cells in the survey's table) over Table 4's three labelled
    columns."""
    columns = [c for c in table.columns if c.endswith(": agree")]
    marks = table[columns].to_numpy().ravel() if len(table) else []
    agree = sum(m == MARKS[True] for m in marks)
    return agree, sum(m in MARKS.values() for m in marks), len(TECHNIQUES) * len(KINDS)


def exclusion_note(df: pd.DataFrame) -> str:
    """One line saying what the tables left out of their means, and why."""
    n = _counts(df).sum()
    return (
        f"Left out of every mean: {int(n['stale'])} stale records (superseded by a code or grid change), "
        f"{int(n['failed'])} failed runs, {int(n['collapsed'])} collapsed runs (top-1 within 5 pts of "
        f"chance); {df.attrs.get('copies_dropped', 0)} copies of teacher-free runs counted once."
    )


def on_pair(df: pd.DataFrame, teacher: str | None, student: str) -> pd.DataFrame:
    """The runs that belong to a teacher→student pair: its own, and the student's teacher-free runs."""
    return df[(df["student"] == student) & ((df["teacher"] == teacher) | df["teacher_free"])]


def swept(df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Usable runs of the methods swept over label noise or imbalance, on the first pair a sweep ran on (with
    the student's teacher-free runs), and that pair's name; empty when nothing was swept."""
    ok = df[(df["status"] == "ok") & ~df["stale"]]  # collapsed runs stay, counted apart by the table
    cells = ok[(ok["config.label_noise"] > 0) | (ok["config.imbalance_ratio"] > 1)]
    if cells.empty:
        return ok[:0], ""
    first = cells.sort_values("teacher_free").iloc[0]  # a pair with a teacher, when the sweep has one
    teacher = None if first["teacher_free"] else first["teacher"]
    runs = on_pair(ok, teacher, first["student"])
    return runs[runs["method"].isin(set(cells["method"])) & (runs["variant"] == "")], first["pair"]


def robustness_table(df: pd.DataFrame) -> pd.DataFrame:
    """Top-1 (mean ± 95% CI over seeds) under label noise and class imbalance, per swept method, on the pair
    the sweep ran on (the clean, balanced row is the main grid's cell for that pair). Collapsed runs are counted
    in their own column and left out of the mean."""
    cells, pair = swept(df)
    rows = []
    for (method, noise, ratio), g in cells.groupby(
        ["method", "config.label_noise", "config.imbalance_ratio"]
    ):
        top1 = g[~g["collapsed"]].groupby("seed")["student_top1"].mean()
        rows.append(
            {
                "method": method,
                "pair": pair,
                "label noise": noise,
                "imbalance ratio": ratio,
                "seeds": len(top1),
                "collapsed": int(g["collapsed"].sum()),
                "top-1 (%)": _top1(top1),
            }
        )
    columns = ["method", "pair", "label noise", "imbalance ratio", "seeds", "collapsed", "top-1 (%)"]
    return pd.DataFrame(rows, columns=columns)


def failed_table(df: pd.DataFrame) -> pd.DataFrame:
    """The failed runs (not stale) with their reason."""
    columns = ["cell_id", "method", "student", "seed", "error", "failed_step"]
    return df[(df["status"] == "failed") & ~df["stale"]][columns]


def to_markdown(table: pd.DataFrame) -> str:
    return table.to_markdown(index=False) if len(table) else "_(no rows)_"


TABLES = {
    "catalogue": catalogue_table,
    "table4": table4,
    "methods": method_table,
    "robustness": robustness_table,
    "failed": failed_table,
}
# notes printed under a table in its Markdown file
NOTES = {
    "table4": lambda df: [f"Pooling: {POOLING}", exclusion_note(df), agreement_line(table4(df))],
    "methods": lambda df: [exclusion_note(df)],
}


def agreement_line(table: pd.DataFrame) -> str:
    agree, compared, total = agreement(table)
    return f"Agreement with the survey: {agree} of its {total} labelled cells ({compared} measured)."


def write_table(results_dir: str | Path, name: str, table: pd.DataFrame, notes: list[str] = ()) -> Path:
    """Write one table as Markdown (with notes under it) and CSV under results_dir/tables/ (atomically);
    returns the Markdown path."""
    out = Path(results_dir) / "tables"
    results.atomic_write_text(out / f"{name}.csv", table.to_csv(index=False))
    text = "\n\n".join([to_markdown(table), *notes])
    return results.atomic_write_text(out / f"{name}.md", text + "\n")


def write_tables(results_dir: str | Path, names: list[str] | None = None) -> dict[str, Path]:
    """Build and write the named tables (default: all) from the folder's records."""
    df = load_frame(results_dir)
    return {
        name: write_table(results_dir, name, TABLES[name](df), NOTES.get(name, lambda _: [])(df))
        for name in names or TABLES
    }


INDEX_TEXT = {
    "tables/catalogue.md": "method catalogue (survey Tables 1–3) from the registry and the grid run",
    "tables/table4.md": "the measured Table 4: boost, efficiency, complexity per technique, with labels",
    "tables/methods.md": "per method and pair: top-1, boost with 95% CI, cost ratios",
    "tables/robustness.md": "top-1 under label noise and class imbalance",
    "tables/failed.md": "cells that failed, with their reason",
    "figures/boost_per_technique.png": "boost per technique, mean ± 95% CI",
    "figures/accuracy_vs_size.png": "top-1 against deployable size, Pareto front",
    "figures/accuracy_vs_latency.png": "top-1 against batch-1 latency, Pareto front",
    "figures/boost_vs_overhead.png": "boost against training-time overhead",
    "figures/epoch_curves.png": "test top-1 after every epoch: the baseline and one method per technique",
    "figures/robustness.png": "noise and imbalance curves",
    "figures/lifelong.png": "lifelong per-task accuracy after each task",
    "figures/nas_search.png": "the NAS candidates and the choice",
}


def write_index(results_dir: str | Path) -> Path:
    """results_dir/README.md: what the folder holds and where it came from (run.json, records)."""
    results_dir = Path(results_dir)
    df = load_frame(results_dir)
    lines = [
        f"# Results: {results_dir.name}",
        "",
        "Generated by kdbench from the records in `records/`; do not edit.",
        "",
    ]
    for line in provenance_lines(results_dir, df):
        lines += [f"- {line}", ""]
    if not df.empty:
        env = df.iloc[-1]
        lines += [
            f"- records: {len(df)} ({int((df['status'] == 'ok').sum())} ok, "
            f"{int((df['status'] == 'failed').sum())} failed); device: {env.get('env.device_name', '?')}, "
            f"torch {env.get('env.torch', '?')}, {env.get('env.threads', '?')} threads",
            "",
            f"- {exclusion_note(df)}",
            "",
        ]
    lines += ["| file | what it is |", "|---|---|"]
    for rel, text in INDEX_TEXT.items():
        if (results_dir / rel).exists():
            lines.append(f"| [{rel}]({rel}) | {text} |")
    for nb in sorted((results_dir / "notebooks").glob("*.ipynb")):
        lines.append(f"| [notebooks/{nb.name}](notebooks/{nb.name}) | executed notebook |")
    return results.atomic_write_text(results_dir / "README.md", "\n".join(lines) + "\n")


def provenance_lines(results_dir: Path, df: pd.DataFrame) -> list[str]:
    """Where the folder's records came from: each profile's last `run_all.py` invocation (run*.json) and how
    long its cells took to compute."""
    lines = []
    for run_info in sorted(results_dir.glob("run*.json")):
        info = yaml.safe_load(run_info.read_text())
        grid_s = (info.get("grid") or {}).get("wall_time_s")
        lines.append(
            f"last `run_all.py --profile {info.get('profile')}` invocation (cells already finished are skipped, "
            f"so a resumed run is short): {info.get('wall_time_s', 0) / 60:.1f} min"
            + (f", of which the notebooks {(info['wall_time_s'] - grid_s) / 60:.1f} min" if grid_s else "")
            + f", {info.get('started')} → {info.get('finished')}, on {info.get('machine')}"
        )
    if not df.empty and "finished_at" in df:
        lines += compute_lines(results_dir, df)
    return lines


def _run_here(df: pd.DataFrame, sources: Iterable[Path]) -> pd.DataFrame:
    """The records this folder's own runs wrote: a record copied from another folder (`Profile.reuses`) keeps
    that folder's finish time, which says nothing of this folder's run."""
    copied = {
        (cell, done)
        for source in sources
        for cell, done in results.load(source)
        .reindex(columns=["cell_id", "finished_at"])
        .itertuples(index=False)
    }
    return df[[key not in copied for key in zip(df["cell_id"], df["finished_at"], strict=True)]]


def compute_lines(results_dir: Path, df: pd.DataFrame) -> list[str]:
    """How long the folder's cells took to compute (kdbench.wall_time): for the profile the folder is named after
    (leaving out records it copied from the folders it reuses), and for each profile that adds cells to it (the
    zoo) its own cells; for any other folder, all of them."""
    from kdbench.profiles import EXPERIMENTS, PROFILES, all_cells

    folder = results_dir.name
    owner = {**PROFILES, **EXPERIMENTS}.get(folder)
    if owner is None or owner.results is not None:
        return [f"all records: {compute_time(df['finished_at']).describe()}"]
    df = _run_here(df, [results_dir.parent / name for name in owner.reuses])
    taken = {c.cell_id() for c in all_cells(owner)}
    lines = [f"`{folder}` profile: {compute_time(df[df['cell_id'].isin(taken)]['finished_at']).describe()}"]
    for name, spec in PROFILES.items():
        if spec.results == folder:
            added = {c.cell_id() for c in all_cells(spec)} - taken
            done = df[df["cell_id"].isin(added)]["finished_at"]
            if len(done):
                lines.append(f"`{name}` profile's own cells: {compute_time(done).describe()}")
    return lines


def write_results_index(root: str | Path, profiles: Iterable[str] | None = None) -> Path:
    """root/README.md (results/): one line per profile folder that has a run, pointing at its own index;
    `profiles`: only these folders (the committed ones, not a plumbing check's or a user's own grid)."""
    root = Path(root)
    lines = [
        "# kdbench results",
        "",
        "Everything here is generated by a command, nothing is written by hand. One "
        "folder per profile, made by `python run_all.py --profile <name>`:",
        "",
        "| profile | run | index |",
        "|---|---|---|",
    ]
    listed = [
        p for p in root.iterdir() if (p / "run.json").exists() and (profiles is None or p.name in profiles)
    ]
    if not listed:
        lines.append("| — | no profile has been run on the current code yet | — |")
    for folder in sorted(listed):
        info = yaml.safe_load((folder / "run.json").read_text())
        lines.append(
            f"| `{folder.name}` | last invocation {info.get('wall_time_s', 0) / 60:.1f} min on "
            f"{info.get('machine')}, finished {info.get('finished')} (the grid's own span is in the index) "
            f"| [{folder.name}/README.md]({folder.name}/README.md) |"
        )
    others = [
        f"- [{name}/]({name}/): {what}" for name, what in OTHER_RESULTS.items() if (root / name).is_dir()
    ]
    if others:
        lines += ["", "Beside the profiles:", "", *others]
    return results.atomic_write_text(root / "README.md", "\n".join(lines) + "\n")


# results/ folders that are not a profile's run, and what made them
OTHER_RESULTS = {
    "design": "the measurements the `cpu` profile was designed from (`benchmarks/cpu_profile_design.py`)",
    "perf": "kdbench's KD epoch against a reference-style PyTorch loop (`benchmarks/kd_epoch_vs_reference.py`)",
    "archive": "earlier runs, kept unchanged for comparison; their records are stale (older code and profile)",
}
