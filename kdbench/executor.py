"""Independent jobs (teachers, grid cells) run by one of three executors that yield the same results:

- `local`: one after another in this process;
- `processes`: a pool of spawned processes on this machine, splitting its cores between them;
- `ray`: one Ray task per job, on a local Ray instance or an existing cluster (`$RAY_ADDRESS`), each asking
  for its CPUs, and a GPU when the jobs run on CUDA, so that Ray packs them onto the nodes.

A job writes what it produces (a record, a cached teacher) to paths it carries and returns only a small
status, so on a cluster those paths must be on a filesystem that every node sees.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import torch
from tqdm.auto import tqdm

from kdbench.allocator import keep_freed_memory
from kdbench.errors import KdbenchError, check_choice

EXECUTORS = ("local", "processes", "ray")
Job = tuple
Fn = Callable[[Job], Any]


def resolve_executor(executor: str | None, workers: int | None) -> str:
    """The executor to use: the one named, else `processes` when more than one worker is asked for (what
    `workers > 1` meant before executors had names), else `local`. Checked up front, Ray's presence included."""
    if workers is not None and workers < 0:
        raise KdbenchError(f"workers must be 0 or more, got {workers}")
    if executor is None:
        return "processes" if (workers or 1) > 1 else "local"
    check_choice("executor", executor, EXECUTORS)
    if executor == "local" and (workers or 1) > 1:
        raise KdbenchError(
            f"workers={workers} needs the processes or ray executor; local runs one job at a time"
        )
    if executor == "ray":
        _import_ray()  # a missing extra fails before any work, even with nothing left to run
    return executor


@contextmanager
def executor_session() -> Iterator[None]:
    """Around several `run_jobs` calls (a grid's teachers, then its cells): a Ray connection that they opened is
    kept between them and closed at the end, one opened before is left open. (A notebook kernel that exits with
    Ray still connected is killed while Ray shuts down, and Ray prints a stack dump.)"""
    was_connected = _ray_connected()
    try:
        yield
    finally:
        if not was_connected and _ray_connected():
            sys.modules["ray"].shutdown()


def _ray_connected() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def run_jobs(
    fn: Fn,
    jobs: list[Job],
    workers: int | None = None,
    desc: str = "",
    progress: bool = True,
    *,
    executor: str | None = None,
    device: str = "cpu",
    threads: int | None = None,
    label: Callable[[Job], str] | None = None,
) -> Iterator[Any]:
    """Yield `fn(job)` for every job, in completion order, with a progress bar (jobs done / total, and the time
    left from the mean time of the jobs done so far; `label(job)` names the job running, with the local executor).

    `fn` must be a module-level function: the processes and ray executors send it by name. `workers`: the pool
    size for processes (default one per core), the most tasks in flight for ray (default no cap: Ray schedules
    them all). `threads`: torch threads per job (default: local keeps the process's, processes split the cores,
    ray one per task, which is also the CPUs each task asks for). `device` is the jobs' device: on Ray, a CUDA
    job asks for one GPU. The executor is checked now, not when the first result is wanted.
    """
    name = resolve_executor(executor, workers)
    if threads is not None and threads < 1:
        raise KdbenchError(f"threads must be at least 1, got {threads}")
    runner = {"local": _local, "processes": _processes, "ray": _ray}[name]
    labels = (
        [label(job) for job in jobs] if label and name == "local" else []
    )  # only local runs them in order
    return _with_bar(runner(fn, jobs, workers, threads, device), len(jobs), desc, progress, labels)


def _with_bar(
    results: Iterator[Any], total: int, desc: str, progress: bool, labels: list[str]
) -> Iterator[Any]:
    """`labels[i]`: the job running while i are done. smoothing=0: the ETA is the mean over the jobs done, not a
    recent window (one slow method among fast ones would swing a windowed estimate)."""
    with tqdm(total=total, desc=desc, disable=not progress or not total, smoothing=0) as bar:
        results = iter(results)
        while True:
            if bar.n < len(labels):
                bar.set_postfix_str(labels[bar.n])
            try:
                result = next(results)
            except StopIteration:
                return
            bar.update()
            yield result


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _local(fn: Fn, jobs: list[Job], workers: int | None, threads: int | None, device: str) -> Iterator[Any]:
    keep_freed_memory()
    with _torch_threads(threads):
        for job in jobs:
            yield fn(job)


