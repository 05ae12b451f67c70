"""The options several commands share, run_all.py's too: for each, the function that adds it to a parser
(`add_*`) and, where its value must reach everything the command starts (pool workers, notebook kernels, Ray
tasks), the function that passes it on through the environment (`use_*`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def add_data_root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-root",
        metavar="DIR",
        help="dataset folder (default: $KDBENCH_DATA, else $KDBENCH_CACHE/data, else ~/.cache/kdbench/data)",
    )


def use_data_root(path: str | None) -> None:
    """Make `path` the dataset folder of everything this command starts: this process, pool workers, notebook
    kernels and Ray tasks all read $KDBENCH_DATA (Ray gets every KDBENCH_* variable)."""
    if path:
        os.environ["KDBENCH_DATA"] = str(Path(path).expanduser().resolve())


def add_retrain_teachers(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--retrain-teachers",
        action="store_true",
        help="train the teachers that ship inside the "
        "package instead of loading them (to reproduce them; the result is cached)",
    )


def use_retrain_teachers(flag: bool) -> None:
    """Pass --retrain-teachers to everything this command starts, as use_data_root does the dataset folder."""
    from kdbench.teachers import RETRAIN_ENV

    if flag:
        os.environ[RETRAIN_ENV] = "1"


def add_memory_format(p: argparse.ArgumentParser) -> None:
    """--memory-format of a run or grid (kdbench.fastpaths); run_all.py shares it."""
    p.add_argument(
        "--memory-format",
        default="auto",
        help="auto (the faster one, measured once per machine and "
        "cached), channels_last or contiguous; recorded in each record, not part of the cell id "
        "(default: %(default)s)",
    )


def add_executor_options(p: argparse.ArgumentParser) -> None:
    """How a grid's cells run and which finished cells run again: `kdbench grid` and run_all.py share these."""
    from kdbench.executor import EXECUTORS

    p.add_argument(
        "--executor",
        help=f"{', '.join(EXECUTORS)}: one cell after another (default), a pool on this "
        "machine, or Ray tasks on $RAY_ADDRESS's cluster (else a local Ray)",
    )
    p.add_argument(
        "--workers",
        type=int,
        help="jobs at once: the processes pool (default one per core) or Ray "
        "tasks in flight (default no cap); N > 1 without --executor means processes",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads per job; with ray also the CPUs each task asks for (default 1)",
    )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="run the cells whose record says they failed "
        "again (by default a finished cell, failed or not, is skipped)",
    )
    p.add_argument(
        "--rerun-stale",
        action="store_true",
        help="run the cells whose record was written by other "
        "code than the current again (by default they are kept, and counted as 'stale')",
    )


@dataclass(frozen=True)
class ExecutorOptions:
    """The values of `add_executor_options`, the executor resolved (`kdbench.executor.resolve_executor`): what
    `kdbench.grid.run_grid` and the notebooks that run cells take as keywords."""

    executor: str
    workers: int | None = None
    threads: int | None = None
    retry_failed: bool = False
    rerun_stale: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ExecutorOptions:
        from kdbench.executor import resolve_executor

        executor = resolve_executor(args.executor, args.workers)
        return cls(executor, args.workers, args.threads, args.retry_failed, args.rerun_stale)

    def as_kwargs(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
