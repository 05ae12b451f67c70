"""Teacher outputs computed once per augmented view and shared by every method and cell that replays it.

In a grid, many cells ask the same frozen teacher about the same batches: the training stream's augmentation is a
function of (samples, seed, epoch) only (`kdbench.data.loader.BatchStream`), so every method with the same seed sees
the same augmented pixels. The cache stores the teacher's outputs under the batch's *view* — (stream digest, epoch,
batch number) — never under sample indices: torchdistill's index-keyed cache paired a sample's stored output with
whatever augmented view the student saw later, which is a different image every epoch. The stream digest covers
everything that determines the pixels (images, samples, seed, batch size, augmentation, normalisation, device), and
the teacher's fingerprint covers its weights and the arithmetic (device, torch version, threads), so a cached output
is bit for bit what a fresh forward pass would give. As a cheap guard, a lookup also compares the stored sample
indices with the batch's: a mismatch is recomputed, never reused.

What is kept: logits always; the pooled embedding and the stage features when a method asks for features, stages
only while one epoch's worth fits `feature_budget_bytes` (above it they are recomputed per request, which is still
correct). Served tensors are the stored ones, not copies: no method writes into teacher outputs, and an entry whose
tensors were written to anyway (their version counters moved) is recomputed.

Where it lives: an in-process LRU (`MEMORY_BYTES`, on the run's device), so consecutive cells in one process do not
reread disk, and, with a `root`, one file per epoch,
`<root>/teacher_outputs/<teacher_id>/<fingerprint>/<stream digest>/e<epoch>.pt`, shared by cells and processes (the
fingerprint in the path: processes with other thread counts keep their own files instead of overwriting each
other's). A file is a SHA-256 line followed by a `torch.save` payload read with `weights_only=True`; it is
written atomically when the stream moves on to another epoch, when the epoch is evicted and at `flush()`. A file that
fails its checksum, does not load, or names another teacher, stream or epoch is ignored and recomputed.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from kdbench.data.loader import Batch
from kdbench.errors import KdbenchError
from kdbench.models.features import Outputs, forward_with_features
from kdbench.results import atomic_write_bytes

FORMAT = 1
# One epoch's stage features. The cpu profile's (3000 images) exceed it: 387 MiB for resnet20, 1.1 GiB for vgg8, and
# read back from disk they cost nearly what recomputing them does (vgg8: load and verify 7 s, compute 12 s an epoch).
DEFAULT_FEATURE_BUDGET_BYTES = 256 * 2**20
MEMORY_BYTES = 2**30  # the in-process LRU's capacity, all teachers and epochs together


def teacher_forward(teacher: nn.Module, x: torch.Tensor, features: bool) -> Outputs:
    """A frozen teacher's outputs for `x`, computed under inference mode (no autograd bookkeeping), returned as
    ordinary tensors so that losses may save them for backward."""
    with torch.inference_mode():
        out = forward_with_features(teacher, x, stages=features, embedding=features)
    return out.detached_copy()


def device_label(device: torch.device) -> str:
    """The device as far as it changes floating-point results: its type, and the GPU model on CUDA."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def teacher_fingerprint(teacher: nn.Module) -> str:
    """The teacher's weights and the arithmetic that turns them into outputs (device, torch version, CPU threads)."""
    param = next(teacher.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    h = hashlib.sha256(
        json.dumps([device_label(device), torch.__version__, torch.get_num_threads()]).encode()
    )
    for name, tensor in teacher.state_dict().items():
        h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return h.hexdigest()[:20]


@dataclass
class _Entry:
    """One batch's stored outputs and the sample indices they were computed for."""

    index: torch.Tensor
    logits: torch.Tensor
    embedding: torch.Tensor | None = None
    stages: list[torch.Tensor] = field(default_factory=list)
    forward_s: float = 0.0  # what computing it took: a hit saves this much, which standalone cost adds back
    versions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self.versions = tuple(t._version for t in self.tensors())

    def tensors(self) -> list[torch.Tensor]:
        return [
            self.index,
            self.logits,
            *([self.embedding] if self.embedding is not None else []),
            *self.stages,
        ]

    def intact(self) -> bool:
        """False when something wrote into a stored tensor after it was stored."""
        return tuple(t._version for t in self.tensors()) == self.versions

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())

    @property
    def stage_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.stages)

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index.cpu(),
            "logits": self.logits.cpu(),
            "stages": [s.cpu() for s in self.stages],
            "embedding": None if self.embedding is None else self.embedding.cpu(),
            "forward_s": self.forward_s,
        }


