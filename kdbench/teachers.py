"""The teacher cache: a trained teacher is stored under a key of everything that determines it, and reused by
every method and cell that asks for the same teacher.

Training a teacher is claimed with a lock file (`kdbench.locks`), so concurrent runs never train one twice.
A checkpoint is trusted only when its SHA-256 sidecar (written after the checkpoint, as the commit marker)
matches and it loads strictly; anything else — truncated, corrupted, missing its sidecar — is retrained.

Shipped teachers: the cpu profile's teachers come inside the package (`kdbench/shipped_teachers`, safetensors with
a JSON sidecar holding the key, the SHA-256, and the command, code and machine that trained them), as RepDistiller
and mdistiller ship theirs, so a cold start does not spend its budget on teachers. A cache miss looks there before
training; a shipped checkpoint whose SHA-256 or key does not match is ignored with a warning. To reproduce them,
`--retrain-teachers` (the environment variable `KDBENCH_RETRAIN_TEACHERS=1`, so worker processes see it too)
trains every teacher whose cached copy came from the package, and `kdbench teachers ship` exports cached teachers.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from kdbench.errors import KdbenchError, KdbenchWarning
from kdbench.locks import Claim
from kdbench.results import atomic_write_bytes, atomic_write_text


@dataclass(frozen=True)
class TeacherKey:
    """Everything that determines a trained teacher's weights."""

    dataset: str
    arch: str
    recipe: str  # JSON of the full recipe, so a changed recipe is a different teacher
    epochs: int
    train_subset: int | None
    val_size: int
    seed: int
    label_noise: float = 0.0
    imbalance_ratio: float = 1.0
    test_subset: int | None = None  # the cached test logits are for this test set

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:20]

    def filename(self) -> str:
        dataset = self.dataset.replace(":", "-")  # synthetic:cifar100: no colon in a file name (Windows)
        return f"{dataset}-{self.arch}-e{self.epochs}-s{self.seed}-{self.digest()}.pt"


@dataclass
class CachedTeacher:
    model: nn.Module
    meta: dict[str, Any]  # top1, test_logits, train_time_s, ...
    from_cache: bool


SHIPPED_DIR = Path(__file__).resolve().parent / "shipped_teachers"
RETRAIN_ENV = "KDBENCH_RETRAIN_TEACHERS"
SHIPPED_SOURCE = "shipped"  # meta["source"] of a teacher loaded from the package
LOGITS_TENSOR = (
    "meta.test_logits"  # the teacher's test logits travel in the safetensors file beside its weights
)


def retrain_requested() -> bool:
    return os.environ.get(RETRAIN_ENV, "") not in ("", "0")


