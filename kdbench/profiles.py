"""Profiles: what a grid runs, apart from running it (`kdbench.grid`).

A profile names a dataset, teacher/student pairs, seeds, a training budget and the methods to run, and expands to
cells (one `RunConfig` each): every method on every pair and seed, named control variants, and the robustness
sweep. The built-in profiles are `PROFILES`; `EXPERIMENTS` are profiles whose cells come from elsewhere
(`cells_from`, a "module:function" such as the claims' `kdbench.claims:all_cells`) on a grid profile's data
budget. A user's profile is the same fields in a YAML file (`load_profile`), every field checked
(`kdbench.profile_yaml`) and every cell resolved (`validate`) before anything trains.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kdbench.data.catalog import SYNTHETIC, dataset_info
from kdbench.errors import KdbenchError, unknown
from kdbench.methods import METHODS, get_method
from kdbench.methods.base import Method
from kdbench.models import create_model
from kdbench.profile_yaml import check_fields, check_types, read_grid_file
from kdbench.runner import RunConfig


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


def _cell(profile: Profile, method: str, pair: Pair, seed: int, **overrides: Any) -> RunConfig:
    needed = get_method(method).info.teachers
    teachers = (pair.teacher, *profile.extra_teachers)[
        :needed
    ]  # none for a teacher-free method: one cell a student
    if len(teachers) < needed:
        raise KdbenchError(
            f"method {method!r} needs {needed} teachers; add extra_teachers to profile {profile.name!r}"
        )
    return budget_cell(
        profile,
        method,
        pair.student,
        teachers,
        seed,
        epochs=pair.epochs,
        hparams=dict(profile.hparams.get(method, {})),
        **overrides,
    )


def budget_cell(
    profile: Profile,
    method: str,
    student: str,
    teachers: Sequence[str],
    seed: int,
    epochs: int | None = None,
    **fields: Any,
) -> RunConfig:
    """A cell at `profile`'s budget (dataset, recipe, epochs unless given, subsets, teacher training); the
    teacher-only fields stay unset without a teacher, so a teacher-free cell has one id whatever the profile's
    teachers. Profiles and claims build their cells here, so a cell means the same in both."""
    return RunConfig(
        method=method,
        student=student,
        teachers=tuple(teachers),
        dataset=profile.dataset,
        seed=seed,
        recipe=profile.recipe,
        epochs=epochs if epochs is not None else profile.epochs,
        teacher_epochs=profile.teacher_epochs,
        train_subset=profile.train_subset,
        teacher_seed=profile.teacher_seed if teachers else None,
        teacher_train_subset=profile.teacher_train_subset if teachers else None,
        test_subset=profile.test_subset,
        **fields,
    )


def _distinct(cells: list[RunConfig]) -> list[RunConfig]:
    """Each cell once, in order: a teacher-free method's cell is the same for every pair that shares its student,
    and running it twice would count one replicate twice."""
    return list({c.cell_id(): c for c in cells}.values())


def pair_problem(method: str, pair: Pair, dataset: str) -> str | None:
    """Why `method` cannot take `pair` on `dataset` (`Method.pair_problem`; None: it can), asked of the pair's
    architectures built on the meta device (no weights, no memory)."""
    cls = get_method(method)
    if cls.pair_problem.__func__ is Method.pair_problem.__func__ or not cls.info.teachers:
        return None
    return cls.pair_problem(_meta_model(pair.student, dataset), _meta_model(pair.teacher, dataset))


@functools.cache
def _meta_model(name: str, dataset: str) -> torch.nn.Module:
    info = dataset_info(dataset)
    with torch.device("meta"):
        return create_model(name, info.num_classes, info.in_chans)


def left_out(profile: Profile) -> list[tuple[str, Pair, str]]:
    """The (method, pair, why) a profile leaves out because the method cannot take the pair."""
    return [
        (method, pair, problem)
        for pair in profile.pairs
        for method in profile.method_names(pair)
        if (problem := pair_problem(method, pair, profile.dataset))
    ]


def main_cells(profile: Profile) -> list[RunConfig]:
    cells = []
    skip = {(method, pair) for method, pair, _ in left_out(profile)}
    for pair in profile.pairs:
        for method in profile.method_names(pair):
            if (method, pair) in skip:
                continue
            for seed in profile.seeds:
                cells.append(_cell(profile, method, pair, seed))
                for variant, hp in profile.variants.get(method, {}).items():
                    base = _cell(profile, method, pair, seed)
                    cells.append(dataclasses.replace(base, hparams={**base.hparams, **hp}, variant=variant))
    return _distinct(cells)


def robustness_cells(profile: Profile) -> list[RunConfig]:
    if profile.robustness is None:
        return []
    rob, pair = profile.robustness, profile.pairs[0]
    cells = []
    for method in rob.methods:
        for seed in rob.seeds if rob.seeds is not None else profile.seeds:
            cells += [_cell(profile, method, pair, seed, label_noise=n) for n in rob.label_noise if n > 0]
            cells += [_cell(profile, method, pair, seed, imbalance_ratio=r) for r in rob.imbalance if r > 1]
    return _distinct(cells)


def all_cells(profile: Profile) -> list[RunConfig]:
    if profile.cells_from:
        return _cell_source(profile.cells_from)(profile)
    return main_cells(profile) + robustness_cells(profile)


def _cell_source(spec: str) -> Callable[[Profile], list[RunConfig]]:
    """The function a "module:function" spec names, imported on use (kdbench.claims imports this module)."""
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise KdbenchError(f"cells_from {spec!r} names no function; expected 'module:function'") from None


# ---- the built-in profiles ---------------------------------------------------------------------------------------
# One method (or two) per row of the survey's Table 4, and the references they are measured against: the cpu
# profile's methods. The zoo profile adds every other registered method on the first pair.
SURVEY_METHODS = (
    "kd",
    "dkd",
    "takd",
    "fitnet",
    "rkd",
    "sp",
    "dml",
    "byot",
    "pskd",
    "crossmodal",
    "irg",
    "at",
    "dafl",
    "deepinversion",
    "adversarial",
    "qkd",
    "nas",
    "lwf",
    "lifelong_joint",
    "multiteacher",
)
# The cpu profile's time budget (under 150 minutes from a cold start on 2 cores) leaves out the costliest second
# methods of a technique (DAFL beside DeepInversion, TAKD beside KD and DKD: the zoo profile runs them) and, on the
# different-family pair, runs the methods whose cross-architecture behaviour the literature tabulates. That pair's
# teacher is MobileNetV2 (RepDistiller's different-family architecture): 0.7 M parameters, so its checkpoint ships
# small, and on this CPU its training step is faster than vgg8's (3.9 M parameters). Its students train for twice
# the profile's epochs: at 10, kd's student (whose epoch-1 top-1 starts lower across families) has not caught up
# with the student alone (kd - baseline -0.92 +- 1.06); at 20, every seed gains, +0.78 +- 0.49 (results/design/
# kd-mobilenetv2-20-epochs.md), and at 30 more (kd-mobilenetv2-30-epochs.md).
CROSS_FAMILY_EPOCHS = 20
CPU_METHODS = tuple(m for m in SURVEY_METHODS if m not in ("dafl", "takd"))
CROSS_FAMILY_METHODS = ("kd", "dkd", "fitnet", "at", "rkd", "sp")
PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        description="Every method once on a tiny subset for one epoch: checks the plumbing, numbers mean nothing.",
        dataset="fashion-mnist",
        pairs=(Pair("cifar_resnet14", "cifar_resnet8"),),
        seeds=(0,),
        epochs=1,
        teacher_epochs=1,
        train_subset=256,
        test_subset=500,
        extra_teachers=("cifar_wrn_16_1",),
        hparams={"deepinversion": {"synthesis_steps": 2, "pool_size": 64}},
        variants={"nas": {"smallest": {"pick": "smallest"}}},
        robustness=Robustness(methods=("baseline",), label_noise=(0.0, 0.2), imbalance=(1.0, 10.0)),
        meaningful=False,
    ),
    "cpu": Profile(
        name="cpu",
        description=(
            "The default main job: bundled Fashion-MNIST, 5,000 training images, the short one-cycle recipe for 10 "
            "epochs, 5 seeds; every technique of the survey on a same-family pair, the canonical response, feature, "
            "attention and relation methods on a different-family pair sharing its resnet8 student (20 epochs: a "
            "teacher of another family pays off later); teachers trained on the whole training set, so they know "
            "more than a student can learn from its budget."
        ),
        dataset="fashion-mnist",
        pairs=(
            Pair("cifar_resnet20", "cifar_resnet8"),
            Pair(
                "cifar_mobilenetv2",
                "cifar_resnet8",
                "different-family",
                methods=CROSS_FAMILY_METHODS,
                epochs=CROSS_FAMILY_EPOCHS,
            ),
        ),
        seeds=(0, 1, 2, 3, 4),
        epochs=10,  # baseline's last epoch within 2 points of 3x the epochs (results/design/kd-10-epochs.md)
        teacher_epochs=3,
        train_subset=5000,
        teacher_train_subset=60000,
        recipe="short",
        methods=CPU_METHODS,
        extra_teachers=("cifar_wrn_16_2",),
        hparams={
            "deepinversion": {"synthesis_steps": 20},  # keeps the data-free cells within the time budget
            "dkd": {
                "warmup_fraction": 20 / 240
            },  # mdistiller's 20-epoch warm-up of 240, scaled to the schedule
        },
    ),
    "paper": Profile(
        name="paper",
        description="CIFAR-100 with the standard benchmark pairs and the 240-epoch recipe; needs a GPU and the data.",
        dataset="cifar100",
        pairs=(
            Pair("cifar_resnet56", "cifar_resnet20"),
            Pair("cifar_resnet110", "cifar_resnet32"),
            Pair("cifar_resnet32x4", "cifar_resnet8x4"),
            Pair("cifar_wrn_40_2", "cifar_wrn_16_2"),
            Pair("cifar_vgg13", "cifar_vgg8"),
            Pair("cifar_vgg13", "cifar_mobilenetv2", "different-family"),
            Pair("cifar_resnet32x4", "cifar_shufflenetv1", "different-family"),
            Pair("cifar_resnet32x4", "cifar_shufflenetv2", "different-family"),
        ),
        seeds=(0, 1, 2),
        epochs=240,
        teacher_epochs=240,
        train_subset=None,
        recipe="cifar",
        extra_teachers=("cifar_wrn_40_2",),
        variants={"nas": {"smallest": {"pick": "smallest"}, "largest": {"pick": "largest"}}},
        checkpoint_every=10,  # a killed 240-epoch cell loses at most 10 epochs
    ),
}

PROFILES["zoo"] = dataclasses.replace(
    PROFILES["cpu"],
    name="zoo",
    pairs=PROFILES["cpu"].pairs[:1],
    methods=None,
    robustness=None,
    # RepDistiller's headline "CRD+KD" row: -r 1 -a 1 -b 0.8, the Hinton term beside CRD's own
    variants={"crd": {"+kd": {"kd_weight": 1.0}}},
    results="cpu",
    description="Every registered method on the cpu profile's first pair, budget and seeds, into the cpu profile's "
    "records (the cells they share run once), so its tables and Table 4 include the canonical "
    "distillation zoo beside the survey's techniques.",
)

# Sarfraz et al.'s beyond-compression sweep on the cpu profile's first pair, budget and records: its own job, so the
# default main job's cold start stays within its time budget; its noisy and long-tailed teachers ship too.
PROFILES["robustness"] = dataclasses.replace(
    PROFILES["cpu"],
    name="robustness",
    pairs=(dataclasses.replace(PROFILES["cpu"].pairs[0], methods=()),),
    methods=(),
    extra_teachers=(),
    robustness=Robustness(methods=("baseline", "kd"), seeds=(0, 1, 2)),
    results="cpu",
    description="Does kd stay at or above the student trained alone under 20% and 40% symmetric label noise and "
    "class imbalance 10 and 100 (Sarfraz et al.)? baseline and kd on the cpu profile's first pair, budget and "
    "seeds 0-2, teachers trained on the same corrupted data, into the cpu profile's records.",
)

# Experiments with cells of their own (`cells_from`) on a grid profile's data budget, so they share its teachers.
EXPERIMENTS: dict[str, Profile] = {
    "claims": dataclasses.replace(
        PROFILES["cpu"],
        name="claims",
        cells_from="kdbench.claims:all_cells",
        hparams={},
        variants={},
        seeds=(0, 1, 2),
        reuses=("cpu",),
        description=(
            "The survey's Table 4 trade-off claims, each tested by a targeted experiment (kdbench.claims), on the "
            "cpu profile's data budget and teachers; under 3 hours on 2 CPU cores from a cold start."
        ),
    ),
}


def get_profile(name_or_path: str) -> Profile:
    """A built-in profile by name, or a user grid from a YAML file with the same fields."""
    if name_or_path in PROFILES:
        return PROFILES[name_or_path]
    if name_or_path in EXPERIMENTS:
        return EXPERIMENTS[name_or_path]
    if name_or_path.endswith((".yaml", ".yml")):
        return load_profile(name_or_path)
    raise unknown("profile", name_or_path, {**PROFILES, **EXPERIMENTS})


def on_dataset(profile: Profile, dataset: str | None) -> Profile:
    """`profile` with another dataset (None: unchanged), under a name of its own so its records go to a folder of
    their own; on a synthetic dataset it is a plumbing check (its numbers say nothing about distillation)."""
    if dataset is None or dataset == profile.dataset:
        return profile
    return dataclasses.replace(
        profile,
        name=f"{profile.name}-{dataset.replace(':', '-')}",
        dataset=dataset,
        results=None,
        meaningful=profile.meaningful and not dataset.startswith(SYNTHETIC),
        description=f"{profile.description} On {dataset} instead of {profile.dataset}.",
    )


def load_profile(path: str | Path) -> Profile:
    """Read a grid YAML file (fields as `Profile`); every field is checked before anything runs."""
    path = Path(path)
    raw = read_grid_file(path)
    check_fields(str(path), raw, Profile, optional=("name", "description"))
    check_types(str(path), raw, Profile)
    try:
        pairs = []
        for i, p in enumerate(raw["pairs"]):
            check_fields(f"{path}: pairs[{i}]", p, Pair)
            pairs.append(
                Pair(**{**p, "methods": tuple(p["methods"]) if p.get("methods") is not None else None})
            )
        rob = raw.get("robustness")
        if rob is not None:
            check_fields(f"{path}: robustness", rob, Robustness)
            rob = Robustness(**{k: None if v is None else tuple(v) for k, v in rob.items()})
        profile = Profile(
            **{
                **raw,
                "name": raw.get("name", path.stem),
                "description": raw.get("description", f"user grid {path}"),
                "pairs": tuple(pairs),
                "seeds": tuple(int(s) for s in raw["seeds"]),
                "robustness": rob,
                "methods": tuple(raw["methods"]) if raw.get("methods") is not None else None,
                "extra_teachers": tuple(raw.get("extra_teachers", ())),
                "reuses": tuple(raw.get("reuses", ())),
            }
        )
    except (TypeError, ValueError, AttributeError) as exc:
        raise KdbenchError(f"grid file {path}: bad value ({exc})") from None
    validate(profile)
    return profile


def validate(profile: Profile) -> None:
    """Resolve every cell now, so a bad method, model, dataset or value fails before any training."""
    from kdbench.data import dataset_info
    from kdbench.models import create_model

    dataset_info(profile.dataset)  # an unknown name raises, naming the valid ones
    for section in ("hparams", "variants"):  # settings for a misspelt method would be silently unused
        for name in getattr(profile, section):
            if name not in METHODS:
                raise unknown(f"method in {section}", name, METHODS)
    for arch in (
        {p.teacher for p in profile.pairs} | {p.student for p in profile.pairs} | set(profile.extra_teachers)
    ):
        create_model(arch, 10, 1)
    for cfg in all_cells(profile):
        cfg.resolve()


def profile_summary(profile: Profile) -> dict[str, Any]:
    """The profile as plain data, for the README and for results/<profile>/grid.yaml."""
    out = dataclasses.asdict(profile)
    cells = all_cells(profile)
    out["methods"] = sorted({c.method for c in cells}) if profile.cells_from else profile.method_names()
    out["cells"] = len(cells)
    return out
