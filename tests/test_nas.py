"""NAS-based distillation: the search respects the budget, the chosen network is the one trained and
deployed, and the training-free proxy measures teacher similarity."""

from __future__ import annotations

import pytest
import torch

from kdbench.engine import RECIPES, fit
from kdbench.errors import KdbenchError
from kdbench.methods import get_method
from kdbench.methods.nas import SEARCH_SPACE, diswot_score
from tests.conftest import make_setup


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_search_respects_the_budget_and_trains_the_chosen_student(fashion, tiny_stream):
    method = get_method("nas")(make_setup(fashion, tiny_stream), param_budget=200_000)
    chosen_at_start = {}
    search = method.before_training

    def before_training():
        search()
        chosen_at_start.update({k: v.clone() for k, v in method.student.state_dict().items()})

    method.before_training = before_training
    fit(method, tiny_stream, RECIPES["cpu"], epochs=1, progress=False)
    extras = method.record_extras()
    assert extras["chosen_params"] <= 200_000 == extras["param_budget"]
    assert _count(method.deployable()) == extras["chosen_params"]
    assert extras["chosen_arch"] in {"cifar_resnet8_w1", "cifar_resnet14_w1"}  # the two that fit
    scored = {c["arch"]: c["score"] for c in extras["candidates"] if c["in_budget"]}
    assert set(scored) == {"cifar_resnet8_w1", "cifar_resnet14_w1"}
    assert extras["chosen_arch"] == max(scored, key=scored.get)
    assert all(c["score"] is None for c in extras["candidates"] if not c["in_budget"])
    assert len(extras["candidates"]) == len(SEARCH_SPACE) and extras["search_time_s"] > 0
    # the optimiser was built after the search: the chosen network itself was trained
    after = method.student.state_dict()
    assert any(not torch.equal(v, after[k]) for k, v in chosen_at_start.items() if v.is_floating_point())


def test_budget_no_candidate_fits_names_the_smallest(fashion, tiny_stream):
    with pytest.raises(KdbenchError, match=r"cifar_resnet8_w1, has 77754 parameters"):
        get_method("nas")(make_setup(fashion, tiny_stream), param_budget=50_000)


@pytest.mark.parametrize(
    ("pick", "arch"), [("smallest", "cifar_resnet8_w1"), ("largest", "cifar_resnet8_w2")]
)
def test_extreme_candidates_within_the_budget(fashion, tiny_stream, pick, arch):
    method = get_method("nas")(make_setup(fashion, tiny_stream), pick=pick)  # default budget 350k
    method.before_training()
    assert method.record_extras()["chosen_arch"] == arch
    assert all(c["score"] is None for c in method.record_extras()["candidates"])


def test_bad_pick_is_rejected(fashion, tiny_stream):
    with pytest.raises(KdbenchError, match="largest, search, smallest"):
        get_method("nas")(make_setup(fashion, tiny_stream), pick="random")


def test_proxy_is_zero_for_the_teacher_itself_and_negative_otherwise(fashion, tiny_stream):
    setup = make_setup(fashion, tiny_stream)
    teacher = setup.teachers[0]
    batches = [next(tiny_stream.epoch(0)).x]
    assert diswot_score(teacher, teacher, batches) == pytest.approx(0.0, abs=1e-6)
    candidate = SEARCH_SPACE[0].build(10, 1)
    state = {k: v.clone() for k, v in candidate.state_dict().items()}
    assert diswot_score(teacher, candidate, batches) < 0
    # scoring leaves the candidate as it was (batch-norm statistics included)
    assert all(torch.equal(v, candidate.state_dict()[k]) for k, v in state.items())
