"""The survey's tables rebuilt from records: the method catalogue (Tables 1–3) and the measured Table 4.

Nothing here is typed by hand: every number comes from records under results/, and every label from a
documented threshold (LABEL_RULES) applied to those numbers. The survey's own labels come from
survey_table4.yaml, as data.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import pandas as pd
import yaml

from kdbench import results
from kdbench.methods import METHODS, TECHNIQUES, catalogue

# Two-sided 95% Student-t critical values by degrees of freedom (standard tables); 1.96 beyond 30.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042}

# How a measurement becomes a label. Boost in top-1 points over the method's reference (mean over seeds and pairs);
# efficiency from the deployable's size relative to the teacher's; complexity from training time relative to the
# reference's on the same student.
LABEL_RULES = {
    "accuracy_boost": "High: mean boost >= 1.0 pt; Moderate: 0.3 to 1.0 pt; Low: below 0.3 pt (negative included)",
    "resource_efficiency": "High: deployable <= 25% of the teacher's size; Moderate: <= 60%; Low: above 60%",
    "computational_complexity": "Low: training time < 1.5x the reference; Moderate: 1.5x to 3x; High: above 3x",
}

KEY = ["dataset", "teacher", "student", "seed", "config.label_noise", "config.imbalance_ratio", "epochs",
       "config.train_subset"]


def t_critical(df: int) -> float:
    if df <= 0:
        return math.nan
    return _T95[max(k for k in _T95 if k <= df)] if df <= 30 else 1.96


def mean_ci(values: pd.Series) -> tuple[float, float, int]:
    """Mean and half-width of the 95% t confidence interval (NaN half-width for a single value)."""
    v = pd.Series(values).dropna().astype(float)
    n = len(v)
    if n == 0:
        return math.nan, math.nan, 0
    half = t_critical(n - 1) * v.std(ddof=1) / math.sqrt(n) if n > 1 else math.nan
    return float(v.mean()), float(half), n


def fmt(mean: float, half: float, digits: int = 2) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:+.{digits}f} ± {half:.{digits}f}" if not math.isnan(half) else f"{mean:+.{digits}f}"


def survey_labels() -> dict[str, dict]:
    return yaml.safe_load((resources.files("kdbench") / "survey_table4.yaml").read_text())


def load_frame(results_dir: str | Path) -> pd.DataFrame:
    """All records of a results folder, with the grid setting columns every table groups by."""
    df = results.load(results_dir)
    if df.empty:
        return df
    for col, default in (("config.label_noise", 0.0), ("config.imbalance_ratio", 1.0), ("compare_to", "baseline"),
                         ("variant", "")):
        if col not in df:
            df[col] = default
        df[col] = df[col].fillna(default)
    # the registry is the source of truth for what a method is compared with (records keep what was run)
    df["compare_to"] = [METHODS[m].info.compare_to if m in METHODS else c for m, c in zip(df["method"], df["compare_to"], strict=True)]
    df["pair"] = df["teacher"].fillna("—").str.replace("cifar_", "") + "→" + df["student"].str.replace("cifar_", "")
    df["label"] = df["method"].where(df["variant"] == "", df["method"] + " (" + df["variant"] + ")")
    return df


def main_setting(df: pd.DataFrame, variants: bool = False) -> pd.DataFrame:
    """Cells of the main grid: clean labels, balanced classes; named control variants only if asked."""
    keep = (df["config.label_noise"] == 0) & (df["config.imbalance_ratio"] == 1)
    return df[keep if variants else keep & (df["variant"] == "")]


def with_reference(df: pd.DataFrame) -> pd.DataFrame:
    """Successful cells joined to their reference cell (same data, pair and seed; the method's `compare_to`)."""
    ok = df[df["status"] == "ok"].copy()
    # a method's cost as run alone: shared teacher outputs (kdbench.teacher_outputs) only speed the grid up
    standalone = ok["standalone_train_time_s"] if "standalone_train_time_s" in ok else ok["train_time_s"]
    ok["cost_time_s"] = standalone.fillna(ok["train_time_s"])
    ok["cost_samples_per_s"] = ok["train_samples_per_s"] * ok["train_time_s"] / ok["cost_time_s"]
    ref = ok[ok["variant"] == ""][KEY + ["method", "student_top1", "cost_time_s", "train_flops_per_sample"]]
    ref = ref.rename(columns={"method": "compare_to", "student_top1": "ref_top1", "cost_time_s": "ref_time",
                              "train_flops_per_sample": "ref_flops"})
    joined = ok.merge(ref, on=KEY + ["compare_to"], how="left")
    joined["boost"] = joined["student_top1"] - joined["ref_top1"]
    joined["time_x"] = joined["cost_time_s"] / joined["ref_time"]
    joined["flops_x"] = joined["train_flops_per_sample"] / joined["ref_flops"]
    joined["size_vs_teacher"] = joined["deployable_bytes"] / joined["teacher_bytes"]
    joined["latency_vs_teacher"] = joined["latency_ms_b1"] / joined["teacher_latency_ms_b1"]
    return joined


def _label(kind: str, value: float) -> str:
    if math.isnan(value):
        return "—"
    if kind == "accuracy_boost":
        return "High" if value >= 1.0 else "Moderate" if value >= 0.3 else "Low"
    if kind == "resource_efficiency":
        return "High" if value <= 0.25 else "Moderate" if value <= 0.60 else "Low"
    return "Low" if value < 1.5 else "Moderate" if value <= 3.0 else "High"


def catalogue_table(df: pd.DataFrame) -> pd.DataFrame:
    """Survey Tables 1–3 from the registry, with the networks and data each method actually ran on."""
    rows = []
    for row in catalogue():
        ran = df[df["method"] == row["name"]] if not df.empty else df
        rows.append({
            "technique": row["technique"] + "".join(f"; {t}" for t in row["also_represents"]),
            "method": row["name"], "scheme": row["scheme"], "knowledge": row["knowledge"],
            "teacher → student (run)": ", ".join(sorted(ran["pair"].unique())) if len(ran) else "not run",
            "dataset": ", ".join(sorted(ran["dataset"].unique())) if len(ran) else "—",
            "reference": row["reference"],
        })
    return pd.DataFrame(rows)


def method_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per method and pair: top-1, boost over its reference with 95% CI over seeds, and cost ratios. Failed cells
    are counted, and a method whose every cell failed keeps its row (marked failed) rather than vanishing."""
    main = main_setting(df, variants=True)
    joined = with_reference(main)
    failed = _failed_counts(main)
    rows = []
    for (label, pair), g in joined.groupby(["label", "pair"], sort=True):
        method = g["method"].iloc[0]
        info = METHODS[method].info if method in METHODS else None
        boost = mean_ci(g["boost"])
        rows.append({
            "technique": info.technique if info else "?", "method": label, "pair": pair,
            "vs": g["compare_to"].iloc[0], "seeds": boost[2], "failed cells": failed.pop((label, pair), 0),
            "top-1 (%)": f"{g['student_top1'].mean():.2f}", "teacher top-1 (%)": f"{g['teacher_top1'].mean():.2f}",
            "boost (pts, 95% CI)": fmt(*boost[:2]),
            "train time ×": f"{g['time_x'].mean():.2f}", "train FLOPs ×": f"{g['flops_x'].mean():.2f}",
            "samples/s": f"{g['cost_samples_per_s'].mean():.0f}",
            "size vs teacher": f"{g['size_vs_teacher'].mean():.3f}",
            "extra params": int(g["extra_params"].mean()),
        })
    for (label, pair), n in failed.items():
        method = main.loc[main["label"] == label, "method"].iloc[0]
        technique = METHODS[method].info.technique if method in METHODS else "?"
        rows.append({"technique": technique, "method": label, "pair": pair, "seeds": 0, "failed cells": n,
                     "top-1 (%)": "failed", "boost (pts, 95% CI)": "failed"})
    return pd.DataFrame(rows).astype(object).fillna("—")


def _failed_counts(df: pd.DataFrame) -> dict[tuple[str, str], int]:
    """Failed cells per (method label, pair)."""
    if "status" not in df:
        return {}
    return {key: int(n) for key, n in df[df["status"] == "failed"].groupby(["label", "pair"]).size().items()}


def table4(df: pd.DataFrame) -> pd.DataFrame:
    """The measured Table 4: one row per survey technique, pooled over its methods, pairs and seeds."""
    joined = with_reference(main_setting(df))
    survey = survey_labels()
    rows = []
    for technique in TECHNIQUES:
        methods = sorted(n for n, c in METHODS.items() if technique in c.info.techniques)
        g = joined[joined["method"].isin(methods)]
        boost = mean_ci(g["boost"])
        per_pair = "; ".join(f"{p}: {fmt(*mean_ci(gp['boost'])[:2])}" for p, gp in g.groupby("pair"))
        measured = {
            "accuracy_boost": boost[0],
            "resource_efficiency": g["size_vs_teacher"].mean() if len(g) else math.nan,
            "computational_complexity": g["time_x"].mean() if len(g) else math.nan,
        }
        failed = int(((df["status"] == "failed") & df["method"].isin(methods)).sum()) if "status" in df else 0
        row = {"technique": technique, "methods": ", ".join(methods), "cells": len(g), "failed cells": failed,
               "boost pooled (pts, 95% CI)": fmt(*boost[:2]), "boost per pair": per_pair or "—",
               "size vs teacher": f"{measured['resource_efficiency']:.3f}",
               "latency vs teacher": f"{g['latency_vs_teacher'].mean():.2f}" if len(g) else "—",
               "train peak memory (MB)": f"{g['peak_memory_bytes'].mean() / 2**20:.0f}" if len(g) else "—",
               "train time ×": f"{measured['computational_complexity']:.2f}",
               "train FLOPs ×": f"{g['flops_x'].mean():.2f}" if len(g) else "—"}
        for kind, value in measured.items():
            said = (survey.get(technique) or {}).get(kind)
            got = _label(kind, value)
            short = kind.split("_")[0]
            row[f"{short}: survey"] = said or "n/a"
            row[f"{short}: measured"] = got
            row[f"{short}: agree"] = "n/a" if not said or got == "—" else ("yes" if said == got else "no")
        rows.append(row)
    return pd.DataFrame(rows)


def robustness_table(df: pd.DataFrame) -> pd.DataFrame:
    """Top-1 (mean ± 95% CI over seeds) under label noise and class imbalance, per swept method, on the pair
    the sweep ran on (the clean, balanced row is the main grid's cell for that pair)."""
    ok = df[df["status"] == "ok"]
    swept_cells = ok[(ok["config.label_noise"] > 0) | (ok["config.imbalance_ratio"] > 1)]
    if swept_cells.empty:
        return pd.DataFrame(columns=["method", "pair", "label noise", "imbalance ratio", "seeds", "top-1 (%)"])
    pair = swept_cells["pair"].iloc[0]
    cells = ok[ok["method"].isin(set(swept_cells["method"])) & (ok["pair"] == pair) & (ok["variant"] == "")]
    rows = []
    for (method, noise, ratio), g in cells.groupby(["method", "config.label_noise", "config.imbalance_ratio"]):
        mean, half, n = mean_ci(g["student_top1"])
        rows.append({"method": method, "pair": pair, "label noise": noise, "imbalance ratio": ratio, "seeds": n,
                     "top-1 (%)": f"{mean:.2f} ± {half:.2f}" if n > 1 else f"{mean:.2f}"})
    return pd.DataFrame(rows)


def failed_table(df: pd.DataFrame) -> pd.DataFrame:
    if "status" not in df or not (df["status"] == "failed").any():
        return pd.DataFrame(columns=["cell_id", "method", "student", "seed", "error", "failed_step"])
    bad = df[df["status"] == "failed"]
    return bad[["cell_id", "method", "student", "seed", "error", "failed_step"]]


def to_markdown(table: pd.DataFrame) -> str:
    return table.to_markdown(index=False) if len(table) else "_(no rows)_"


TABLES = {
    "catalogue": catalogue_table,
    "table4": table4,
    "methods": method_table,
    "robustness": robustness_table,
    "failed": failed_table,
}


def write_table(results_dir: str | Path, name: str, table: pd.DataFrame) -> Path:
    """Write one table as Markdown and CSV under results_dir/tables/ (atomically); returns the Markdown path."""
    out = Path(results_dir) / "tables"
    results.atomic_write_text(out / f"{name}.csv", table.to_csv(index=False))
    return results.atomic_write_text(out / f"{name}.md", to_markdown(table) + "\n")


def write_tables(results_dir: str | Path, names: list[str] | None = None) -> dict[str, Path]:
    """Build and write the named tables (default: all) from the folder's records."""
    df = load_frame(results_dir)
    return {name: write_table(results_dir, name, TABLES[name](df)) for name in names or TABLES}


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
    "figures/robustness.png": "noise and imbalance curves",
    "figures/lifelong.png": "lifelong per-task accuracy after each task",
    "figures/nas_search.png": "the NAS candidates and the choice",
}


def write_index(results_dir: str | Path) -> Path:
    """results_dir/README.md: what the folder holds and where it came from (run.json, records)."""
    results_dir = Path(results_dir)
    df = load_frame(results_dir)
    lines = [f"# Results: {results_dir.name}", "", "Generated by kdbench from the records in `records/`; do not edit.", ""]
    run_info = results_dir / "run.json"
    if run_info.exists():
        info = yaml.safe_load(run_info.read_text())
        lines += [f"- last `run_all.py` invocation (cells already finished are skipped, so a resumed run is short): "
                  f"{info.get('wall_time_s', 0) / 60:.1f} min, {info.get('started')} → {info.get('finished')}, "
                  f"on {info.get('machine')}", ""]
    if not df.empty and "finished_at" in df:
        done = pd.to_datetime(df["finished_at"].dropna())
        lines += [f"- grid: {len(df)} cells finished between {done.min():%Y-%m-%d %H:%M:%S} and "
                  f"{done.max():%H:%M:%S} UTC ({(done.max() - done.min()).total_seconds() / 60:.1f} min; the teachers "
                  "are all trained before the first cell starts)", ""]
    if not df.empty:
        env = df.iloc[-1]
        lines += [f"- records: {len(df)} ({int((df['status'] == 'ok').sum())} ok, "
                  f"{int((df['status'] == 'failed').sum())} failed); device: {env.get('env.device_name', '?')}, "
                  f"torch {env.get('env.torch', '?')}, {env.get('env.threads', '?')} threads", ""]
    lines += ["| file | what it is |", "|---|---|"]
    for rel, text in INDEX_TEXT.items():
        if (results_dir / rel).exists():
            lines.append(f"| [{rel}]({rel}) | {text} |")
    for nb in sorted((results_dir / "notebooks").glob("*.ipynb")):
        lines.append(f"| [notebooks/{nb.name}](notebooks/{nb.name}) | executed notebook |")
    return results.atomic_write_text(results_dir / "README.md", "\n".join(lines) + "\n")


def write_results_index(root: str | Path) -> Path:
    """root/README.md (results/): one line per profile folder that has a run, pointing at its own index."""
    root = Path(root)
    lines = ["# kdbench results", "", "Everything here is generated by `python run_all.py --profile <name>`; "
             "nothing is written by hand. One folder per profile:", "", "| profile | run | index |", "|---|---|---|"]
    for folder in sorted(p for p in root.iterdir() if (p / "run.json").exists()):
        info = yaml.safe_load((folder / "run.json").read_text())
        lines.append(f"| `{folder.name}` | last invocation {info.get('wall_time_s', 0) / 60:.1f} min on "
                     f"{info.get('machine')}, finished {info.get('finished')} (the grid's own span is in the index) "
                     f"| [{folder.name}/README.md]({folder.name}/README.md) |")
    return results.atomic_write_text(root / "README.md", "\n".join(lines) + "\n")
