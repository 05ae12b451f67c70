"""Run kdbench's notebooks in order for one profile with papermill, the main job of the suite.

    python run_all.py --profile cpu            # the default main job (under 90 minutes on 2 CPU cores)
    python run_all.py --profile smoke          # a 3-minute plumbing check
    python run_all.py --profile claims         # the survey's trade-off claims tested (about 2 hours)
    python run_all.py --profile cpu --executor ray   # grid cells as Ray tasks ($RAY_ADDRESS's cluster)

Executed notebooks go to results/<profile>/notebooks/, tables and figures to results/<profile>/. A second run
skips the grid cells that are finished; an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import papermill
from tqdm.auto import tqdm

from kdbench import env, grid, runner, tables
from kdbench.errors import KdbenchError
from kdbench.executor import resolve_executor
from kdbench.results import atomic_write_text

HERE = Path(__file__).resolve().parent
GRID_NOTEBOOK = "01_run_grid"
NOTEBOOKS = [GRID_NOTEBOOK, "02_catalogue", "03_table4", "04_beyond_compression", "05_figures"]
CLAIMS_NOTEBOOK = "06_claims"
# experiments (grid.EXPERIMENTS) with a notebook of their own instead of the grid's, by their cells' source
EXPERIMENT_NOTEBOOKS = {"kdbench.claims:all_cells": [CLAIMS_NOTEBOOK]}
JOB_NOTEBOOKS = {GRID_NOTEBOOK, CLAIMS_NOTEBOOK}  # the notebooks that run jobs, so take an executor


def notebooks_for(profile: str) -> list[str]:
    """The grid's notebooks, or an experiment's own (found by its cell source, so a YAML copy gets them too)."""
    return EXPERIMENT_NOTEBOOKS.get(grid.get_profile(profile).cells_from, NOTEBOOKS)


def run_notebooks(profile: str, device: str, results_dir: Path, workers: int | None, executor: str) -> None:
    out_dir = results_dir / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    common = {"profile": profile, "device": device, "results_dir": str(results_dir), "workers": workers}
    for name in tqdm(notebooks_for(profile), desc=f"notebooks ({profile})"):
        # only the notebooks that run jobs have an executor in their parameter cell
        params = {**common, "executor": executor} if name in JOB_NOTEBOOKS else common
        final = out_dir / f"{name}.ipynb"
        partial = out_dir / f".{name}.partial.ipynb"  # never leave a half-executed copy under the final name
        try:
            papermill.execute_notebook(
                str(HERE / "notebooks" / f"{name}.ipynb"), str(partial), parameters=params, kernel_name="python3",
                cwd=str(HERE / "notebooks"), progress_bar=False,
            )
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, final)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", help="smoke, cpu, paper, or a grid YAML file")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--executor", help="how grid cells run: local (default), processes or ray")
    parser.add_argument("--workers", type=int, help="jobs at once for processes or ray (see kdbench grid --help); "
                        "N > 1 without --executor means processes")
    parser.add_argument("--results-dir", help="default results/<profile>")
    args = parser.parse_args(argv)
    try:
        spec = grid.get_profile(args.profile)
        grid.validate(spec)
        env.resolve_device(args.device)
        executor = resolve_executor(args.executor, args.workers)
        results_dir = grid.results_dir_for(args.profile, args.results_dir).resolve()
        runner.check_folders(results_dir, runner.default_cache_dir())
        started, start = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.perf_counter()
        run_notebooks(args.profile, args.device, results_dir, args.workers, executor)
    except KdbenchError as exc:
        print(f"run_all: error: {exc}", file=sys.stderr)
        return 2
    info = {"profile": spec.name, "started": started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "wall_time_s": round(time.perf_counter() - start, 1), "device": args.device, "executor": executor,
            "workers": args.workers,
            "machine": f"{env.cpu_model()}, {os.cpu_count()} cores, {platform.system()}"}
    atomic_write_text(results_dir / "run.json", json.dumps(info, indent=1))
    tables.write_index(results_dir)
    if results_dir.parent == grid.results_root().resolve():  # never write beside a folder the user chose
        tables.write_results_index(results_dir.parent)
    print(f"done in {info['wall_time_s'] / 60:.1f} min; see {results_dir / 'README.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
