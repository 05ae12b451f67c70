"""Is a grid on this machine faster as one process with every thread, or as one 1-thread process per core?
Runs the same cells of the cpu profile's first pair both ways, into scratch folders, on an otherwise idle machine,
and writes the wall times (by hand, not by CI):

    python benchmarks/grid_workers.py --out results/design/workers.md

The cells are the cpu profile's own (its budget, recipe and shipped teacher), `--methods` for `--seeds`; each way
starts from an empty results folder and the same teacher cache, so it times the cells alone.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from kdbench import env, results
from kdbench.profiles import PROFILES
from kdbench.results import atomic_write_text


def grid_file(folder: Path, methods: list[str], seeds: list[int]) -> Path:
    """The cpu profile's first pair and budget, for `methods` and `seeds`, as a grid YAML file."""
    cpu = PROFILES["cpu"]
    pair = cpu.pairs[0]
    text = "\n".join(
        [
            "name: workers",
            f"dataset: {cpu.dataset}",
            f"pairs: [{{teacher: {pair.teacher}, student: {pair.student}}}]",
            f"seeds: [{', '.join(map(str, seeds))}]",
            f"epochs: {cpu.epochs}",
            f"teacher_epochs: {cpu.teacher_epochs}",
            f"train_subset: {cpu.train_subset}",
            f"teacher_train_subset: {cpu.teacher_train_subset}",
            f"recipe: {cpu.recipe}",
            f"methods: [{', '.join(methods)}]",
        ]
    )
    path = folder / "workers.yaml"
    path.write_text(text + "\n")
    return path


WAYS = {
    "one process, 2 threads": ["--threads", "2"],
    "2 processes, 1 thread each": ["--workers", "2", "--threads", "1"],
}


def time_way(grid: Path, out: Path, options: list[str]) -> float:
    cmd = [sys.executable, "-m", "kdbench", "grid", "--grid", str(grid), "--results-dir", str(out), "--quiet"]
    start = time.perf_counter()
    subprocess.run([*cmd, *options], check=True)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--methods", nargs="+", default=["kd", "fitnet"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        grid = grid_file(Path(tmp), args.methods, args.seeds)
        for name, options in WAYS.items():
            out = Path(tmp) / name.replace(" ", "-").replace(",", "")
            wall = time_way(grid, out, options)
            df = results.load(out)
            rows.append(
                {
                    "way": name,
                    "options": " ".join(options),
                    "cells": len(df),
                    "wall time (s)": round(wall, 1),
                    "per cell (s)": round(wall / len(df), 1),
                    "mean cell train time (s)": round(df["train_time_s"].mean(), 1),
                    "top-1 (mean over cells)": round(df["student_top1"].mean(), 2),
                }
            )
    table = pd.DataFrame(rows)
    faster = table.loc[table["wall time (s)"].idxmin(), "way"]
    text = "\n".join(
        [
            f"# {args.out.stem}: measured with benchmarks/grid_workers.py",
            "",
            f"The cpu profile's first pair and budget, methods {', '.join(args.methods)} and their baseline, seeds "
            f"{', '.join(map(str, args.seeds))}; {env.cpu_model()}, {os.cpu_count()} cores, idle; each way from an "
            "empty results folder with the teacher already cached. Train times of cells that share the machine "
            "with another cell are longer than alone: the records' cost columns assume one cell at a time.",
            "",
            table.to_markdown(index=False),
            "",
            f"Faster: **{faster}**.",
        ]
    )
    atomic_write_text(args.out, text + "\n")
    print(text)


if __name__ == "__main__":
    main()
