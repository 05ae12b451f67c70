"""One JSON record per run, written atomically; `load` turns a folder of them into a pandas DataFrame."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from kdbench.errors import KdbenchError

SCHEMA_VERSION = 1
RECORDS_DIR = "records"


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, flush it to disk, then rename: readers never see half."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise KdbenchError(f"cannot write to {path.parent}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def record_path(results_dir: str | Path, cell_id: str) -> Path:
    return Path(results_dir) / RECORDS_DIR / f"{cell_id}.json"


def write_record(record: dict[str, Any], results_dir: str | Path) -> Path:
    return atomic_write_text(record_path(results_dir, record["cell_id"]), json.dumps(record, indent=1, sort_keys=True))


def read_record(path: str | Path) -> dict[str, Any]:
    with open(path) as fh:
        return json.load(fh)


def load(path: str | Path) -> pd.DataFrame:
    """Every record under `path` (a results folder, its records/ folder, or one .json file) as one row each.

    Nested fields are flattened with dots (`env.torch`, `config.hparams.temperature`).
    """
    path = Path(path)
    if path.is_file():
        files = [path]
    else:
        folder = path / RECORDS_DIR if (path / RECORDS_DIR).is_dir() else path
        files = sorted(folder.glob("*.json"))
    records = [read_record(f) for f in files]
    if not records:
        return pd.DataFrame()
    return pd.json_normalize(records)
