"""Reading a claim's records: one row per designed cell with its metrics, values per seed, differences against a
reference row, and the per-setting tables of mean ± 95% CI."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from kdbench import tables

if TYPE_CHECKING:
    from kdbench.claims.core import Entry

METRICS = (
    "student_top1",
    "teacher_top1",
    "teacher_params",
    "train_time_s",
    "extras.search_time_s",
    "extras.chosen_arch",
    "extras.synthesis_time_s",
    "extras.avg_forgetting",
    "extras.avg_accuracy",
    "extras.task_accuracy",
    "teacher_output_cache.hits",
)


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


def reference(
    frame: pd.DataFrame, is_reference: pd.Series, on: Sequence[str], value: str = "student_top1"
) -> pd.Series:
    """For each row, `value` of its reference row: the row of `is_reference` with equal `on` labels."""
    ref = frame[is_reference].groupby(list(on))[value].mean()
    keys = pd.MultiIndex.from_frame(frame[list(on)]) if len(on) > 1 else pd.Index(frame[on[0]])
    return pd.Series(ref.reindex(keys).to_numpy(), index=frame.index)


def minus(
    frame: pd.DataFrame, is_reference: pd.Series, on: Sequence[str], value: str = "student_top1"
) -> pd.Series:
    """Each row's `value` minus its reference row's (see `reference`)."""
    return frame[value] - reference(frame, is_reference, on, value)


def versus_baseline(frame: pd.DataFrame) -> pd.DataFrame:
    """Each row's boost over the baseline of its seed (pts) and its training time as a multiple of the baseline's."""
    base = frame["method"] == "baseline"
    return frame.assign(
        boost=minus(frame, base, ["seed"]),
        time_x=frame["train_time_s"] / reference(frame, base, ["seed"], "train_time_s"),
    )


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
