"""Timing experiments: a claim about cost measured as training-step time rather than from training runs. Each
measurement (`Timing`) is a method's step at a batch size in one round, recorded as its own `step_time` record,
so an interrupted measurement resumes; the rounds are the replicates."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from kdbench import env
from kdbench.data.folder import make_stream
from kdbench.record import SCHEMA_VERSION, current_code_version
from kdbench.results import record_path, write_record
from kdbench.runner import RunConfig, build_method, default_cache_dir
from kdbench.teachers import TeacherCache
from kdbench.timing import Settings, Step, fixed_batches, interleaved_medians, ready, training_step


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


def timing_frame(df: pd.DataFrame, timings: list[Timing]) -> pd.DataFrame:
    """One row per designed measurement: method, batch size, round (as `seed`: the replicate) and its step time."""
    rows = pd.DataFrame(
        [
            {"method": t.cell.method, "batch_size": t.batch_size, "round": t.round, "cell_id": t.cell_id()}
            for t in timings
        ]
    )
    if rows.empty:
        return rows
    got = df.reindex(columns=["cell_id", "step_s", "batch_samples"]).dropna().drop_duplicates("cell_id")
    frame = rows.merge(got.assign(recorded=True), on="cell_id", how="left")
    return frame.assign(recorded=frame["recorded"].notna(), seed=frame["round"])  # rounds are the replicates


def measure_timings(
    timings: list[Timing], results_dir: str | Path, device: str = "auto", cache_dir: str | Path | None = None
) -> int:
    """Time the training steps not yet recorded, one batch size at a time, all methods interleaved within a round
    (a drift in background load hits them alike); one record per measurement. Returns how many were measured."""
    dev = env.resolve_device(device)
    cache = TeacherCache(cache_dir or default_cache_dir())
    todo = [t for t in timings if not record_path(results_dir, t.cell_id()).exists()]
    for size in sorted({t.batch_size for t in todo}):
        group = [t for t in todo if t.batch_size == size]
        cells = {t.cell.method: t.cell for t in group}
        steps: dict[str, Step] = {}
        counts: dict[str, int] = {}
        for name, cell in cells.items():
            method, prepared, _ = build_method(cell, dev, cache, progress=False)
            s = prepared.train
            stream, _ = ready(
                method,
                make_stream(s.images, s.labels, s.info, size, s.seed, True, s.device, s.index, s.augment),
            )
            batches = fixed_batches(stream, group[0].steps)
            steps[name], counts[name] = training_step(method, batches, cell.recipe), len(batches[0])
        rounds = sorted({t.round for t in group})
        for r in rounds:
            settings = Settings(warmup=2 if r == rounds[0] else 0, repeats=1, steps=group[0].steps)
            seconds = interleaved_medians(steps, settings, dev)
            for t in (t for t in group if t.round == r):
                write_record(
                    timing_record(t, seconds[t.cell.method], counts[t.cell.method], dev), results_dir
                )
    return len(todo)


def timing_record(t: Timing, step_s: float, batch_samples: int, device: Any) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "kind": "step_time",
        "status": "ok",
        "cell_id": t.cell_id(),
        "method": t.cell.method,
        "code_version": current_code_version(t.cell.method),
        "student": t.cell.student,
        "teacher": t.cell.teachers[0] if t.cell.teachers else None,
        "teachers": list(t.cell.teachers),
        "dataset": t.cell.dataset,
        "seed": t.cell.seed,
        "config": t.cell.resolve(),
        "batch_size": t.batch_size,
        "batch_samples": batch_samples,
        "round": t.round,
        "steps": t.steps,
        "step_s": step_s,
        "env": env.describe(device),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
