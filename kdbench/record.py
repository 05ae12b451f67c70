"""The one record a cell leaves, whether it finished or failed, and the version of the code that wrote it.

A record's numbers hold for the code that produced them: `code_version` names that code (the package version, a
digest of the method's own source files and one of the shared training and measuring code), and a record whose
version differs from the current code's is stale (`is_stale`): the tables can leave it out and a grid can run
its cell again. The digests are of the code's syntax tree without docstrings, so reformatting, comments and
documentation leave records current, and any change to what the code does makes them stale.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import kdbench

if TYPE_CHECKING:
    import torch

    from kdbench.methods.base import Method, MethodInfo
    from kdbench.run_config import RunConfig

SCHEMA_VERSION = 2

# The code every method's numbers depend on: the training loop, the run, the losses, the data, the models and
# what is measured. Files and folders inside the kdbench package.
CORE_SOURCES = (
    "engine.py",
    "runner.py",
    "run_config.py",
    "prepare.py",
    "teacher_training.py",
    "resume.py",
    "fastpaths.py",
    "losses.py",
    "metrics.py",
    "deployables.py",
    "data",
    "models",
)
METHODS_PACKAGE = "kdbench.methods"
DIGEST_CHARS = 12


@dataclass
class Record:
    """Everything a cell's record holds, serialised with `to_dict` to the flat JSON the tables read.

    A failed cell has the identity fields and `error`, `failed_step`, `traceback`; its measurements stay None.
    Latencies are medians over timed blocks in milliseconds, each with its interquartile range (`*_iqr`).
    """

    cell_id: str
    status: str  # "ok" or "failed"
    config: dict[str, Any]
    method: str
    variant: str
    technique: str
    compare_to: str
    techniques: list[str]
    scheme: str
    teacher: str | None
    teachers: list[str]
    student: str
    dataset: str
    seed: int
    epochs: int
    code_version: dict[str, str]
    env: dict[str, Any]
    finished_at: str
    schema: int = SCHEMA_VERSION
    # ---- a finished cell: accuracy
    train_samples: int | None = None
    test_samples: int | None = None
    student_top1: float | None = None
    val_top1: float | None = None
    teacher_top1: float | None = None
    teachers_top1: list[float] = field(default_factory=list)
    ece: float | None = None
    agreement: float | None = None
    # ---- the deployable's costs (kdbench.deployables: measured once per deployable, shared by cells)
    student_params: int | None = None
    deployable_bytes: int | None = None
    flops_per_image: int | None = None
    latency_ms_b1: float | None = None
    latency_ms_b1_iqr: float | None = None
    latency_ms_b256: float | None = None
    latency_ms_b256_iqr: float | None = None
    # ---- the first teacher's, measured the same way
    teacher_params: int | None = None
    teacher_bytes: int | None = None
    teacher_flops_per_image: int | None = None
    teacher_latency_ms_b1: float | None = None
    teacher_latency_ms_b1_iqr: float | None = None
    teacher_latency_ms_b256: float | None = None
    teacher_latency_ms_b256_iqr: float | None = None
    # ---- what training cost
    extra_params: int | None = None
    train_flops_per_sample: int | None = None
    train_time_s: float | None = None
    standalone_train_time_s: float | None = (
        None  # set by the runner: training time without shared teacher outputs
    )
    train_samples_per_s: float | None = None
    peak_memory_bytes: int | None = None  # None where it cannot be measured (kdbench.metrics.PeakMemory)
    teacher_train_time_s: float | None = None
    teachers_from_cache: list[bool] = field(default_factory=list)
    teacher_output_cache: dict[str, float] | None = None  # set by the runner: hits, misses, saved_s
    epoch_losses: list[dict[str, float]] = field(default_factory=list)
    precision: str | None = None  # set by the runner: the training's (kdbench.fastpaths)
    memory_format: str | None = None  # set by the runner: the layout of the models (kdbench.fastpaths)
    # set by the runner: the speed options that were on (compile, cudnn_benchmark; kdbench.fastpaths.speed_up)
    speed_ups: list[str] = field(default_factory=list)
    # ---- set by the runner: top-1 after every epoch (kdbench.runner.EpochCurve)
    curve_test_images: int | None = None
    curve_top1: list[float] | None = None
    curve_val_top1: list[float] | None = None
    curve_best_top1: float | None = None
    curve_best_epoch: int | None = None
    # set by the runner: the first epoch a run resumed from a checkpoint trained (kdbench.resume); its timings sum
    # the processes that trained it. None for a run that was never stopped
    resumed_at_epoch: int | None = None
    # set by the runner: top-1 within a few points of chance (kdbench.stats.is_collapsed); tables count such runs
    # apart instead of averaging them into a mean
    collapsed: bool | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    # ---- a failed cell
    error: str | None = None
    failed_step: int | None = None
    traceback: str | None = None

    @classmethod
    def of_cell(
        cls, cfg: RunConfig, status: str, info: MethodInfo, device: torch.device, **fields: Any
    ) -> Record:
        """A record of `cfg` with its identity, code version, environment and time filled in."""
        # imported here, as the methods are below: reading records (kdbench.results) needs no torch
        from kdbench import env

        resolved = cfg.resolved
        return cls(
            cell_id=cfg.cell_id(),
            status=status,
            config=resolved.fields,
            method=cfg.method,
            variant=cfg.variant,
            technique=info.technique,
            compare_to=info.compare_to,
            techniques=list(info.techniques),
            scheme=info.scheme,
            teacher=cfg.teachers[0] if cfg.teachers else None,
            teachers=list(cfg.teachers),
            student=cfg.student,
            dataset=cfg.dataset,
            seed=cfg.seed,
            epochs=resolved.epochs,
            code_version=current_code_version(cfg.method),
            env=env.describe(device),
            finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **fields,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@functools.cache
def files_digest(paths: tuple[Path, ...]) -> str:
    """A digest of the files' code (`code_text`) and their paths inside the package (not the checkout's location,
    so records written in another checkout of the same code are current here too). Cached: hashed once a process,
    as the code a process runs is the code it imported."""
    root = package_root()
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(
            str(path.relative_to(root)).encode() + b"\0" + code_text(path.read_text()).encode() + b"\0"
        )
    return digest.hexdigest()[:DIGEST_CHARS]


def code_text(source: str) -> str:
    """What a module does, without how it is laid out: its syntax tree, docstrings removed, written out by
    `_canonical` (not `ast.dump`, whose text changes between Python versions)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return _canonical(tree)