def _pool_worker_init(threads: int) -> None:
    """A pool worker's start: its torch threads, and Ctrl-C left to the parent, which stops the pool (a worker
    that took it would print its own traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    keep_freed_memory()
    torch.set_num_threads(threads)


def _processes(
    fn: Fn, jobs: list[Job], workers: int | None, threads: int | None, device: str
) -> Iterator[Any]:
    pool_size = workers or os.cpu_count() or 1
    if min(pool_size, len(jobs)) <= 1:
        yield from _local(fn, jobs, workers, threads, device)
        return
    threads = threads or max(1, (os.cpu_count() or 1) // pool_size)
    with mp.get_context("spawn").Pool(min(pool_size, len(jobs)), _pool_worker_init, (threads,)) as pool:
        yield from pool.imap_unordered(fn, jobs)
        pool.close()  # let the workers exit on their own: terminating them leaks their semaphores
        pool.join()


# ---- ray -------------------------------------------------------------------------------------------------------
def _import_ray() -> ModuleType:
    try:
        import ray
    except ImportError:
        raise KdbenchError("the ray executor needs Ray: pip install -e '.[ray]'") from None
    return ray


def _init_ray(ray: ModuleType) -> None:
    """Join the cluster at $RAY_ADDRESS (`auto`, `ray://host:10001`), else start a local instance; a Ray the
    caller already initialised (e.g. with its own runtime_env) is used as it is. KDBENCH_* settings
    (the data folder above all) travel to the workers."""
    if ray.is_initialized():
        return
    forwarded = {k: v for k, v in os.environ.items() if k.startswith("KDBENCH_")}
    ray.init(
        address=os.environ.get("RAY_ADDRESS") or None,
        ignore_reinit_error=True,
        runtime_env={"env_vars": forwarded} if forwarded else None,
    )


def _task_resources(ray: ModuleType, device: str, threads: int) -> dict[str, float]:
    """One GPU per task when the jobs run on CUDA (`auto`: when the cluster has GPUs), and `threads` CPUs;
    a request that no node of the cluster can meet is an error here rather than a task that waits forever."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    has_gpus = any(res.get("GPU", 0) >= 1 for res in nodes)
    gpus = 1 if device.startswith("cuda") or (device == "auto" and has_gpus) else 0
    if not any(res.get("CPU", 0) >= threads and res.get("GPU", 0) >= gpus for res in nodes):
        largest = max((int(res.get("CPU", 0)) for res in nodes), default=0)
        need = f"{threads} CPUs" + (" and a GPU" if gpus else "")
        raise KdbenchError(
            f"no node of the Ray cluster has {need} (largest: {largest} CPUs, GPUs: {has_gpus}); "
            "lower --threads or pick another --device"
        )
    return {"num_cpus": threads, "num_gpus": gpus}


def _threaded_call(fn: Fn, threads: int, job: Job) -> Any:
    """A Ray task: as many torch threads as CPUs reserved, the allocator kdbench runs with, then the job."""
    keep_freed_memory()
    torch.set_num_threads(threads)
    return fn(job)


def _result(ray: ModuleType, ref: Any) -> Any:
    """The task's result; a job's own exception is raised as itself (a KdbenchError stays one line)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, Exception):
            raise cause from exc
        raise


def _ray(fn: Fn, jobs: list[Job], workers: int | None, threads: int | None, device: str) -> Iterator[Any]:
    if not jobs:
        return
    ray = _import_ray()
    _init_ray(ray)
    threads = threads or 1
    task = ray.remote(_threaded_call).options(**_task_resources(ray, device, threads))
    waiting = deque(jobs)
    pending = [
        task.remote(fn, threads, waiting.popleft()) for _ in range(min(workers or len(jobs), len(jobs)))
    ]
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            result = _result(ray, done[0])
            if waiting:
                pending.append(task.remote(fn, threads, waiting.popleft()))
            yield result
    finally:
        for ref in pending:  # an error, or a caller that stopped reading: no orphan tasks keep running
            ray.cancel(ref)