class TeacherCache:
    def __init__(
        self, root: str | Path, shipped: Path | None = SHIPPED_DIR, retrain: bool | None = None
    ) -> None:
        """`shipped`: where packaged checkpoints are looked up on a miss (None: never); `retrain` (default: the
        KDBENCH_RETRAIN_TEACHERS variable): train afresh every teacher whose cached copy came from the package."""
        self.root = Path(root)
        self.retrain = retrain_requested() if retrain is None else retrain
        self.shipped = None if self.retrain else shipped

    def path(self, key: TeacherKey) -> Path:
        return self.root / "teachers" / key.filename()

    def get(
        self,
        key: TeacherKey,
        build: Callable[[], nn.Module],
        train: Callable[[nn.Module], dict[str, Any]],
    ) -> CachedTeacher:
        """Load the teacher for `key`, or build and train it with `train(model) -> meta` and store it.

        The key is claimed while this happens, so concurrent runs train each teacher once: a run that finds the
        teacher being trained waits for it and loads the result."""
        model = build()
        with Claim(self.path(key).with_suffix(".lock")):
            meta = self.load(key, model)
            if meta is not None and self.retrain and meta.get("source") == SHIPPED_SOURCE:
                meta = None
            if meta is None and self.shipped is not None:
                meta = load_shipped(self.shipped, key, model)
                if meta is not None:
                    self._store(key, model, meta)
            if meta is not None:
                return CachedTeacher(model, meta, from_cache=True)
            meta = train(model)
            self._store(key, model, meta)
        return CachedTeacher(model, meta, from_cache=False)

    def load(self, key: TeacherKey, model: nn.Module) -> dict[str, Any] | None:
        """The cached teacher for `key` loaded into `model` and its meta; None when absent or failing its checks."""
        path = self.path(key)
        sidecar = path.with_suffix(".sha256")
        if not path.exists() and not sidecar.exists():
            return None
        try:
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != sidecar.read_text().strip():
                raise ValueError("its SHA-256 does not match its .sha256 sidecar: truncated or corrupted")
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            model.load_state_dict(payload["state_dict"])
            return payload["meta"]
        except Exception as exc:  # truncated, corrupt, half-written: never use it
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]  # torch's errors run to pages
            warnings.warn(
                f"teacher checkpoint {path} is unusable ({reason}); retraining it",
                KdbenchWarning,
                stacklevel=2,
            )
            return None

    def _store(self, key: TeacherKey, model: nn.Module, meta: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save({"state_dict": state, "meta": meta, "key": asdict(key)}, buffer)
        data = buffer.getvalue()
        path = self.path(key)
        atomic_write_bytes(path, data)
        atomic_write_text(path.with_suffix(".sha256"), hashlib.sha256(data).hexdigest())


def shipped_paths(folder: Path, key: TeacherKey) -> tuple[Path, Path]:
    stem = Path(key.filename()).stem
    return folder / f"{stem}.safetensors", folder / f"{stem}.json"


def load_shipped(folder: Path, key: TeacherKey, model: nn.Module) -> dict[str, Any] | None:
    """The packaged teacher for `key` loaded into `model` and its meta, or None when none is shipped (or it fails
    its checks: then with a warning, and the teacher is trained)."""
    weights, sidecar = shipped_paths(folder, key)
    if not weights.exists():
        return None
    try:
        info = json.loads(sidecar.read_text())
        data = weights.read_bytes()
        if hashlib.sha256(data).hexdigest() != info["sha256"]:
            raise ValueError("its SHA-256 does not match its sidecar")
        if info["key"] != asdict(key):
            raise ValueError("its sidecar's key is not the requested teacher's")
        tensors = load_safetensors(data)
        logits = tensors.pop(LOGITS_TENSOR)
        model.load_state_dict(tensors, strict=True)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        warnings.warn(
            f"shipped teacher {weights.name} is unusable ({reason}); training it",
            KdbenchWarning,
            stacklevel=2,
        )
        return None
    return {**info["meta"], "test_logits": logits, "source": SHIPPED_SOURCE}


def ship(
    cache: TeacherCache, key: TeacherKey, model: nn.Module, folder: Path, provenance: dict[str, Any]
) -> Path:
    """Export the cached teacher for `key` (loaded into `model`, an instance of its architecture) to `folder` as
    safetensors plus a JSON sidecar: its key, SHA-256, meta and `provenance` (the command, code and machine that
    trained it). Refuses a teacher that is not cached or that itself came from the package."""
    meta = cache.load(key, model)
    if meta is None:
        raise KdbenchError(f"teacher {key.filename()} is not in the cache at {cache.root}; train it first")
    if meta.get("source") == SHIPPED_SOURCE:
        raise KdbenchError(
            f"teacher {key.filename()} came from the package; run with --retrain-teachers first"
        )
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors[LOGITS_TENSOR] = meta["test_logits"].contiguous()
    data = save_safetensors(tensors)
    weights, sidecar = shipped_paths(folder, key)
    scalars = {k: v for k, v in meta.items() if k != "test_logits"}
    info = {
        "key": asdict(key),
        "sha256": hashlib.sha256(data).hexdigest(),
        "meta": scalars,
        "provenance": provenance,
    }
    atomic_write_bytes(weights, data)
    atomic_write_text(sidecar, json.dumps(info, indent=1, sort_keys=True) + "\n")
    return weights
