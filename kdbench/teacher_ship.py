"""Ship a profile's teachers inside the package (`kdbench teachers ship`): every teacher its cells ask for, exported
from the teacher cache with the record of what trained it, so the profile's cold start loads them (as RepDistiller
and mdistiller ship their CIFAR-100 teachers) and `--retrain-teachers` can reproduce them."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

import kdbench
from kdbench import env
from kdbench.data import dataset_info
from kdbench.models import create_model
from kdbench.profiles import Profile, all_cells
from kdbench.run_config import default_cache_dir
from kdbench.teacher_training import teacher_key
from kdbench.teachers import TeacherCache, TeacherKey, ship


def profile_teacher_keys(profile: Profile) -> list[TeacherKey]:
    """Each distinct teacher the profile's cells load, in the order the grid first asks for them."""
    keys = {teacher_key(cfg, i): None for cfg in all_cells(profile) for i in range(len(cfg.teachers))}
    return list(keys)


def provenance(profile: Profile) -> dict[str, object]:
    """What produced the teachers: the command that trains them (their key says with what data, recipe, epochs and
    seed), and the code, torch and machine of the export (the cache does not record where a teacher trained)."""
    return {
        "command": f"python run_all.py --profile {profile.name}",
        "exported_with": {
            "kdbench": kdbench.__version__,
            "git_commit": env.git_commit(),
            "torch": torch.__version__,
            "machine": env.cpu_model(),
            "platform": platform.platform(),
        },
    }


def ship_profile(profile: Profile, cache_dir: str | Path | None, dest: str | Path) -> list[Path]:
    """Export every teacher of `profile` from the cache to `dest`; a teacher missing from the cache, or one that
    itself came from the package, is an error naming it (train it first: run the profile)."""
    cache = TeacherCache(cache_dir or default_cache_dir(), shipped=None, retrain=False)
    info = dataset_info(profile.dataset)
    stamp = provenance(profile)
    return [
        ship(cache, key, create_model(key.arch, info.num_classes, info.in_chans), Path(dest), stamp)
        for key in profile_teacher_keys(profile)
    ]