def _canonical(node: object) -> str:
    """A node as its type and its non-empty fields, by name: fields a newer Python adds empty (type parameters,
    say) leave the text unchanged."""
    if isinstance(node, ast.AST):
        fields = (
            f"{name}={_canonical(value)}"
            for name, value in sorted(ast.iter_fields(node))
            if value is not None and value != []
        )
        return f"{type(node).__name__}({','.join(fields)})"
    if isinstance(node, list):
        return "[" + ",".join(_canonical(item) for item in node) + "]"
    return repr(node)


def package_root() -> Path:
    return Path(kdbench.__file__).resolve().parent


def core_files() -> tuple[Path, ...]:
    files: list[Path] = []
    for name in CORE_SOURCES:
        path = package_root() / name
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return tuple(files)


def method_files(method: type[Method]) -> tuple[Path, ...]:
    """The source files of the method's class and of its base classes inside kdbench.methods."""
    return tuple(
        sorted(
            {
                Path(inspect.getsourcefile(c)).resolve()
                for c in method.__mro__
                if c.__module__.startswith(METHODS_PACKAGE)
            }
        )
    )


def current_code_version(method: str) -> dict[str, str]:
    """The code version a record of `method` written now gets."""
    # imported here: the methods import kdbench.results, which imports this module
    from kdbench.methods import get_method

    return {
        "package": kdbench.__version__,
        "method": files_digest(method_files(get_method(method))),
        "core": files_digest(core_files()),
    }


# Code digests verified to write the same records as newer ones, by scripts/code_equivalence.py (a refactor that
# changes no number need not make every record stale): {"core": {old: new}, "<method>": {old: new}}
EQUIVALENCE_FILE = "code_equivalence.json"


@functools.cache
def code_equivalences() -> dict[str, dict[str, str]]:
    path = package_root() / EQUIVALENCE_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def _newest(digest: str | None, newer: dict[str, str]) -> str | None:
    """`digest` followed through its verified equivalences to the newest one."""
    seen: set[str] = set()
    while digest in newer and digest not in seen:
        seen.add(digest)
        digest = newer[digest]
    return digest


def equivalent_version(version: dict[str, str], method: str) -> dict[str, str]:
    """The newest code version verified to write the same records of `method` as `version`."""
    known = code_equivalences()
    return {
        "package": version.get("package"),
        "method": _newest(version.get("method"), known.get(method, {})),
        "core": _newest(version.get("core"), known.get("core", {})),
    }


def is_stale(record: dict[str, Any]) -> bool:
    """Whether the record was written by other code than the current (or says nothing of its code, or is of a
    method that no longer exists); code verified to write the same records as the current is not other code."""
    from kdbench.methods import METHODS

    version, method = record.get("code_version"), record.get("method")
    if not version or method not in METHODS:
        return True
    return equivalent_version(version, method) != current_code_version(method)
