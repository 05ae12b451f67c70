"""The one interface every distillation technique implements, and the registry that lists them.

A method is a small `nn.Module` (after mdistiller's Distiller) that owns everything it trains: the student,
and any adapters, peers, auxiliary heads, discriminators or generators. Frozen teachers are handed to it but
are not its submodules, so they are neither optimised nor counted. The engine calls `loss_terms(batch)` and
sums the named terms; every other regime plugs in through the hooks below, each a no-op by default:

- several trainable models (online): own them; `deployable()` says which one is evaluated and shipped;
- no teacher (self): set `MethodInfo.teachers = 0`;
- no real inputs (data-free): never read `batch.x`; synthesise in `before_training` or per step;
- an adversary or generator with its own optimiser: `auxiliary_parameters` + `auxiliary_loss`;
- a sequence of tasks (lifelong): `tasks()`, `on_task_start()` (and `task_training_classes()` for a joint bound);
- a search phase (NAS): `before_training()` picks and builds the student, scoring it on batches that
  `on_training_data()` handed over (which also serves estimates such as EWC's Fisher information);
- a fake-quantized student: wrap it in `__init__`, convert it in `deployable()`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
import torch.nn as nn
import yaml

from kdbench.data.catalog import DatasetInfo
from kdbench.data.loader import Batch, BatchStream
from kdbench.errors import KdbenchError, check_choice, unknown
from kdbench.losses import kd_loss
from kdbench.models.features import Outputs, forward_with_features
from kdbench.teacher_outputs import TeacherOutputCache, teacher_forward

# The rows of the survey's Table 4, in its order; every method belongs to exactly one.
TECHNIQUES: tuple[str, ...] = (
    "Response-Based KD",
    "Feature-Based KD",
    "Relation-Based KD",
    "Offline Distillation",
    "Online Distillation",
    "Self-Distillation",
    "Cross-Modal Distillation",
    "Graph-Based Distillation",
    "Attention-Based Distillation",
    "Data-Free KD",
    "Adversarial KD",
    "Quantized KD",
    "NAS-Based Distillation",
    "Lifelong Distillation",
    "Multi-Teacher Distillation",
)
REFERENCE_ROWS = ("Reference",)  # baseline and teacher rows: what every comparison is made against
SCHEMES = ("offline", "online", "self")


@dataclass(frozen=True)
class MethodInfo:
    """What the catalogue (survey Tables 1–3) says about a method."""

    name: str
    technique: str  # one of TECHNIQUES, or "Reference"
    scheme: str  # offline / online / self
    knowledge: str  # what is transferred: response, feature, relation, attention, graph, ...
    reference: str  # "Author et al. Year, Title"
    teachers: int = 1  # frozen teachers needed: 0 (none), 1, or 2+ (at least that many)
    summary: str = ""
    also_represents: tuple[
        str, ...
    ] = ()  # further Table 4 rows it stands for (kd is also "Offline Distillation")
    compare_to: str = (
        "baseline"  # the method whose accuracy its boost is measured against (same student, seed)
    )

    def __post_init__(self) -> None:
        for technique in (self.technique, *self.also_represents):
            check_choice("technique", technique, TECHNIQUES + REFERENCE_ROWS)
        check_choice("scheme", self.scheme, SCHEMES)

    @property
    def techniques(self) -> tuple[str, ...]:
        return (self.technique, *self.also_represents)


@dataclass
class Setup:
    """Everything the runner hands a method to build itself."""

    student: nn.Module
    teachers: list[nn.Module]
    data: DatasetInfo
    make_model: Callable[[str], nn.Module]  # builds any registered architecture for this dataset
    num_train: int  # size of the training split (per-sample state, e.g. PS-KD's past predictions)
    epochs: int
    steps_per_epoch: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # per teacher (same order), outputs shared with other cells that replay the same batches; None: compute
    output_caches: list[TeacherOutputCache | None] = field(default_factory=list)
    # the run's SGD recipe (a kdbench.engine.Recipe; the engine imports this module), for methods that train a
    # model of their own the way the student is trained (takd's assistant); None: kdbench's cpu recipe
    recipe: Any = None
    # how the run computes (kdbench.fastpaths): the engine autocasts the loss terms to `precision`; `make_model`'s
    # models and the method's modules are in `memory_format` ("contiguous" or "channels_last")
    precision: str = "fp32"
    memory_format: str = "contiguous"
    # the cell's seed, for a method's own random draws (a synthetic pool's order and augmentation): without it,
    # every seed of a grid would replay the same draws
    seed: int = 0


class Method(nn.Module):
    """Base class: subclasses set `info` and `defaults`, and implement `loss_terms`."""

    info: ClassVar[MethodInfo]
    # Hyperparameters with their paper / reference-benchmark defaults; each subclass comments its sources.
    defaults: ClassVar[dict[str, Any]] = {}
    # Ranges of hyperparameters whose names do not imply one (see `hparam_range`), e.g. {"alpha_T": UNIT}.
    ranges: ClassVar[dict[str, Range]] = {}

    def __init__(self, setup: Setup, **hparams: Any) -> None:
        super().__init__()
        self.hp = resolve_hparams(type(self), hparams)
        self.setup = setup
        self.student = setup.student
        self._teachers = list(setup.teachers)  # a plain list: not submodules, never optimised or counted
        self.epoch = 0  # the engine keeps this current; schedules (warm-ups, ramps) read it
        self.task_index = 0

    @classmethod
    def pair_problem(cls, student: nn.Module, teacher: nn.Module) -> str | None:
        """Why this method cannot distil `teacher` into `student`, from their architectures alone (None: it can).
        Profiles leave such pairs out, as the reference benchmarks' tables leave them blank (RepDistiller's FSP on
        its cross-architecture pairs); a run asked for one anyway fails with this message."""
        return None

    # ---- what the engine calls ---------------------------------------------------------------------------
    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Named loss terms for one batch; the engine sums them (weights are applied here)."""
        raise NotImplementedError

    def step_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        """What the engine trains on: `loss_terms`, plus the "+KD" term `plus_kd` = kd_weight x Hinton's KD
        (T = 4) against the first teacher when the method takes "+KD" and kd_weight > 0. The student's logits are
        the ones its own terms computed on `batch.x` (caught with a hook), so no extra forward pass runs."""
        weight = self.hp.get(PLUS_KD, 0.0) if takes_plus_kd(type(self)) else 0.0
        if not weight:
            return self.loss_terms(batch)
        seen: list[torch.Tensor] = []

        def keep(_module: nn.Module, inputs: tuple, output: Any) -> None:
            if not seen and inputs and inputs[0] is batch.x and isinstance(output, torch.Tensor):
                seen.append(output)

        handle = self.student.register_forward_hook(keep)
        try:
            terms = self.loss_terms(batch)
        finally:
            handle.remove()
        if not seen:
            raise KdbenchError(
                f"{PLUS_KD} > 0 needs {self.info.name}'s student logits on the batch; it computes none"
            )
        teacher = self.teacher_outputs(batch).logits
        return {**terms, "plus_kd": weight * kd_loss(seen[0], teacher, PLUS_KD_TEMPERATURE)}

    def deployable(self) -> nn.Module:
        """The model that is evaluated and measured (size, FLOPs, latency) after training."""
        return self.student

    def monitored(self) -> nn.Module:
        """The model evaluated after each epoch, while training goes on: the deployable, unless building it is
        final (a quantized model is converted once, after training, and its fake-quantized student is watched)."""
        return self.deployable()

    def deployable_size_bytes(self) -> int | None:
        """The shipped model's size when it is not its fp32 state dict (e.g. low-bit weights); None = measure."""
        return None

    def extra_parameters(self) -> int:
        """Parameters trained but not deployed (regressors, peers, heads, discriminators, generators)."""
        deployed = {id(p) for p in self.deployable().parameters()}
        return sum(p.numel() for p in self.parameters() if id(p) not in deployed)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the main SGD optimiser updates: everything this method owns but the auxiliary parameters."""
        aux = {id(p) for p in self.auxiliary_parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in aux]

    # ---- regime hooks (no-ops unless a method needs them) ---------------------------------------------------
    def on_training_data(self, stream: BatchStream) -> None:
        """Runs once before `before_training`, handing over the whole training stream, for work that needs
        real samples outside the step loop (a search proxy's batches, a Fisher estimate on a finished task).
        Training itself happens only in `loss_terms`; data-free methods leave this alone."""

    def before_training(self) -> None:
        """Runs once before the first epoch, inside the timed training (search, synthesis, snapshots)."""

    def on_epoch_start(self, epoch: int) -> None:
        """Runs before each epoch."""

    def on_epoch_end(self, epoch: int) -> None:
        """Runs after each epoch."""

    def auxiliary_parameters(self) -> list[nn.Parameter]:
        """Parameters with their own optimiser and loss (a discriminator, a generator)."""
        return []

    def auxiliary_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        """The optimiser for `auxiliary_parameters`; Adam as in most GAN-style KD papers."""
        return torch.optim.Adam(params, lr=1e-3)

    def auxiliary_loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Loss terms for the auxiliary step, taken before each main step."""
        return {}

    def tasks(self, num_classes: int) -> list[list[int]] | None:
        """A class-incremental sequence of tasks (lists of classes), or None for ordinary training."""
        return None

    def task_training_classes(self, task_index: int, tasks: list[list[int]]) -> list[int]:
        """The classes whose samples are trained on during task `task_index`: that task's own by default (a
        joint-training upper bound returns every class seen so far)."""
        return tasks[task_index]

    def on_task_start(self, task_index: int, classes: list[int]) -> None:
        """Runs before training on each task of `tasks()`."""

    def after_task(self, task_index: int, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """After each task of `tasks()`, untimed, with the deployable's logits on the test set: a regime with tasks
        measures what it reports here (per-task accuracy) and returns it from `record_extras`."""

    def record_extras(self) -> dict[str, Any]:
        """Regime-specific results to put into the record (chosen architecture, per-task accuracy, ...)."""
        return {}

    # ---- helpers for subclasses --------------------------------------------------------------------------
    @property
    def teachers(self) -> list[nn.Module]:
        return self._teachers

    @property
    def teacher(self) -> nn.Module:
        return self._teachers[0]

    def teacher_outputs(
        self, source: Batch | torch.Tensor, index: int = 0, features: bool = False
    ) -> Outputs:
        """Teacher `index`'s outputs for a batch (pass the `Batch` itself, so they can come from the run's shared
        cache of teacher outputs) or for raw inputs such as synthetic images (always computed). Computed under
        inference mode; treat them as read-only, since cached tensors are shared."""
        teacher = self._teachers[index]
        if isinstance(source, Batch):
            cache = self.setup.output_caches[index] if index < len(self.setup.output_caches) else None
            if cache is not None and cache.teacher is teacher:
                return cache.outputs(source, features)
            source = source.x
        return teacher_forward(teacher, source, features)

    def student_outputs(self, x: torch.Tensor) -> Outputs:
        return forward_with_features(self.student, x)

    def probe(self, model: nn.Module) -> Outputs:
        """Feature shapes of `model` on a dummy batch, without touching its batch-norm statistics."""
        info = self.setup.data
        x = torch.zeros(2, info.in_chans, info.image_size, info.image_size, device=self.setup.device)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            out = forward_with_features(model, x)
        model.train(was_training)
        return out


@dataclass(frozen=True)
class Range:
    """The values a numeric hyperparameter may take: from `low` (excluded when `open_low`) to `high`."""

    low: float = -math.inf
    high: float = math.inf
    open_low: bool = False

    def __contains__(self, value: float) -> bool:
        return (value > self.low if self.open_low else value >= self.low) and value <= self.high

    def __str__(self) -> str:
        if self.high < math.inf:
            return f"in [{self.low:g}, {self.high:g}]"
        return f"{'>' if self.open_low else '>='} {self.low:g}"


POSITIVE, NON_NEGATIVE, UNIT = Range(0.0, open_low=True), Range(0.0), Range(0.0, 1.0)


def hparam_range(cls: type[Method], name: str) -> Range | None:
    """The range a method declares for a hyperparameter (`Method.ranges`), else the one its name implies by
    kdbench's naming: a temperature or learning rate is positive, a loss weight is not negative, a fraction or
    probability lies in [0, 1]. None: any value of the default's type."""
    if name in cls.ranges:
        return cls.ranges[name]
    if (
        name == "temperature"
        or name.endswith("_temperature")
        or name == "lr"
        or "_lr" in name
        or "lr_" in name
    ):
        return POSITIVE
    if name.endswith("_weight") or name in ("alpha", "beta"):
        return NON_NEGATIVE
    if name.endswith(("_fraction", "_prob", "_probability")):
        return UNIT
    return None


def resolve_hparams(cls: type[Method], given: dict[str, Any]) -> dict[str, Any]:
    """The method's defaults overridden by `given`; an unknown name, a value of the wrong type or one outside
    the hyperparameter's range (`hparam_range`) is an error."""
    out = dict(cls.defaults)
    known = {**cls.defaults, PLUS_KD: 0.0} if takes_plus_kd(cls) else cls.defaults
    for key, value in given.items():
        if key not in known:
            raise unknown(f"hyperparameter of {cls.info.name}", key, known)
        default = known[key]
        if isinstance(default, bool) != isinstance(value, bool) or (
            isinstance(default, (int, float)) and not isinstance(value, (int, float))
        ):
            raise KdbenchError(f"hyperparameter {key}={value!r} of {cls.info.name} must be like {default!r}")
        valid = hparam_range(cls, key) if not isinstance(default, bool) else None
        if valid is not None and value not in valid:
            raise KdbenchError(f"hyperparameter {key}={value!r} of {cls.info.name} must be {valid}")
        out[key] = type(default)(value) if isinstance(default, float) else value
    return _checked_plus_kd(cls, out)


# ---- "+KD": Hinton's KD added to any method with a teacher ------------------------------------------------------
PLUS_KD = "kd_weight"
PLUS_KD_TEMPERATURE = 4.0  # as kd: RepDistiller train_student.py --kd_T 4


def takes_plus_kd(cls: type[Method]) -> bool:
    """Whether the base class adds "+KD" (`kd_weight` x Hinton's KD) to the method's terms: every method but those
    whose own loss already has a KD term weighted by their own `kd_weight` (kd, ctkd, ...)."""
    return PLUS_KD not in cls.defaults


def _checked_plus_kd(cls: type[Method], hparams: dict[str, Any]) -> dict[str, Any]:
    """A "+KD" weight of 0 is dropped, so the resolved config (and the cell id hashed from it) of a run without
    "+KD" stays what it was before "+KD" existed; a positive one needs a teacher and the real batch."""
    if not takes_plus_kd(cls) or PLUS_KD not in hparams:
        return hparams
    if hparams[PLUS_KD] == 0:
        return {k: v for k, v in hparams.items() if k != PLUS_KD}
    if cls.info.teachers == 0 or cls.info.technique == "Data-Free KD":
        raise KdbenchError(
            f"{PLUS_KD} must be 0 for {cls.info.name}: it has no teacher outputs on real inputs"
        )
    return hparams


def parse_hparams(pairs: Iterable[str]) -> dict[str, Any]:
    """`["temperature=4", "beta=8.0"]` → `{"temperature": 4, "beta": 8.0}` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise KdbenchError(f"hyperparameter {pair!r} must look like name=value")
        out[key.strip()] = yaml.safe_load(value)
    return out


# ---- the registry ----------------------------------------------------------------------------------------------
METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: add a method to the registry under `cls.info.name`."""
    name = cls.info.name
    if name in METHODS and METHODS[name] is not cls:
        raise ValueError(f"method {name!r} registered twice")
    METHODS[name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        raise unknown("method", name, METHODS)
    return METHODS[name]


def catalogue() -> list[dict[str, Any]]:
    """One row per registered method: its metadata and default hyperparameters."""
    rows = []
    for name in sorted(METHODS, key=lambda n: (_technique_rank(METHODS[n].info.technique), n)):
        cls = METHODS[name]
        row = {f.name: getattr(cls.info, f.name) for f in fields(MethodInfo)}
        row["defaults"] = dict(cls.defaults)
        rows.append(row)
    return rows


def _technique_rank(technique: str) -> int:
    order = REFERENCE_ROWS + TECHNIQUES
    return order.index(technique)
