"""Registry-parametrized: every registered method builds, trains a few real steps through the engine and
produces finite losses, a deployable model that classifies, and consistent metadata."""

from __future__ import annotations

import math

import pytest

from kdbench.engine import RECIPES, fit
from kdbench.methods import METHODS, TECHNIQUES, catalogue, get_method
from kdbench.metrics import predict
from tests.conftest import make_setup

ALL = sorted(METHODS)


def test_every_technique_has_a_method_or_is_pending():
    covered = {t for cls in METHODS.values() for t in cls.info.techniques}
    assert covered <= set(TECHNIQUES) | {"Reference"}
    assert "baseline" in METHODS


@pytest.mark.parametrize("name", ALL)
def test_method_metadata(name):
    info = METHODS[name].info
    assert info.name == name
    assert info.reference and info.knowledge
    for key, value in METHODS[name].defaults.items():
        assert isinstance(key, str) and value is not None


@pytest.mark.parametrize("name", ALL)
def test_method_trains_a_few_steps(name, fashion, tiny_stream):
    cls = get_method(name)
    setup = make_setup(fashion, tiny_stream, teachers=max(cls.info.teachers, 1))
    method = cls(setup)
    stats = fit(method, tiny_stream, RECIPES["cpu"], epochs=1, progress=False)
    assert stats.epoch_losses, "no epoch ran"
    for epoch in stats.epoch_losses:
        assert epoch and all(math.isfinite(v) for v in epoch.values()), epoch
    model = method.deployable()
    logits, _ = predict(model, tiny_stream)
    assert logits.shape == (tiny_stream.num_samples, fashion.info.num_classes)
    assert method.extra_parameters() >= 0


def test_catalogue_lists_every_method():
    assert {row["name"] for row in catalogue()} == set(METHODS)
