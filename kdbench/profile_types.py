"""What a profile is: teacher/student pairs, the robustness sweep, and the profile itself (expanded to cells by
`kdbench.profiles`; the built-in ones are in `kdbench.profile_catalog`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kdbench.methods import METHODS, get_method


@dataclass(frozen=True)
class Pair:
    teacher: str
    student: str
    kind: str = "same-family"  # or "different-family"
    methods: tuple[str, ...] | None = (
        None  # None: the profile's methods; else this pair runs these (and references)
    )
    # None: the profile's epochs; else this pair's students (its references too) train for this many, for a pair
    # whose teacher pays off later than the profile's budget lets it
    epochs: int | None = None


@dataclass(frozen=True)
class Robustness:
    """The "beyond compression" sweep (after Sarfraz et al.): label noise and class imbalance on the first pair."""

    methods: tuple[str, ...] = ("baseline", "kd")
    label_noise: tuple[float, ...] = (0.0, 0.2, 0.4)
    imbalance: tuple[float, ...] = (1.0, 10.0, 100.0)
    seeds: tuple[int, ...] | None = None  # None: the profile's


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    dataset: str
    pairs: tuple[Pair, ...]
    seeds: tuple[int, ...]
    epochs: int
    teacher_epochs: int
    train_subset: int | None
    recipe: str = "cpu"
    teacher_train_subset: int | None = None  # None: teachers train on the students' subset
    test_subset: int | None = None  # None: the full test set
    methods: tuple[str, ...] | None = None  # None: every registered method
    teacher_seed: int | None = 0  # one teacher per architecture, shared by all seeds (as RepDistiller does)
    extra_teachers: tuple[str, ...] = ()  # further teachers for methods that need several
    hparams: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-method overrides
    # named control runs of a method, each with its own hyperparameters: {"nas": {"smallest": {"pick": ...}}}
    variants: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    robustness: Robustness | None = None
    meaningful: bool = True  # False: a plumbing check whose numbers mean nothing
    # epochs between a cell's training checkpoints (0: none): a killed long cell resumes from its last (kdbench.resume)
    checkpoint_every: int = 0
    # "module:function" that builds the cells instead of pairs x methods x seeds (the claims profile)
    cells_from: str | None = None
    # the folder under results/ its records go to (None: its name); a profile that adds methods to another's grid
    # shares its folder, so their common cells run once and its tables include both
    results: str | None = None
    # folders under results/ whose finished, current records of identical cells are copied instead of run again
    # (the claims' kd and baseline cells are the cpu grid's own)
    reuses: tuple[str, ...] = ()

    def own_file(self, stem: str, suffix: str) -> str:
        """The name of a file that describes this profile's run in its results folder: `stem` + `suffix`, or, for
        a profile that adds cells to another's folder (the zoo), one with its name, beside that profile's own."""
        return f"{stem}{suffix}" if self.results is None else f"{stem}-{self.name}{suffix}"

    def method_names(self, pair: Pair | None = None) -> list[str]:
        """The methods the profile runs (on `pair`, when given: a pair may run fewer), references included."""
        chosen = pair.methods if pair is not None and pair.methods is not None else self.methods
        names = list(chosen) if chosen is not None else sorted(METHODS)
        for name in list(names):  # every method's comparison reference runs too
            ref = get_method(name).info.compare_to
            if ref not in names:
                names.append(ref)
        return names
