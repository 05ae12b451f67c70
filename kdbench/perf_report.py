"""perf.md and perf.csv: the report of `kdbench bench`'s frame (`kdbench.bench.bench`): where and how it was
measured, the table, each target met or not per configuration (`target_lines`), and what every column means.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from kdbench.bench import CACHED_SUFFIX, CACHED_TARGET, HELD_SUFFIX, IDEAL_TARGET
from kdbench.results import atomic_write_text

DISPLAY_DIGITS = {
    "step_ms": 1,
    "samples_per_s": 0,
    "vs_baseline": 2,
    "student_ms": 1,
    "teachers_ms": 1,
    "modules_ms": 1,
    "ideal_ms": 1,
    "vs_ideal": 2,
    "setup_s": 1,
    "peak_memory_mb": 0,
}

COLUMN_NOTES = (
    "`config`: the precision and memory format the step and every component of its ideal step ran in "
    "(`kdbench.fastpaths`; bf16 autocasts the loss terms, fp32 weights and update). "
    "`step_ms`: median time of one training step (`engine.train_step`: auxiliary step, loss terms, backward, "
    "SGD update); `samples_per_s`: the batch size over it; `vs_baseline`: over `baseline`'s step on the profile's "
    "student. `student_ms`: the student's own training step (`student_step` names the method timed for it); "
    "`teachers_ms`: the inference forward of every teacher the step runs (`teachers_timed`); `modules_ms`: "
    "forward + backward of each call of the method's own modules alone, an inference forward only for a frozen one (`modules_timed`); `ideal_ms`: their "
    "sum, and `vs_ideal`: the step over it. `setup_s`: untimed work before the first step (search, synthesis, "
    "estimates); `peak_memory_mb`: memory the first step adds (on the CPU, resident-set growth after freed memory "
    "was returned to the system: a rough figure). A row named `(cached teacher outputs)` serves the teachers' "
    "outputs from `kdbench.teacher_outputs` (filled by one untimed pass over the batches), as grid cells sharing "
    "outputs get them; it is timed for each offline method whose every teacher call the cache can serve (stage "
    "features only while an epoch of them fits the cache's budget). A row named `(teacher outputs held in "
    "memory)` does the same for a method whose stage features exceed that budget, with no limit: the grid never "
    "runs it so, but its `vs_ideal` shows what the step costs beyond its teacher forward (its own loss terms)."
)


def _ideal_target_line(rows: pd.DataFrame, what: str) -> str:
    missed = rows[rows["ideal_target"] == "not met"]
    over = (
        "; over: " + ", ".join(f"{r.method} {r.vs_ideal:.2f}x" for r in missed.itertuples())
        if len(missed)
        else ""
    )
    return (
        f"- Every offline method{what} within {IDEAL_TARGET:.2f}x of its ideal step: "
        f"{'met' if missed.empty else 'not met'} ({len(rows) - len(missed)} of {len(rows)}{over})"
    )


def target_lines(frame: pd.DataFrame) -> list[str]:
    """The targets, each as met / not met from the rows, for each configuration timed."""
    return [
        f"- [{config}] {line[2:]}"
        for config, rows in frame.groupby("config", sort=False)
        for line in _config_target_lines(rows)
    ]


def _config_target_lines(frame: pd.DataFrame) -> list[str]:
    offline = frame[frame["ideal_target"] != ""]
    served = offline["method"].str.endswith(CACHED_SUFFIX)
    held = offline["method"].str.endswith(HELD_SUFFIX)
    lines = [_ideal_target_line(offline[~served & ~held], "")]
    for rows, suffix in ((served, CACHED_SUFFIX), (held, HELD_SUFFIX)):
        if rows.any():
            lines.append(_ideal_target_line(offline[rows], suffix))
    cached = frame[frame["method"] == "kd" + CACHED_SUFFIX]
    if cached.empty:
        lines.append(
            f"- kd with cached teacher outputs within {CACHED_TARGET:.2f}x of baseline: not measured here"
        )
    else:
        ratio = float(cached["vs_baseline"].iloc[0])
        lines.append(
            f"- kd with cached teacher outputs within {CACHED_TARGET:.2f}x of baseline: "
            f"{'met' if ratio <= CACHED_TARGET else 'not met'} ({ratio:.2f}x)"
        )
    return lines


def perf_markdown(frame: pd.DataFrame) -> str:
    """perf.md: what was measured where (from the frame's attrs), the table, the targets, the columns explained."""
    a = frame.attrs
    e, s = a["env"], a["settings"]
    shown = frame.round(DISPLAY_DIGITS)
    notes = sorted({n for n in frame["note"] if n})
    lines = [
        f"# Training-step cost: profile {a['profile']}",
        "",
        f"{a['dataset']}, teacher {a['teacher']} → student {a['student']}, batch {a['batch_size']}"
        f" (training subset {a['train_subset']}). Each method built as its grid cell (seed 0 of the profile),"
        f" timed in one process on the same {s['steps']} batches: {s['warmup']} untimed warm-up call(s), then the"
        f" median of {s['repeats']} timed passes; every component timed interleaved with the step. Teachers: "
        + (
            f"trained for the bench (not in the teacher cache) for {', '.join(a['teachers_trained'])}"
            if a["teachers_trained"]
            else "all loaded from the teacher cache"
        )
        + f". Configurations: {', '.join(a['configs'])}. Bench wall time {a['wall_s']:.0f} s.",
        "",
        f"Environment: {e['device']} ({e['device_name']}), {e['threads']} threads, torch {e['torch']},"
        f" Python {e['python']}, kdbench {e['kdbench']}, commit {e['git_commit'] or 'unknown'}.",
        "",
        shown.to_markdown(index=False),
        "",
        "Targets:",
        *target_lines(frame),
        "",
        COLUMN_NOTES,
        *(["", "Notes: " + "; ".join(notes) + "."] if notes else []),
        *(["", "Not run: " + "; ".join(a["not_run"]) + "."] if a["not_run"] else []),
    ]
    return "\n".join(lines) + "\n"


def write_perf(results_dir: str | Path, frame: pd.DataFrame) -> Path:
    """Write the bench's frame as `perf.md` (environment, table, targets) and `perf.csv` under `results_dir`,
    each atomically; returns the Markdown file's path. Notebooks call this with `bench(...)`'s frame."""
    results_dir = Path(results_dir)
    atomic_write_text(results_dir / "perf.csv", frame.to_csv(index=False))
    return atomic_write_text(results_dir / "perf.md", perf_markdown(frame))
