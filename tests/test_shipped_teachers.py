"""Teachers shipped inside the package: exported from the cache, verified on load, used on a cache miss, and
retrained on request."""

import dataclasses
import json

import pytest
import torch
import torch.nn as nn

from kdbench import teachers
from kdbench.errors import KdbenchError, KdbenchWarning
from kdbench.profiles import get_profile
from kdbench.teacher_ship import profile_teacher_keys
from kdbench.teachers import TeacherCache, TeacherKey

KEY = TeacherKey("fashion-mnist", "tiny", "{}", 1, 64, 0, 0)
PROVENANCE = {"command": "pytest"}


def _build() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3))


class Trainer:
    """Counts trainings; "trains" by drawing weights from a seed."""

    def __init__(self, seed: int = 0) -> None:
        self.calls, self.seed = 0, seed

    def __call__(self, model: nn.Module) -> dict:
        self.calls += 1
        torch.manual_seed(self.seed)
        for p in model.parameters():
            nn.init.normal_(p)
        return {"top1": 50.0, "test_logits": torch.randn(5, 3), "train_time_s": 1.5}


@pytest.fixture
def shipped(tmp_path):
    """A folder holding KEY's teacher, exported from a cache that trained it."""
    cache = TeacherCache(tmp_path / "trained", shipped=None)
    trained = cache.get(KEY, _build, Trainer(seed=7))
    folder = tmp_path / "shipped"
    teachers.ship(cache, KEY, _build(), folder, PROVENANCE)
    return folder, trained


def test_a_cache_miss_loads_the_shipped_teacher_without_training(tmp_path, shipped):
    folder, trained = shipped
    trainer = Trainer()
    got = TeacherCache(tmp_path / "fresh", shipped=folder, retrain=False).get(KEY, _build, trainer)
    assert trainer.calls == 0 and got.from_cache and got.meta["source"] == teachers.SHIPPED_SOURCE
    for a, b in zip(got.model.state_dict().values(), trained.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(got.meta["test_logits"], trained.meta["test_logits"]) and got.meta["top1"] == 50.0
    assert json.loads((folder / f"{KEY.stem()}.json").read_text())["provenance"] == PROVENANCE
    again = TeacherCache(tmp_path / "fresh", shipped=None, retrain=False).get(KEY, _build, trainer)
    assert trainer.calls == 0 and again.meta["source"] == teachers.SHIPPED_SOURCE  # now in the local cache


def test_a_tampered_shipped_teacher_is_trained_instead(tmp_path, shipped):
    folder, _ = shipped
    weights = next(folder.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    trainer = Trainer()
    with pytest.warns(KdbenchWarning, match="SHA-256"):
        got = TeacherCache(tmp_path / "fresh", shipped=folder, retrain=False).get(KEY, _build, trainer)
    assert trainer.calls == 1 and not got.from_cache


def test_retrain_trains_a_shipped_teacher_once(tmp_path, shipped, monkeypatch):
    folder, _ = shipped
    root = tmp_path / "fresh"
    TeacherCache(root, shipped=folder, retrain=False).get(KEY, _build, Trainer())  # cached from the package
    monkeypatch.setenv(teachers.RETRAIN_ENV, "1")
    trainer = Trainer()
    first = TeacherCache(root, shipped=folder).get(KEY, _build, trainer)
    second = TeacherCache(root, shipped=folder).get(KEY, _build, trainer)
    assert trainer.calls == 1 and not first.from_cache and second.from_cache and "source" not in second.meta


def test_ship_refuses_what_it_cannot_vouch_for(tmp_path, shipped):
    folder, _ = shipped
    with pytest.raises(KdbenchError, match="not in the cache"):
        teachers.ship(TeacherCache(tmp_path / "empty"), KEY, _build(), tmp_path / "out", PROVENANCE)
    from_package = TeacherCache(tmp_path / "fresh", shipped=folder, retrain=False)
    from_package.get(KEY, _build, Trainer())
    with pytest.raises(KdbenchError, match="came from the package"):
        teachers.ship(from_package, KEY, _build(), tmp_path / "out", PROVENANCE)


@pytest.mark.parametrize("profile", ["cpu", "robustness", "zoo"])
def test_the_cpu_profiles_need_no_teacher_training(profile):
    """Every teacher the default main job and its companions ask for is in the package, and its sidecar names
    that teacher."""
    keys = profile_teacher_keys(get_profile(profile))
    assert keys
    for key in keys:
        weights, sidecar = teachers.checkpoint_paths(teachers.SHIPPED_DIR, key)
        assert weights.exists(), f"not shipped: {key.stem()}"
        assert json.loads(sidecar.read_text())["key"] == dataclasses.asdict(key)
