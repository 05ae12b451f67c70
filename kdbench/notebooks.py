"""Executing kdbench's notebooks with papermill: the main job's (run_all.py) and the report's (`kdbench report`),
which rebuilds a results folder's tables, figures and one HTML page of its executed notebooks from its records,
without training. The notebooks live in the checkout's notebooks/ folder, beside run_all.py."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import papermill
from tqdm.auto import tqdm
from traitlets.config import Config

from kdbench import profiles
from kdbench.cli_options import ExecutorOptions
from kdbench.errors import KdbenchError
from kdbench.results import atomic_write_text

HERE = Path(__file__).resolve().parents[1]  # the checkout
GRID_NOTEBOOK = "01_run_grid"
NOTEBOOKS = [GRID_NOTEBOOK, "02_catalogue", "03_table4", "04_beyond_compression", "05_figures"]
CLAIMS_NOTEBOOK = "06_claims"
# experiments (profiles.EXPERIMENTS) with a notebook of their own instead of the grid's, by their cells' source
EXPERIMENT_NOTEBOOKS = {"kdbench.claims:all_cells": [CLAIMS_NOTEBOOK]}
JOB_NOTEBOOKS = {GRID_NOTEBOOK, CLAIMS_NOTEBOOK}  # the notebooks that run jobs, so take an executor
# the kernels' settings while run_all executes notebooks: no progress bars in the saved outputs (the terminal
# has them), and the kernel's sockets as local files rather than TCP, which ipykernel warns about on every start
KERNEL_ENV = {"TQDM_DISABLE": "1"}
KERNEL_CONFIG = Config({"KernelManager": {"transport": "ipc"}})


def notebooks_for(profile: str) -> list[str]:
    """The grid's notebooks, or an experiment's own (found by its cell source, so a YAML copy gets them too)."""
    return EXPERIMENT_NOTEBOOKS.get(profiles.get_profile(profile).cells_from, NOTEBOOKS)


def portable(path: str | Path) -> str:
    """A path as the executed notebooks show it: relative to the checkout when inside it, so the committed
    notebooks name no machine's folders."""
    path = Path(path).resolve()
    return str(path.relative_to(HERE)) if path.is_relative_to(HERE) else str(path)


@contextlib.contextmanager
def kernel_env() -> Iterator[None]:
    """KERNEL_ENV in the environment the kernels inherit, restored afterwards."""
    before = {k: os.environ.get(k) for k in KERNEL_ENV}
    os.environ.update(KERNEL_ENV)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def execute(name: str, out_dir: Path, params: dict[str, Any], out_name: str | None = None) -> Path:
    """Execute notebooks/<name>.ipynb into out_dir (as `out_name`, default the same name) with the checkout as its
    working directory. A half-executed copy never appears under the final name, and the paths papermill records
    are made relative."""
    final = out_dir / (out_name or f"{name}.ipynb")
    partial = out_dir / f".{name}.partial.ipynb"
    try:
        with kernel_env():
            papermill.execute_notebook(
                str(HERE / "notebooks" / f"{name}.ipynb"),
                str(partial),
                parameters=params,
                kernel_name="python3",
                cwd=str(HERE),
                progress_bar=False,
                config=KERNEL_CONFIG,
            )
        nb = nbformat.read(partial, as_version=4)
        nb.metadata.papermill.update(input_path=f"notebooks/{name}.ipynb", output_path=portable(final))
        nbformat.write(nb, partial)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, final)
    return final


def run_notebooks(
    profile: str,
    device: str,
    results_dir: Path,
    options: ExecutorOptions,
    ran: dict[str, Any] | None = None,
) -> None:
    """Every notebook of the profile; `options`: how the notebooks that run cells run them; `ran`: what run_job
    did, for the grid notebook to record."""
    out_dir = results_dir / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    common = {
        "profile": portable(profile) if profile.endswith((".yaml", ".yml")) else profile,
        "device": device,
        "results_dir": portable(results_dir),
        "workers": options.workers,
    }
    spec = profiles.get_profile(profile)
    for name in tqdm(notebooks_for(profile), desc=f"notebooks ({Path(profile).stem})"):
        # only the notebooks that run jobs have an executor in their parameter cell
        params = {**common, **options.as_kwargs()} if name in JOB_NOTEBOOKS else common
        out_name = None
        if name == GRID_NOTEBOOK:
            params["ran"] = ran
            # a profile adding cells to another's folder records its run beside that one's, not over it
            out_name = spec.own_file(name, ".ipynb")
        execute(name, out_dir, params, out_name)


def report(profile: str, results_dir: Path) -> Path:
    """Rebuild the results folder's tables and figures from its records, without training: execute the profile's
    notebooks except the grid's (whose executed copy from the last run is kept), then write `report.html`. An
    experiment whose notebook runs its own cells (claims) is reported only once every cell is finished."""
    from kdbench.grid import is_finished

    spec = profiles.get_profile(profile)
    if not (results_dir / "records").is_dir():
        raise KdbenchError(f"no records in {results_dir}; run python run_all.py --profile {spec.name} first")
    names = [name for name in notebooks_for(profile) if name != GRID_NOTEBOOK]
    if any(name in JOB_NOTEBOOKS for name in names):
        todo = sum(not is_finished(cfg, results_dir, False) for cfg in profiles.all_cells(spec))
        if todo:
            raise KdbenchError(
                f"{todo} cells of {spec.name} are not finished, and its notebook would train them; "
                f"run python run_all.py --profile {spec.name}"
            )
    out_dir = results_dir / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    params = {
        "profile": portable(profile) if profile.endswith((".yaml", ".yml")) else profile,
        "device": "cpu",
        "results_dir": portable(results_dir),
        "workers": None,
    }
    for name in tqdm(names, desc=f"report ({Path(profile).stem})"):
        execute(name, out_dir, {**params, "executor": "local"} if name in JOB_NOTEBOOKS else params)
    return write_html(
        out_dir,
        [n for n in notebooks_for(profile) if (out_dir / f"{n}.ipynb").exists()],
        results_dir / "report.html",
    )


def write_html(out_dir: Path, names: list[str], path: Path) -> Path:
    """One HTML page of the executed notebooks `names`, in order, each under a heading with its name (nbconvert),
    written atomically."""
    from nbconvert import HTMLExporter

    merged = nbformat.v4.new_notebook()
    for name in names:
        nb = nbformat.read(out_dir / f"{name}.ipynb", as_version=4)
        merged.cells.append(nbformat.v4.new_markdown_cell(f"# notebooks/{name}.ipynb"))
        merged.cells.extend(nb.cells)
        merged.metadata.setdefault("kernelspec", nb.metadata.get("kernelspec", {}))
        merged.metadata.setdefault("language_info", nb.metadata.get("language_info", {}))
    html, _ = HTMLExporter().from_notebook_node(merged, resources={"metadata": {"name": path.stem}})
    atomic_write_text(path, html)
    return path
