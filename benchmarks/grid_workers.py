"""Which way of running a grid is fastest on this machine? Runs the same cells of the cpu profile's first pair
each way, into scratch folders, on an otherwise idle machine, and writes the wall times (by hand, not by CI):

    python benchmarks/grid_workers.py --compare workers --out results/design/workers.md
    python benchmarks/grid_workers.py --compare allocator --rounds 2 --methods qkd --seeds 0 \
        --out results/design/allocator.md

`workers`: one process with every thread, or one 1-thread process per core. `allocator`: kdbench's glibc settings
(`kdbench.allocator`) or glibc's defaults (set by the environment: `MALLOC_TOP_PAD_` at its default value makes
kdbench leave the allocator alone), each in one grid process, as `run_all.py` runs a profile.

The cells are the cpu profile's own (its budget, recipe and shipped teacher), `--methods` and their baseline for
`--seeds`. Every run starts from an empty results folder and an empty teacher cache (the shipped teacher loads in
seconds), so it times the cells alone and measures its deployables' latency afresh; with `--rounds 2` or more the
ways alternate (A B, then B A), so a drift of the machine falls on both.
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


GLIBC_DEFAULT_TOP_PAD = str(128 * 1024)  # mallopt(3): M_TOP_PAD's default
# per comparison, each way's `kdbench grid` options and the environment it adds
WAYS: dict[str, dict[str, tuple[list[str], dict[str, str]]]] = {
    "workers": {
        "one process, 2 threads": (["--threads", "2"], {}),
        "2 processes, 1 thread each": (["--workers", "2", "--threads", "1"], {}),
    },
    "allocator": {
        "kdbench's glibc settings": (["--threads", "2"], {}),
        "glibc defaults": (["--threads", "2"], {"MALLOC_TOP_PAD_": GLIBC_DEFAULT_TOP_PAD}),
    },
}


def time_way(grid: Path, out: Path, options: list[str], environ: dict[str, str]) -> float:
    cmd = [sys.executable, "-m", "kdbench", "grid", "--grid", str(grid), "--results-dir", str(out), "--quiet"]
    cmd += ["--cache-dir", str(out / "cache"), *options]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, **environ})
    return time.perf_counter() - start


def run_row(name: str, round_: int, wall: float, df: pd.DataFrame) -> dict:
    """One run of a way: its wall time and what its records say."""
    return {
        "way": name,
        "round": round_,
        "allocator": ", ".join(sorted(set(df["env.allocator"]))),
        "cells": len(df),
        "wall time (s)": round(wall, 1),
        "mean cell train time (s)": round(df["train_time_s"].mean(), 1),
        "student latency b1 (ms)": round(df["latency_ms_b1"].median(), 3),
        "student latency b256 (ms)": round(df["latency_ms_b256"].median(), 2),
        "top-1 (mean over cells)": round(df["student_top1"].mean(), 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--compare", choices=sorted(WAYS), default="workers")
    p.add_argument("--methods", nargs="+", default=["kd", "fitnet"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--rounds", type=int, default=1, help="runs of each way, alternating their order")
    args = p.parse_args()
    ways = list(WAYS[args.compare].items())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        grid = grid_file(Path(tmp), args.methods, args.seeds)
        for round_ in range(args.rounds):
            order = list(enumerate(ways))
            for i, (name, (options, environ)) in order if round_ % 2 == 0 else order[::-1]:
                out = Path(tmp) / f"way{i}-round{round_}"
                wall = time_way(grid, out, options, environ)
                rows.append(run_row(name, round_, wall, results.load(out)))
    table = pd.DataFrame(rows)
    means = table.groupby("way", sort=False)["wall time (s)"].mean()
    setting = ", ".join(f"`{k}={v}`" for _, (_, environ) in ways for k, v in environ.items()) or "none"
    text = "\n".join(
        [
            f"# {args.out.stem}: measured with benchmarks/grid_workers.py --compare {args.compare}",
            "",
            f"The cpu profile's first pair and budget, methods {', '.join(args.methods)} and their baseline, seeds "
            f"{', '.join(map(str, args.seeds))}; {args.rounds} round(s) of each way in alternating order; "
            f"{env.cpu_model()}, {os.cpu_count()} cores, idle; each run from an empty results folder and teacher "
            f"cache (the shipped teacher loaded). Environment set by a way: {setting}. Train times of cells that "
            "share the machine with another cell are longer than alone: the records' cost columns assume one "
            "cell at a time. Latencies are the medians over the run's cells of each cell's deployable "
            "(measured once per run).",
            "",
            table.to_markdown(index=False),
            "",
            "Mean wall time per way: " + "; ".join(f"{way} {wall:.1f} s" for way, wall in means.items()),
            f"Faster: **{means.idxmin()}**.",
        ]
    )
    atomic_write_text(args.out, text + "\n")
    print(text)


if __name__ == "__main__":
    main()