class _Epoch:
    """One teacher's outputs on one stream's epoch: batch number → entry; `dirty` until written to `path`."""

    def __init__(self, meta: dict[str, Any], path: Path | None) -> None:
        self.meta, self.path = meta, path
        self.batches: dict[int, _Entry] = {}
        self.nbytes = self.stage_bytes = 0
        self.dirty = False

    def put(self, number: int, entry: _Entry) -> None:
        old = self.batches.get(number)
        if old is not None:
            self.nbytes -= old.nbytes
            self.stage_bytes -= old.stage_bytes
        self.batches[number] = entry
        self.nbytes += entry.nbytes
        self.stage_bytes += entry.stage_bytes
        self.dirty = True

    def drop_stages(self) -> None:
        for number, entry in list(self.batches.items()):
            if entry.stages:
                self.put(
                    number, _Entry(entry.index, entry.logits, entry.embedding, forward_s=entry.forward_s)
                )

    def save(self) -> None:
        """Write the epoch if it holds anything unwritten; a failed write only costs a later recomputation."""
        if self.path is None or not self.dirty:
            return
        buffer = io.BytesIO()
        torch.save({**self.meta, "batches": {n: e.as_dict() for n, e in self.batches.items()}}, buffer)
        payload = buffer.getvalue()
        try:
            atomic_write_bytes(self.path, hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
            self.dirty = False
        except (OSError, KdbenchError) as exc:
            warnings.warn(f"teacher outputs not cached to {self.path} ({exc})", stacklevel=2)

    @classmethod
    def load(cls, meta: dict[str, Any], path: Path | None, device: torch.device) -> _Epoch:
        """The epoch stored at `path`, or an empty one when there is no usable file."""
        epoch = cls(meta, path)
        if path is None or not path.exists():
            return epoch
        try:
            data = path.read_bytes()
            digest, _, payload = data.partition(b"\n")
            if hashlib.sha256(payload).hexdigest().encode() != digest:
                raise ValueError("checksum mismatch")
            stored = torch.load(io.BytesIO(payload), map_location=device, weights_only=True)
            if {k: stored.get(k) for k in meta} != meta:
                raise ValueError("it holds another teacher's, stream's or epoch's outputs")
            for number, e in stored["batches"].items():
                epoch.put(
                    int(number),
                    _Entry(
                        e["index"],
                        e["logits"],
                        e["embedding"],
                        list(e["stages"]),
                        float(e.get("forward_s", 0.0)),
                    ),
                )
            epoch.dirty = False
        except Exception as exc:  # truncated, corrupted, tampered, foreign: never use it
            warnings.warn(
                f"cached teacher outputs {path} are unusable ({exc}); recomputing them", stacklevel=3
            )
            epoch = cls(meta, path)
        return epoch


class _Memory:
    """Epochs kept in this process, least recently used evicted first (and written out if unsaved)."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self.epochs: OrderedDict[tuple, _Epoch] = OrderedDict()

    def get(self, key: tuple) -> _Epoch | None:
        epoch = self.epochs.get(key)
        if epoch is not None:
            self.epochs.move_to_end(key)
        return epoch

    def put(self, key: tuple, epoch: _Epoch) -> None:
        self.epochs[key] = epoch
        self.epochs.move_to_end(key)
        self.shrink()

    def shrink(self) -> None:
        """Evict until the epochs fit, never the most recently used one."""
        while len(self.epochs) > 1 and sum(e.nbytes for e in self.epochs.values()) > self.capacity_bytes:
            _, epoch = self.epochs.popitem(last=False)
            epoch.save()


_MEMORY = _Memory(MEMORY_BYTES)


class TeacherOutputCache:
    """One frozen teacher's outputs, served per augmented view (see the module docstring).

    `teacher_id` names the teacher on disk (the runner passes its `TeacherKey` digest); the fingerprint of its
    weights is checked as well, so two teachers given one id never share outputs. `root=None` keeps the outputs in
    this process only. The teacher must not change after the cache is built.
    """

    def __init__(
        self,
        teacher: nn.Module,
        teacher_id: str,
        root: Path | None = None,
        feature_budget_bytes: int = DEFAULT_FEATURE_BUDGET_BYTES,
    ) -> None:
        self.teacher = teacher
        self.teacher_id = teacher_id
        self.root = None if root is None else Path(root)
        self.feature_budget_bytes = feature_budget_bytes
        self.fingerprint = teacher_fingerprint(teacher)
        self.hits = self.misses = 0
        self.saved_s = (
            0.0  # teacher forward time that hits did not spend (as measured when each was computed)
        )
        self._over_budget: set[str] = set()  # streams whose stage features do not fit the budget
        self._current: _Epoch | None = None

    def outputs(self, batch: Batch, features: bool) -> Outputs:
        """The teacher's outputs for `batch`: stored ones for its view when present and valid, else computed and
        stored. A batch without a view, or a teacher in training mode (not frozen), is always computed."""
        if batch.view is None or self.teacher.training:
            return teacher_forward(self.teacher, batch.x, features)
        digest, epoch_number, number = batch.view
        epoch = self._epoch(digest, epoch_number, batch.x.device)
        entry = epoch.batches.get(number)
        if entry is not None and self._usable(entry, batch, features):
            self.hits += 1
            self.saved_s += entry.forward_s
            return (
                Outputs(entry.logits, list(entry.stages), entry.embedding)
                if features
                else Outputs(entry.logits)
            )
        self.misses += 1
        start = time.perf_counter()
        out = teacher_forward(self.teacher, batch.x, features)
        if batch.x.is_cuda:  # one sync per miss, so the stored time is the forward's, not its launch's
            torch.cuda.synchronize(batch.x.device)
        forward_s = time.perf_counter() - start
        stages = out.stages if features and self._fits(epoch, digest, out.stages) else []
        epoch.put(number, _Entry(batch.index, out.logits, out.embedding, list(stages), forward_s))
        _MEMORY.shrink()
        return out

    def __deepcopy__(self, memo: dict) -> TeacherOutputCache:
        """Shared state, never copied (a deep-copied method, as the FLOP counter makes, shares its cache; with
        its teachers copied it no longer matches them and computes its own outputs)."""
        return self

    def stats(self) -> dict[str, float]:
        return {"hits": self.hits, "misses": self.misses, "saved_s": self.saved_s}

    def flush(self) -> None:
        """Write the epoch in progress (the runner calls this after training; earlier epochs are already written)."""
        if self._current is not None:
            self._current.save()

    def _epoch(self, digest: str, number: int, device: torch.device) -> _Epoch:
        meta = {
            "format": FORMAT,
            "teacher_id": self.teacher_id,
            "fingerprint": self.fingerprint,
            "stream": digest,
            "epoch": number,
        }
        key = (None if self.root is None else str(self.root), *meta.values())
        epoch = _MEMORY.get(key)
        if epoch is None:
            path = (
                None
                if self.root is None
                else self.root
                / "teacher_outputs"
                / self.teacher_id
                / self.fingerprint
                / digest
                / f"e{number}.pt"
            )
            epoch = _Epoch.load(meta, path, device)
            _MEMORY.put(key, epoch)
        if self._current is not None and self._current is not epoch:
            self._current.save()  # the stream moved on: the previous epoch is complete
        self._current = epoch
        return epoch

    def _usable(self, entry: _Entry, batch: Batch, features: bool) -> bool:
        if features and not entry.stages:
            return False
        if not entry.intact():
            warnings.warn("a method wrote into cached teacher outputs; recomputing them", stacklevel=3)
            return False
        if entry.index.shape != batch.index.shape or not torch.equal(entry.index, batch.index):
            warnings.warn(
                f"cached teacher outputs for view {batch.view} belong to other samples; recomputing",
                stacklevel=3,
            )
            return False
        return True

    def _fits(self, epoch: _Epoch, digest: str, stages: list[torch.Tensor]) -> bool:
        """Whether this batch's stage features may be kept: only while the epoch's stay within the budget; once they
        do not, none are kept for the stream (the ones kept so far are dropped)."""
        if digest in self._over_budget:
            return False
        size = sum(s.numel() * s.element_size() for s in stages)
        if epoch.stage_bytes + size <= self.feature_budget_bytes:
            return True
        self._over_budget.add(digest)
        epoch.drop_stages()
        return False
