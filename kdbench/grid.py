"""Running a profile's grid (`kdbench.profiles` defines the profiles and the cells they expand to): resumable
execution.

A cell whose record exists is skipped, so a killed run resumes where it stopped; a run claims a cell with a lock
before running it, so runs sharing a results folder never run one twice. Teachers are trained first, once per key,
and shared by every cell through the teacher cache.
"""

from __future__ import annotations

import os
import traceback
import warnings
from pathlib import Path
from typing import Any

import yaml

from kdbench.env import resolve_device
from kdbench.errors import KdbenchError, KdbenchWarning
from kdbench.executor import executor_session, run_jobs
from kdbench.fastpaths import check_memory_format
from kdbench.locks import Claim
from kdbench.methods import get_method
from kdbench.profiles import EXPERIMENTS, PROFILES, Profile, all_cells, get_profile, profile_summary
from kdbench.record import Record, is_stale
from kdbench.results import atomic_write_text, read_record, record_path, write_record
from kdbench.run_config import RunConfig, check_folders, default_cache_dir
from kdbench.runner import run
from kdbench.teacher_training import train_teachers


# ---- execution -------------------------------------------------------------------------------------------------
def results_root() -> Path:
    """$KDBENCH_RESULTS, else the checkout's results/ (so notebooks opened from notebooks/ find it), else ./results."""
    if os.environ.get("KDBENCH_RESULTS"):
        return Path(os.environ["KDBENCH_RESULTS"])
    checkout = Path(__file__).resolve().parents[1]
    return checkout / "results" if (checkout / "run_all.py").exists() else Path("results")


def results_dir_for(profile: str, results_dir: str | Path | None = None) -> Path:
    """`results_dir` if given, else the profile's folder under results/ (a built-in profile may name another's)."""
    if results_dir:
        return Path(results_dir)
    name = Path(profile).stem
    known = {**PROFILES, **EXPERIMENTS}.get(profile)
    return results_root() / (known.results or name if known is not None else name)


def record_status(cfg: RunConfig, results_dir: str | Path) -> str | None:
    """The cell's record status ("ok", "failed"), or None when it has no readable record."""
    path = record_path(results_dir, cfg.cell_id())
    if not path.exists():
        return None
    try:
        return read_record(path).get("status")
    except (OSError, ValueError):
        return None  # unreadable: run it again (the atomic writer never leaves one, but a user might)


def is_finished(
    cfg: RunConfig, results_dir: str | Path, retry_failed: bool = False, rerun_stale: bool = False
) -> bool:
    """Whether the cell has a record; `retry_failed`: a failed one does not count, so the cell runs again;
    `rerun_stale`: nor does one written by other code than the current (`kdbench.record.is_stale`)."""
    finished = record_status(cfg, results_dir) in (("ok",) if retry_failed else ("ok", "failed"))
    return finished and not (rerun_stale and is_stale_cell(cfg, results_dir))


def is_stale_cell(cfg: RunConfig, results_dir: str | Path) -> bool:
    """Whether the cell's record was written by other code than the current, or cannot be read."""
    try:
        return is_stale(read_record(record_path(results_dir, cfg.cell_id())))
    except (OSError, ValueError):
        return True


def reuse_records(cells: list[RunConfig], results_dir: str | Path, sources: list[Path]) -> int:
    """Copy into `results_dir` the records of `cells` that a source folder holds finished (ok) and current (not
    stale), so a cell two profiles share runs once; a record's content addresses its cell, so the copy is exactly
    the record this folder would get. Returns how many were copied."""
    copied = 0
    for cfg in cells:
        if record_path(results_dir, cfg.cell_id()).exists():
            continue
        for folder in sources:
            source = record_path(folder, cfg.cell_id())
            record = read_record(source) if source.exists() else None
            if record is not None and record.get("status") == "ok" and not is_stale(record):
                write_record(record, results_dir)
                copied += 1
                break
    return copied


def _failed_record(cfg: RunConfig, exc: BaseException, device: str) -> dict[str, Any]:
    return Record.of_cell(
        cfg,
        "failed",
        get_method(cfg.method).info,
        resolve_device(device),
        error=f"{type(exc).__name__}: {exc}",
        failed_step=getattr(exc, "step", None),
        traceback=traceback.format_exc(limit=8),
    ).to_dict()


def run_cell(
    cfg: RunConfig,
    results_dir: str,
    cache_dir: str,
    retry_failed: bool = False,
    rerun_stale: bool = False,
    **how: Any,
) -> str:
    """Run one cell unless another run has claimed or finished it ("busy" / "skipped"); a failure inside the
    method is recorded as a failed cell instead of stopping the grid. `how`: `kdbench.runner.run`'s options of how
    a cell runs (device, share_outputs, memory_format, checkpoint_every, compile_models, cudnn_benchmark)."""
    claim = cell_claim(results_dir, cfg)
    if not claim.try_acquire():
        return "busy"
    try:
        if is_finished(cfg, results_dir, retry_failed, rerun_stale):  # finished by another run meanwhile
            return "skipped"
        run(cfg, results_dir=results_dir, cache_dir=cache_dir, progress=False, **how)
        return "ok"
    except KdbenchError:
        raise
    except Exception as exc:  # a diverged loss or a bug in one method must not take the grid down
        write_record(_failed_record(cfg, exc, how.get("device", "auto")), results_dir)
        return "failed"
    finally:
        claim.release()


