"""The options several commands share, run_all.py's too: for each, the function that adds it to a parser
(`add_*`) and, where its value must reach everything the command starts (pool workers, notebook kernels, Ray
tasks), the function that passes it on through the environment (`use_*`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


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
