"""Run kdbench's notebooks in order for one profile with papermill, the main job of the suite.

    python run_all.py --profile cpu            # the default main job (every technique, 5 seeds, 2 CPU cores)
    python run_all.py --profile smoke          # a 3-minute plumbing check
    python run_all.py --profile claims         # the survey's trade-off claims tested
    python run_all.py --profile cpu --executor ray   # grid cells as Ray tasks ($RAY_ADDRESS's cluster)
    python run_all.py --profile my_grid.yaml   # a grid of your own, into results/<its name>/

The grid runs in this process first, with its progress in the terminal (cells done / total, the cell running,
the time left); the grid notebook then records what ran, and the others build the tables and figures. Executed
notebooks go to results/<profile>/notebooks/, tables and figures to results/<profile>/. A second run skips the
grid cells that are finished; an interrupted run resumes. Exit status: 0, 1 when grid cells failed (their
errors are in tables/failed.md; `--retry-failed` runs them again), 2 for bad input, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from kdbench import env, grid, profiles, results_index, runner
from kdbench.cli import INTERRUPTED, one_line_warnings
from kdbench.cli_commands import grid_outcome
from kdbench.cli_options import (
    ExecutorOptions,
    add_data_root,
    add_executor_options,
    add_memory_format,
    add_retrain_teachers,
    use_data_root,
    use_retrain_teachers,
)
from kdbench.errors import KdbenchError
from kdbench.notebooks import EXPERIMENT_NOTEBOOKS, portable, run_notebooks
from kdbench.results import atomic_write_text


def run_job(
    spec: profiles.Profile,
    results_dir: Path,
    device: str,
    options: ExecutorOptions,
    memory_format: str = "auto",
) -> dict[str, Any] | None:
    """Run the profile's grid here, so its progress bar is in the terminal; None for an experiment whose own
    notebook runs its cells."""
    if spec.cells_from in EXPERIMENT_NOTEBOOKS:
        return None
    start = time.perf_counter()
    counts = grid.run_grid(
        spec,
        results_dir,
        device=device,
        memory_format=memory_format,
        **options.as_kwargs(),
    )
    return {**counts, "wall_time_s": round(time.perf_counter() - start, 1)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--profile",
        default="cpu",
        metavar="NAME|FILE.yaml",
        help=f"a profile ({', '.join([*profiles.PROFILES, *profiles.EXPERIMENTS])}) or a grid YAML "
        "file (default: %(default)s)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    add_executor_options(parser)
    parser.add_argument("--results-dir", help="default: results/<profile name>")
    add_memory_format(parser)
    add_data_root(parser)
    add_retrain_teachers(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with one_line_warnings():
            return run(args)
    except KdbenchError as exc:
        print(f"run_all: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the kernels run in sessions of their own: Ctrl-C reaches this process only
        print(INTERRUPTED, file=sys.stderr)
        return 130


def run(args: argparse.Namespace) -> int:
    spec = profiles.get_profile(args.profile)
    profiles.validate(spec)
    env.resolve_device(args.device)
    options = ExecutorOptions.from_args(args)
    use_data_root(args.data_root)
    use_retrain_teachers(args.retrain_teachers)
    results_dir = grid.results_dir_for(spec.name, args.results_dir).resolve()
    runner.check_folders(results_dir, runner.default_cache_dir())
    started, start = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.perf_counter()
    ran = run_job(spec, results_dir, args.device, options, args.memory_format)
    run_notebooks(args.profile, args.device, results_dir, options, ran)
    info = {
        "profile": spec.name,
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_time_s": round(time.perf_counter() - start, 1),
        "device": args.device,
        "executor": options.executor,
        "workers": options.workers,
        "grid": ran,
        "machine": f"{env.cpu_model()}, {os.cpu_count()} cores, {platform.system()}",
    }
    atomic_write_text(results_dir / spec.own_file("run", ".json"), json.dumps(info, indent=1))
    results_index.write_index(results_dir)
    committed = [name for name, p in {**profiles.PROFILES, **profiles.EXPERIMENTS}.items() if p.meaningful]
    if results_dir.parent == grid.results_root().resolve() and spec.name in committed:
        results_index.write_results_index(
            results_dir.parent, committed
        )  # never for a plumbing check or a user's grid
    print(f"done in {info['wall_time_s'] / 60:.1f} min; see {portable(results_dir / 'README.md')}")
    return grid_outcome(spec, results_dir, "run_all")


if __name__ == "__main__":
    raise SystemExit(main())