def cell_claim(results_dir: str | Path, cfg: RunConfig) -> Claim:
    """The lock a run holds on a cell while it runs it, beside the records (so every run sharing them sees it)."""
    return Claim(Path(results_dir) / "locks" / f"{cfg.cell_id()}.lock")


def _cell_label(job: tuple) -> str:
    """The cell a grid job runs, for the progress bar: method, pair and seed."""
    cfg = job[0]
    method = f"{cfg.method}/{cfg.variant}" if cfg.variant else cfg.method
    return f"{method} {'+'.join(cfg.teachers) or 'no teacher'} -> {cfg.student} seed {cfg.seed}"


def _run_cell_job(job: tuple[RunConfig, str, str, bool, bool, dict[str, Any]]) -> str:
    cfg, results_dir, cache_dir, retry_failed, rerun_stale, how = job
    return run_cell(cfg, results_dir, cache_dir, retry_failed, rerun_stale, **how)


def run_grid(
    profile: Profile | str,
    results_dir: str | Path | None = None,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
    cells: list[RunConfig] | None = None,
    *,
    executor: str | None = None,
    threads: int | None = None,
    share_outputs: bool = True,
    retry_failed: bool = False,
    rerun_stale: bool = False,
    memory_format: str = "contiguous",
    compile_models: bool = False,
    cudnn_benchmark: bool = False,
    tensorboard: str | Path | None = None,
) -> dict[str, int]:
    """Run every unfinished cell of the profile (or the given cells); returns counts of ok/failed/skipped, and of
    the finished cells found stale (written by other code than the current, `kdbench.record.is_stale`).
    `retry_failed`: cells whose record says they failed run again. `rerun_stale`: stale cells run again; without
    it they are kept, with a warning.
    `executor` (local, processes, ray), `workers`, `threads`: as `kdbench.executor.run_jobs`. The folders are
    made absolute, as a Ray worker's working directory is not this one. `share_outputs`: cells that replay the
    same batches share their teachers' outputs through the cache folder (`kdbench.teacher_outputs`).
    `memory_format`, `compile_models`, `cudnn_benchmark`, `tensorboard`: as `kdbench.runner.run`."""
    profile = get_profile(profile) if isinstance(profile, str) else profile
    results_dir = str(results_dir_for(profile.name, results_dir).resolve())
    cache_dir = str(Path(cache_dir or default_cache_dir()).resolve())
    check_folders(results_dir, cache_dir)
    check_memory_format(memory_format)  # before any teacher is trained, not at the first cell
    cells = all_cells(profile) if cells is None else cells
    reused = reuse_records(cells, results_dir, [results_dir_for(name) for name in profile.reuses])
    finished = [is_finished(c, results_dir, retry_failed) for c in cells]
    stale = [done and is_stale_cell(c, results_dir) for c, done in zip(cells, finished, strict=True)]
    todo = [
        c for c, done, old in zip(cells, finished, stale, strict=True) if not done or (rerun_stale and old)
    ]
    counts = {
        "ok": 0,
        "failed": 0,
        "busy": 0,
        "skipped": len(cells) - len(todo),
        "stale": sum(stale),
        "reused": reused,
    }
    if counts["stale"] and not rerun_stale:
        warnings.warn(
            KdbenchWarning(
                f"{counts['stale']} finished cells of {results_dir} were run by other code than "
                "the current; kept (run them again with --rerun-stale)"
            ),
            stacklevel=2,
        )
    with executor_session():  # one Ray connection for the teachers and the cells
        train_teachers(
            todo,
            device=device,
            cache_dir=cache_dir,
            workers=workers,
            progress=progress,
            executor=executor,
            threads=threads,
        )
        how = {
            "device": device,
            "share_outputs": share_outputs,
            "memory_format": memory_format,
            "checkpoint_every": profile.checkpoint_every,
            "compile_models": compile_models,
            "cudnn_benchmark": cudnn_benchmark,
            "tensorboard": str(Path(tensorboard).resolve()) if tensorboard else None,
        }
        jobs = [(c, results_dir, cache_dir, retry_failed, rerun_stale, how) for c in todo]
        for status in run_jobs(
            _run_cell_job,
            jobs,
            workers,
            f"grid {profile.name}",
            progress,
            executor=executor,
            device=device,
            threads=threads,
            label=_cell_label,
        ):
            counts[status] += 1
    summary = Path(results_dir) / profile.own_file("grid", ".yaml")
    atomic_write_text(summary, yaml.safe_dump(profile_summary(profile), sort_keys=False))
    return counts
