"""What determines a run's numbers (`RunConfig`, whose hash is the cell id), and the folders a run writes to."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kdbench import fastpaths
from kdbench.engine import Recipe, get_recipe
from kdbench.errors import KdbenchError, check_choice
from kdbench.methods import Method, get_method
from kdbench.methods.base import resolve_hparams
from kdbench.models.registry import check_model
from kdbench.results import ensure_writable


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's numbers. Paths and the device are not part of it."""

    method: str
    student: str
    teachers: tuple[str, ...] = ()
    dataset: str = "fashion-mnist"
    seed: int = 0
    recipe: str = "cpu"
    epochs: int | None = None  # None: the recipe's
    teacher_epochs: int | None = None  # None: the student's
    train_subset: int | None = None  # None: the whole training split
    # the teachers' own training images (a teacher that has seen more than the student can learn from its budget);
    # None: the student's. Capped at the images not held out for validation, which no teacher ever sees.
    teacher_train_subset: int | None = None
    val_size: int = 0  # held-out validation images, taken from the training split
    teacher_seed: int | None = None  # None: the cell's seed; a fixed value shares one teacher across seeds
    label_noise: float = 0.0  # symmetric label noise on the training split (teachers see the same labels)
    imbalance_ratio: float = 1.0  # long-tailed training split, largest / smallest class
    test_subset: int | None = None  # None: the whole test set (a stratified subset only for plumbing checks)
    hparams: dict[str, Any] = field(default_factory=dict)
    variant: str = (
        ""  # a named control run of the method in a grid (e.g. nas "smallest"); "" is the method itself
    )
    precision: str = (
        "fp32"  # "bf16": loss terms under bf16 autocast (kdbench.fastpaths); in the cell id only then
    )

    @functools.cached_property
    def resolved(self) -> ResolvedRun:
        """The config resolved once (defaults filled in, names checked): what every layer reads."""
        method = get_method(self.method)
        if len(self.teachers) < method.info.teachers:
            need = method.info.teachers
            raise KdbenchError(
                f"method {self.method!r} needs {need} teacher{'s' * (need > 1)}; pass --teacher"
            )
        for arch in (self.student, *self.teachers):  # before any teacher is trained for an unknown student
            check_model(arch)
        recipe = get_recipe(self.recipe)
        epochs = self.epochs if self.epochs is not None else recipe.epochs
        for name, value in (("epochs", epochs), ("teacher_epochs", self.teacher_epochs)):
            if value is not None and value < 1:
                raise KdbenchError(f"{name} must be at least 1, got {value}")
        check_choice("precision", self.precision, fastpaths.PRECISIONS)
        hparams = resolve_hparams(method, self.hparams)
        fields = asdict(self)
        if self.precision == "fp32":  # the default stays out, so fp32 cells keep the ids they had before bf16
            del fields["precision"]
        fields.update(
            teachers=list(self.teachers),
            epochs=epochs,
            teacher_epochs=self.teacher_epochs or epochs,
            recipe=recipe.as_dict(),
            hparams=hparams,
        )
        blob = json.dumps(fields, sort_keys=True, default=str)
        cell_id = f"{self.method}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"
        return ResolvedRun(fields, method, recipe, epochs, self.teacher_epochs or epochs, hparams, cell_id)

    def resolve(self) -> dict[str, Any]:
        """The fully resolved config as the record's `config`: its hash is the cell id."""
        return self.resolved.fields

    def cell_id(self) -> str:
        return self.resolved.cell_id


@dataclass(frozen=True)
class ResolvedRun:
    """A `RunConfig` with every default filled in and every name checked (`RunConfig.resolved`, computed once per
    config): the method class, the recipe, the epochs and hyperparameters in force, and the cell id."""

    fields: dict[str, Any]  # the resolved config: the record's `config`, hashed into the cell id
    method: type[Method]
    recipe: Recipe
    epochs: int
    teacher_epochs: int
    hparams: dict[str, Any]
    cell_id: str


def default_cache_dir() -> Path:
    return Path(os.environ.get("KDBENCH_CACHE", Path.home() / ".cache" / "kdbench")).expanduser()


def check_folders(results_dir: str | Path, cache_dir: str | Path) -> None:
    """Fail before any training, not after it, when the results or the teacher-cache folder cannot be written."""
    ensure_writable(results_dir, "choose another results folder with --results-dir")
    ensure_writable(cache_dir, "choose another teacher cache with --cache-dir or $KDBENCH_CACHE")
