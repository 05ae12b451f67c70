"""The survey's tables rebuilt from records: the method catalogue (Tables 1–3), the measured Table 4, the
per-method, robustness and failed-run tables, and their Markdown and CSV files.

Nothing here is typed by hand: every number comes from records under results/, and every label from a
documented rule (LABEL_RULES) applied to those numbers. The survey's own labels come from survey_table4.yaml,
as data. Statistics follow POOLING: the replicate is the seed, and copies of one run are counted once. The
tables read the records as `kdbench.frame` prepares them (one row per run, joined to its reference run).
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from kdbench import results
from kdbench.frame import load_frame, main_setting, swept, with_reference
from kdbench.methods import METHODS, TECHNIQUES, catalogue
from kdbench.stats import fmt, mean_ci
from kdbench.stats import t_critical as t_critical  # re-exported: callers read the statistics from here too

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


def survey_labels() -> dict[str, dict]:
    """The survey's Table 4 rows by technique: its three labels, ideal use cases and key trade-off."""
    return _survey()["techniques"]


def survey_source() -> dict[str, str]:
    """Title, authors, journal, year and DOI of the survey the labels come from."""
    return _survey()["source"]


def _survey() -> dict:
    return yaml.safe_load((resources.files("kdbench") / "survey_table4.yaml").read_text())


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
