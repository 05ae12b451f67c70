"""The teacher cache: a trained teacher is stored under a key of everything that determines it, and reused by
every method and cell that asks for the same teacher.

Training a teacher is claimed with a lock file (`kdbench.locks`), so concurrent runs never train one twice.
A checkpoint (safetensors weights and a JSON sidecar, the format the package ships: `checkpoint_paths`) is
trusted only when its sidecar's SHA-256 (the sidecar is written after the weights, as the commit marker)
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
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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

    def stem(self) -> str:
        """The checkpoint's file name without its suffix."""
        dataset = self.dataset.replace(":", "-")  # synthetic:cifar100: no colon in a file name (Windows)
        return f"{dataset}-{self.arch}-e{self.epochs}-s{self.seed}-{self.digest()}"


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

    def files(self, key: TeacherKey) -> tuple[Path, Path]:
        """The teacher's weights and sidecar in this cache (`checkpoint_paths`)."""
        return checkpoint_paths(self.root / "teachers", key)

    def path(self, key: TeacherKey) -> Path:
        return self.files(key)[0]

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
        try:
            return read_checkpoint(self.root / "teachers", key, model)
        except Exception as exc:  # truncated, corrupt, half-written: never use it
            warnings.warn(
                f"teacher checkpoint {self.path(key)} is unusable ({_reason(exc)}); retraining it",
                KdbenchWarning,
                stacklevel=2,
            )
            return None

    def _store(self, key: TeacherKey, model: nn.Module, meta: dict[str, Any]) -> None:
        write_checkpoint(self.root / "teachers", key, model, meta)


def checkpoint_paths(folder: Path, key: TeacherKey) -> tuple[Path, Path]:
    """A teacher checkpoint's two files: safetensors weights (its test logits beside them), and a JSON sidecar
    with its key, the weights' SHA-256 and its meta, written last: the commit marker. The cache and the package
    use the same format."""
    return folder / f"{key.stem()}.safetensors", folder / f"{key.stem()}.json"


def write_checkpoint(
    folder: Path,
    key: TeacherKey,
    model: nn.Module,
    meta: dict[str, Any],
    provenance: dict[str, Any] | None = None,
) -> Path:
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors[LOGITS_TENSOR] = meta["test_logits"].detach().cpu().contiguous()
    data = save_safetensors(tensors)
    info = {
        "key": asdict(key),
        "sha256": hashlib.sha256(data).hexdigest(),
        "meta": {k: v for k, v in meta.items() if k != "test_logits"},
        **({"provenance": provenance} if provenance is not None else {}),
    }
    weights, sidecar = checkpoint_paths(folder, key)
    atomic_write_bytes(weights, data)
    atomic_write_text(sidecar, json.dumps(info, indent=1, sort_keys=True) + "\n")
    return weights


def read_checkpoint(folder: Path, key: TeacherKey, model: nn.Module) -> dict[str, Any] | None:
    """The teacher stored in `folder` for `key`, loaded into `model` (strictly), and its meta; None when there is
    none. A checkpoint that fails a check (its SHA-256, its key, its tensors) raises."""
    weights, sidecar = checkpoint_paths(folder, key)
    if not weights.exists() and not sidecar.exists():
        return None
    info = json.loads(sidecar.read_text())
    data = weights.read_bytes()
    if hashlib.sha256(data).hexdigest() != info["sha256"]:
        raise ValueError("its SHA-256 does not match its sidecar: truncated or corrupted")
    if info["key"] != asdict(key):
        raise ValueError("its sidecar's key is not the requested teacher's")
    tensors = load_safetensors(data)
    logits = tensors.pop(LOGITS_TENSOR)
    model.load_state_dict(tensors, strict=True)
    return {**info["meta"], "test_logits": logits}


def _reason(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]  # torch's errors run to pages


def load_shipped(folder: Path, key: TeacherKey, model: nn.Module) -> dict[str, Any] | None:
    """The packaged teacher for `key` loaded into `model` and its meta, or None when none is shipped (or it fails
    its checks: then with a warning, and the teacher is trained)."""
    try:
        meta = read_checkpoint(folder, key, model)
    except Exception as exc:
        warnings.warn(
            f"shipped teacher {checkpoint_paths(folder, key)[0].name} is unusable ({_reason(exc)}); training it",
            KdbenchWarning,
            stacklevel=2,
        )
        return None
    return None if meta is None else {**meta, "source": SHIPPED_SOURCE}


def ship(
    cache: TeacherCache, key: TeacherKey, model: nn.Module, folder: Path, provenance: dict[str, Any]
) -> Path:
    """Export the cached teacher for `key` (loaded into `model`, an instance of its architecture) to `folder`, its
    sidecar with `provenance` (the command, code and machine that trained it). Refuses a teacher that is not
    cached or that itself came from the package."""
    meta = cache.load(key, model)
    if meta is None:
        raise KdbenchError(f"teacher {key.stem()} is not in the cache at {cache.root}; train it first")
    if meta.get("source") == SHIPPED_SOURCE:
        raise KdbenchError(f"teacher {key.stem()} came from the package; run with --retrain-teachers first")
    return write_checkpoint(folder, key, model, meta, provenance)
