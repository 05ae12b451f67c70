"""One JSON record per run, written atomically; `load` turns a folder of them into a pandas DataFrame."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from kdbench.errors import KdbenchError
from kdbench.record import is_stale

RECORDS_DIR = "records"


def _temp_file(folder: Path, prefix: str) -> tuple[int, str]:
    """A new temporary file in `folder` (made if missing); a folder that cannot take one is a user error."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(dir=folder, prefix=prefix, suffix=".tmp")
    except OSError as exc:
        raise KdbenchError(f"cannot write to {folder}: {exc.strerror}") from None


def ensure_writable(folder: str | Path, hint: str) -> Path:
    """Make `folder` and write (then remove) a probe file in it, so that a results or cache folder that cannot
    be written stops a run before its training, not after. `hint` says how to choose another folder."""
    folder = Path(folder)
    try:
        fd, probe = _temp_file(folder, ".kdbench-probe.")
    except KdbenchError as exc:
        raise KdbenchError(f"{exc}; {hint}") from None
    os.close(fd)
    os.unlink(probe)
    return folder


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp makes files only their owner can read; results are shared (a team's results folder, a cluster's
# scratch), so a finished file gets the mode any other new file would get
FILE_MODE = 0o666 & ~_umask()


def _write_temp(path: Path, data: bytes) -> str:
    """A temporary file beside `path` holding `data`, flushed to disk, with the mode of any new file."""
    fd, tmp = _temp_file(path.parent, f".{path.name}.")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, flush it to disk, then rename: readers never see half."""
    path = Path(path)
    tmp = _write_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_once(path: str | Path, data: bytes) -> bool:
    """As `atomic_write_bytes`, but the first writer wins: False, and nothing written, when `path` exists.
    Writers of one value racing each other then all read back the same one. The temporary file is linked into
    place (which fails if the name is taken); where the filesystem has no hard links it is renamed instead."""
    path = Path(path)
    tmp = _write_temp(path, data)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:
        os.replace(tmp, path)
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def record_path(results_dir: str | Path, cell_id: str) -> Path:
    return Path(results_dir) / RECORDS_DIR / f"{cell_id}.json"


def write_record(record: dict[str, Any], results_dir: str | Path) -> Path:
    return atomic_write_text(
        record_path(results_dir, record["cell_id"]), json.dumps(record, indent=1, sort_keys=True)
    )


def read_record(path: str | Path) -> dict[str, Any]:
    """One record; a file that is not one (a hand edit, a copy cut short) is an error naming it."""
    try:
        record = json.loads(Path(path).read_bytes())
    except ValueError as exc:
        raise KdbenchError(
            f"record {path} is not valid JSON ({exc}); delete it, and its cell runs again"
        ) from None
    if not isinstance(record, dict):
        raise KdbenchError(
            f"record {path} holds no record (a JSON object); delete it, and its cell runs again"
        )
    return record


# Fields that differ between two runs of the same cell on the same machine: wall-clock measurements, where and
# when it ran, and whether shared work (a teacher, cached teacher outputs) was found or done by this run.
# Latencies are measured once per deployable (kdbench.deployables), but in each results folder afresh.
VOLATILE_FIELDS = (
    "train_time_s",
    "train_samples_per_s",
    "peak_memory_bytes",
    "latency_ms_b1",
    "latency_ms_b1_iqr",
    "latency_ms_b256",
    "latency_ms_b256_iqr",
    "teacher_train_time_s",
    "teacher_latency_ms_b1",
    "teacher_latency_ms_b1_iqr",
    "teacher_latency_ms_b256",
    "teacher_latency_ms_b256_iqr",
    "teachers_from_cache",
    "finished_at",
    "env",
    "path",
)
VOLATILE_SUFFIX = "_time_s"  # in `extras` too: search, synthesis and assistant times


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """The record without its volatile fields: two deterministic runs of one cell give equal results."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: strip(v)
                for k, v in value.items()
                if k not in VOLATILE_FIELDS
                and not k.endswith(VOLATILE_SUFFIX)
                and k != "teacher_output_cache"
            }
        return value

    return strip(record)


def first_difference(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """The first field the old record wrote that the new one writes otherwise (timings, environment and the code
    version aside): whether two runs of one cell, by two code versions or two settings that must not change a
    number, gave the same result; None when they did."""
    a, b = comparable(old), comparable(new)
    for key in sorted(a):
        if key != "code_version" and json.dumps(a[key], sort_keys=True) != json.dumps(
            b.get(key), sort_keys=True
        ):
            return key
    return None


def load(path: str | Path, current_only: bool = False) -> pd.DataFrame:
    """Every record under `path` (a results folder, its records/ folder, or one .json file) as one row each.

    Nested fields are flattened with dots (`env.torch`, `config.hparams.temperature`). The `stale` column says
    which records were written by other code than the current (`kdbench.record.is_stale`); `current_only`
    leaves those out. A record that cannot be read is an error naming it.
    """
    path = Path(path)
    if path.is_file():
        files = [path]
    else:
        folder = path / RECORDS_DIR if (path / RECORDS_DIR).is_dir() else path
        files = sorted(folder.glob("*.json"))
    records = [read_record(f) for f in files]
    stale = [is_stale(r) for r in records]
    if current_only:
        records = [r for r, old in zip(records, stale, strict=True) if not old]
        stale = [False] * len(records)
    if not records:
        return pd.DataFrame({"stale": pd.Series(dtype=bool)})
    frame = pd.json_normalize(records)
    frame["stale"] = stale
    return frame
