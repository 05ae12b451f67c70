"""Builders the test modules share: tiny grid files and profiles, and the argv of the commands they run often."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from kdbench.profiles import Pair, Profile

TEACHER, STUDENT = "cifar_resnet14", "cifar_resnet8"
KD_RUN = ["run", "--method", "kd", "--student", STUDENT, "--teacher", TEACHER]


def grid_yaml(
    methods: Sequence[str] = ("baseline",),
    *,
    seeds: Sequence[int] = (0,),
    train_subset: int = 64,
    test_subset: int | None = 100,
    teacher: str = TEACHER,
    name: str | None = None,
) -> str:
    """A one-pair, one-epoch grid file's text; tests edit single lines of it (`str.replace`)."""
    lines = [f"name: {name}"] if name else []
    lines += [
        "dataset: fashion-mnist",
        f"pairs: [{{teacher: {teacher}, student: {STUDENT}}}]",
        f"seeds: [{', '.join(map(str, seeds))}]",
        "epochs: 1",
        "teacher_epochs: 1",
        f"train_subset: {train_subset}",
    ]
    if test_subset is not None:
        lines.append(f"test_subset: {test_subset}")
    lines.append(f"methods: [{', '.join(methods)}]")
    return "\n".join(lines) + "\n"


def tiny_profile(
    name: str,
    methods: Sequence[str],
    *,
    teacher: str = TEACHER,
    train_subset: int = 128,
    test_subset: int = 100,
    recipe: str = "cpu",
) -> Profile:
    """A one-pair, one-seed, one-epoch profile, for tests that run a grid or a bench in-process."""
    return Profile(
        name=name,
        description="",
        dataset="fashion-mnist",
        pairs=(Pair(teacher, STUDENT),),
        seeds=(0,),
        epochs=1,
        teacher_epochs=1,
        train_subset=train_subset,
        recipe=recipe,
        test_subset=test_subset,
        methods=tuple(methods),
    )


def grid_argv(grid_file: str | Path, out: Path, cache: Path, *extra: str) -> list[str]:
    """`kdbench grid` on a grid file, into the given results and cache folders, quietly, on CPU."""
    return [
        "grid",
        "--grid",
        str(grid_file),
        "--results-dir",
        str(out),
        "--cache-dir",
        str(cache),
        "--device",
        "cpu",
        "--quiet",
        *extra,
    ]
