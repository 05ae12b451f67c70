"""Cross-modal distillation: the paired modalities are what they claim, the student sees only its modality
while the teacher sees the image, and the deployed model classifies raw images."""

from __future__ import annotations

import pytest
import torch

from kdbench.data.modalities import ModalityTransform, edges, profile
from kdbench.errors import KdbenchError
from kdbench.methods import get_method
from kdbench.methods.crossmodal import ProfileMLP
from tests.conftest import make_setup


def test_profile_is_row_then_column_means():
    x = torch.zeros(2, 3, 4, 5)
    x[0, :, 1, :] = 2.0  # a bright row 1 in every channel
    x[1, 0, :, 3] = 3.0  # a bright column 3 in one channel of three
    p = profile(x)
    assert p.shape == (2, 4 + 5)
    assert torch.allclose(p[0, :4], torch.tensor([0.0, 2.0, 0.0, 0.0]))
    assert torch.allclose(p[0, 4:], torch.full((5,), 2.0 / 4))
    assert torch.allclose(p[1, 4:], torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0]))


def test_edges_vanish_on_flat_regions_and_mark_a_step():
    flat = torch.full((1, 1, 8, 8), 0.7)
    e = edges(flat)
    assert e.shape == flat.shape
    assert e[..., 1:-1, 1:-1].abs().max() < 1e-5  # the zero padding only shows at the border
    step = torch.zeros(1, 1, 8, 8)
    step[..., 4:] = 1.0
    e = edges(step)[0, 0, 2:-2]
    assert (
        (e[:, 3:5] > 1).all() and (e[:, 1:3] < 1e-5).all() and (e[:, 6] < 1e-5).all()
    )  # col 7 meets the padding


def test_unknown_modality_names_the_choices(fashion, tiny_stream):
    with pytest.raises(KdbenchError, match="edges, profile"):
        get_method("crossmodal")(make_setup(fashion, tiny_stream), modality="depth")
    with pytest.raises(KdbenchError, match="edges, profile"):
        ModalityTransform("audio")


@pytest.mark.parametrize("modality", ["edges", "profile"])
def test_student_sees_only_its_modality_and_teacher_the_image(fashion, tiny_stream, modality):
    method = get_method("crossmodal")(make_setup(fashion, tiny_stream), modality=modality)
    seen_student, seen_teacher = [], []
    method.student.register_forward_pre_hook(lambda _m, inp: seen_student.append(inp[0].detach()))
    method.teacher.register_forward_pre_hook(lambda _m, inp: seen_teacher.append(inp[0].detach()))
    batch = next(tiny_stream.epoch(0))
    terms = method.loss_terms(batch)
    assert set(terms) == {"ce", "kd"}
    (student_input,) = seen_student
    (teacher_input,) = seen_teacher
    assert torch.equal(teacher_input, batch.x)
    transform = profile if modality == "profile" else edges
    assert torch.allclose(student_input, transform(batch.x))
    if modality == "profile":
        assert isinstance(method.student, ProfileMLP) and student_input.shape == (len(batch), 56)
        assert method.record_extras()["student_arch"].startswith("profile_mlp")


@pytest.mark.parametrize("modality", ["edges", "profile"])
def test_deployable_classifies_raw_images(fashion, tiny_stream, modality):
    method = get_method("crossmodal")(make_setup(fashion, tiny_stream), modality=modality).eval()
    x = next(tiny_stream.epoch(0)).x
    with torch.no_grad():
        logits = method.deployable()(x)
        assert logits.shape == (len(x), 10)
        assert torch.allclose(logits, method.student(method.transform(x)))
    assert method.extra_parameters() == 0  # the transform has no parameters


def test_alignment_term_trains_a_projector(fashion, tiny_stream):
    method = get_method("crossmodal")(make_setup(fashion, tiny_stream), modality="profile", align_weight=1.0)
    assert (
        method.projector.in_features == 256 and method.projector.out_features == 64
    )  # MLP → resnet14 widths
    terms = method.loss_terms(next(tiny_stream.epoch(0)))
    assert terms["align"] > 0
    terms["align"].backward()
    assert method.projector.weight.grad.abs().sum() > 0
    assert method.student.block1[0].weight.grad.abs().sum() > 0
    assert method.extra_parameters() == sum(p.numel() for p in method.projector.parameters())


def test_baseline_is_the_same_student_without_a_teacher(fashion, tiny_stream):
    base = get_method("crossmodal_baseline")
    assert base.info.teachers == 0 and base.info.technique == "Reference"
    assert get_method("crossmodal").info.compare_to == "crossmodal_baseline"
    method = base(make_setup(fashion, tiny_stream, teachers=0), modality="profile")
    assert isinstance(method.student, ProfileMLP)
    assert set(method.loss_terms(next(tiny_stream.epoch(0)))) == {"ce"}
