"""The records of a results folder as one pandas frame: the layer every table and figure reads.

`load_frame` turns a folder's records into one row per distinct run, with the columns the tables group by (copies
of a teacher-free run counted once, as `kdbench.tables.POOLING` says). The selections here decide which runs a
mean may use (`usable`), which belong to the main grid (`main_setting`), to a teacher→student pair (`on_pair`) or
to the robustness sweep (`swept`); `with_reference` joins each usable run to the run its boost and cost ratios are
measured against.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from kdbench import results
from kdbench.data.catalog import dataset_info, dataset_names
from kdbench.methods import METHODS
from kdbench.stats import is_collapsed

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
    if df["epochs"].nunique() > 1:  # pairs of one folder train for different lengths: a pair names its own
        df["pair"] = df["pair"] + df["epochs"].map(lambda e: f", {int(e)} epochs" if pd.notna(e) else "")
    df["label"] = df["method"].where(df["variant"] == "", df["method"] + " (" + df["variant"] + ")")
    df.attrs["copies_dropped"] = before - len(df)
    return df.reset_index(drop=True)


def _collapsed(top1: float, dataset: str) -> bool:
    if dataset not in dataset_names():
        return False
    return is_collapsed(top1, dataset_info(dataset).num_classes)


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


def on_pair(df: pd.DataFrame, teacher: str | None, student: str, epochs: int | None = None) -> pd.DataFrame:
    """The runs that belong to a teacher→student pair: its own, and the student's teacher-free runs; of the
    pair's schedule (`epochs`), when given, as a pair may train its students longer than the others."""
    runs = df[(df["student"] == student) & ((df["teacher"] == teacher) | df["teacher_free"])]
    return runs if epochs is None else runs[runs["epochs"] == epochs]


def swept(df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Usable runs of the methods swept over label noise or imbalance, on the first pair a sweep ran on (with
    the student's teacher-free runs), and that pair's name; empty when nothing was swept."""
    ok = df[(df["status"] == "ok") & ~df["stale"]]  # collapsed runs stay, counted apart by the table
    cells = ok[(ok["config.label_noise"] > 0) | (ok["config.imbalance_ratio"] > 1)]
    if cells.empty:
        return ok[:0], ""
    first = cells.sort_values("teacher_free").iloc[0]  # a pair with a teacher, when the sweep has one
    teacher = None if first["teacher_free"] else first["teacher"]
    runs = on_pair(ok, teacher, first["student"], first["epochs"])
    return runs[runs["method"].isin(set(cells["method"])) & (runs["variant"] == "")], first["pair"]
