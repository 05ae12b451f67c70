"""Warnings about runs whose numbers would mislead: a student larger than its teacher, a teacher that learnt
next to nothing. Both are legal (a debugging run, an experiment on reversed pairs), so they warn, once each,
instead of failing."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

from kdbench.errors import KdbenchWarning

CHANCE_MARGIN = 5.0  # top-1 points above chance under which a teacher is "at chance"


def check_pairs(pairs: Iterable[tuple[str, str]], dataset: str) -> None:
    """Warn for every (teacher, student) pair whose student has more parameters than its teacher."""
    from kdbench.data import dataset_info
    from kdbench.metrics import count_parameters
    from kdbench.models import create_model

    info = dataset_info(dataset)
    sizes: dict[str, int] = {}
    for teacher, student in dict.fromkeys(pairs):
        for arch in (teacher, student):
            if arch not in sizes:
                sizes[arch] = count_parameters(create_model(arch, info.num_classes, info.in_chans))
        if sizes[student] > sizes[teacher]:
            warnings.warn(
                f"student {student} has more parameters ({sizes[student]:,}) than its teacher {teacher} "
                f"({sizes[teacher]:,}): this distils into a larger model",
                KdbenchWarning,
                stacklevel=2,
            )


def check_teachers(records: Iterable[dict[str, Any]]) -> None:
    """Warn once for every teacher whose top-1 (in the records) is within CHANCE_MARGIN points of chance."""
    from kdbench.data import dataset_info, dataset_names

    seen = set()
    for record in records:
        top1, teacher = record.get("teacher_top1"), record.get("teacher")
        if top1 is None or teacher is None or record.get("dataset") not in dataset_names():
            continue
        chance = 100.0 / dataset_info(record["dataset"]).num_classes
        key = (teacher, round(top1, 2))
        if top1 < chance + CHANCE_MARGIN and key not in seen:
            seen.add(key)
            warnings.warn(
                f"teacher {teacher} reaches {top1:.1f}% top-1, within {CHANCE_MARGIN:g} points of chance "
                f"({chance:.1f}%): it has learnt next to nothing, so distilling from it means little; "
                "train it longer (--teacher-epochs, or teacher_epochs in a grid)",
                KdbenchWarning,
                stacklevel=2,
            )
