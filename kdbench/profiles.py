"""Profiles: what a grid runs, apart from running it (`kdbench.grid`).

A profile names a dataset, teacher/student pairs, seeds, a training budget and the methods to run, and expands to
cells (one `RunConfig` each): every method on every pair and seed, named control variants, and the robustness
sweep. The built-in profiles are `PROFILES` (`kdbench.profile_catalog`); `EXPERIMENTS` are profiles whose cells come from elsewhere
(`cells_from`, a "module:function" such as the claims' `kdbench.claims:all_cells`) on a grid profile's data
budget. A user's profile is the same fields in a YAML file (`load_profile`), every field checked
(`kdbench.profile_yaml`) and every cell resolved (`validate`) before anything trains.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from kdbench.data.catalog import SYNTHETIC, dataset_info
from kdbench.errors import KdbenchError, unknown
from kdbench.methods import METHODS, get_method
from kdbench.methods.base import Method
from kdbench.models import create_model
from kdbench.profile_catalog import EXPERIMENTS, PROFILES
from kdbench.profile_types import Pair, Profile, Robustness
from kdbench.profile_yaml import check_fields, check_types, read_grid_file
from kdbench.runner import RunConfig


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
