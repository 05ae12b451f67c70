"""Independent jobs (teachers, grid cells) run one after another, or in a pool of processes that split the
machine's cores between them."""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
from tqdm.auto import tqdm


def run_jobs(
    fn: Callable[[tuple], Any], jobs: list[tuple], workers: int = 1, desc: str = "", progress: bool = True
) -> Iterator[Any]:
    """Yield `fn(job)` for every job, in completion order, with a progress bar. With `workers > 1` the jobs run
    in spawned processes, each given an equal share of the cores (so `fn` must be a module-level function)."""
    with tqdm(total=len(jobs), desc=desc, disable=not progress or not jobs) as bar:
        if workers > 1 and len(jobs) > 1:
            threads = max(1, (os.cpu_count() or 1) // workers)
            context = mp.get_context("spawn")
            with context.Pool(min(workers, len(jobs)), initializer=torch.set_num_threads, initargs=(threads,)) as pool:
                for result in pool.imap_unordered(fn, jobs):
                    bar.update()
                    yield result
        else:
            for job in jobs:
                result = fn(job)
                bar.update()
                yield result
