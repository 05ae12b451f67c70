"""The teacher cache: a trained teacher is stored under a key of everything that determines it, and reused by
every method and cell that asks for the same teacher.

Training a teacher is claimed with a lock file (`kdbench.locks`), so concurrent runs never train one twice.
A checkpoint is trusted only when its SHA-256 sidecar (written after the checkpoint, as the commit marker)
matches and it loads strictly; anything else — truncated, corrupted, missing its sidecar — is retrained.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from kdbench.errors import KdbenchWarning
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
        return f"{self.dataset}-{self.arch}-e{self.epochs}-s{self.seed}-{self.digest()}.pt"


@dataclass
class CachedTeacher:
    model: nn.Module
    meta: dict[str, Any]  # top1, test_logits, train_time_s, ...
    from_cache: bool


class TeacherCache:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

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
            meta = self._load(key, model)
            if meta is not None:
                return CachedTeacher(model, meta, from_cache=True)
            meta = train(model)
            self._store(key, model, meta)
        return CachedTeacher(model, meta, from_cache=False)

    def _load(self, key: TeacherKey, model: nn.Module) -> dict[str, Any] | None:
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
            warnings.warn(f"teacher checkpoint {path} is unusable ({reason}); retraining it", KdbenchWarning,
                          stacklevel=2)
            return None

    def _store(self, key: TeacherKey, model: nn.Module, meta: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save({"state_dict": state, "meta": meta, "key": asdict(key)}, buffer)
        data = buffer.getvalue()
        path = self.path(key)
        atomic_write_bytes(path, data)
        atomic_write_text(path.with_suffix(".sha256"), hashlib.sha256(data).hexdigest())
