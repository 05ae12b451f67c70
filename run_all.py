"""Run kdbench's notebooks in order for one profile with papermill, the main job of the suite.

    python run_all.py --profile cpu            # the default main job (under 90 minutes on 2 CPU cores)
    python run_all.py --profile smoke          # a 3-minute plumbing check

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

from kdbench import env, grid, tables
from kdbench.errors import KdbenchError
from kdbench.results import atomic_write_text

HERE = Path(__file__).resolve().parent
NOTEBOOKS = ["01_run_grid", "02_catalogue", "03_table4", "04_beyond_compression", "05_figures"]


def run_notebooks(profile: str, device: str, results_dir: Path, workers: int) -> None:
    out_dir = results_dir / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    params = {"profile": profile, "device": device, "results_dir": str(results_dir), "workers": workers}
    for name in tqdm(NOTEBOOKS, desc=f"notebooks ({profile})"):
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
    parser.add_argument("--workers", type=int, default=1, help="grid cells run in parallel processes")
    parser.add_argument("--results-dir", help="default results/<profile>")
    args = parser.parse_args(argv)
    try:
        spec = grid.get_profile(args.profile)
        grid.validate(spec)
        env.resolve_device(args.device)
        results_dir = grid.results_dir_for(args.profile, args.results_dir).resolve()
        started, start = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.perf_counter()
        run_notebooks(args.profile, args.device, results_dir, args.workers)
    except KdbenchError as exc:
        print(f"run_all: error: {exc}", file=sys.stderr)
        return 2
    info = {"profile": spec.name, "started": started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "wall_time_s": round(time.perf_counter() - start, 1), "device": args.device, "workers": args.workers,
            "machine": f"{env.cpu_model()}, {os.cpu_count()} cores, {platform.system()}"}
    atomic_write_text(results_dir / "run.json", json.dumps(info, indent=1))
    tables.write_index(results_dir)
    if results_dir.parent == grid.results_root().resolve():  # never write beside a folder the user chose
        tables.write_results_index(results_dir.parent)
    print(f"done in {info['wall_time_s'] / 60:.1f} min; see {results_dir / 'README.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
