"""adversarial: the discriminator learns to separate real from fake, its step never reaches the student, the
student's step fools it, and the student runs once per step."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbench.methods import get_method
from kdbench.methods.adversarial import Discriminator, discriminator_loss, generator_loss
from tests.conftest import make_setup

torch.set_num_threads(1)  # 2 threads on a shared 2-core machine spin: one is many times faster


def test_discriminator_loss_falls_on_separable_inputs():
    torch.manual_seed(0)
    d = Discriminator(10, 32)
    opt = torch.optim.Adam(d.parameters(), lr=1e-3, betas=(0.5, 0.999))
    g = torch.Generator().manual_seed(0)
    real = F.softmax(
        torch.randn(64, 10, generator=g) * 0.5 + 6 * F.one_hot(torch.zeros(64, dtype=torch.long), 10), 1
    )
    fake = F.softmax(
        torch.randn(64, 10, generator=g) * 0.5, 1
    )  # near uniform: separable from the peaked real

    def total() -> torch.Tensor:
        return sum(discriminator_loss(d, real, fake).values())

    start = total().item()
    for _ in range(150):
        opt.zero_grad()
        total().backward()
        opt.step()
    end = total().item()
    assert end < 0.2 * start, (start, end)
    assert generator_loss(d, fake).item() > generator_loss(d, real).item()  # fooling it is now hard for fakes


def _method(fashion, tiny_stream):
    return get_method("adversarial")(make_setup(fashion, tiny_stream))


def test_discriminator_is_auxiliary_and_extra(fashion, tiny_stream):
    method = _method(fashion, tiny_stream)
    d_params = {id(p) for p in method.discriminator.parameters()}
    assert {id(p) for p in method.auxiliary_parameters()} == d_params
    assert not d_params & {id(p) for p in method.trainable_parameters()}
    assert method.extra_parameters() == sum(p.numel() for p in method.discriminator.parameters())


def test_discriminator_step_leaves_the_student_alone_and_student_step_fools_it(fashion, tiny_stream):
    method = _method(fashion, tiny_stream)
    batch = next(tiny_stream.epoch(0))
    aux = method.auxiliary_loss(batch)
    assert set(aux) == {"d_real", "d_fake"}
    sum(aux.values()).backward()
    assert all(p.grad is None for p in method.student.parameters())
    assert all(p.grad is not None for p in method.discriminator.parameters())

    terms = method.loss_terms(batch)
    assert set(terms) == {"ce", "kd", "adv"}
    method.zero_grad(set_to_none=True)
    terms["adv"].backward()
    grads = [p.grad for p in method.student.parameters()]
    assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)


def test_student_runs_once_per_step_on_the_same_batch(fashion, tiny_stream):
    method = _method(fashion, tiny_stream)
    calls = []
    method.student.register_forward_hook(lambda *_: calls.append(1))
    first, second = list(tiny_stream.epoch(0))[:2]
    method.auxiliary_loss(first)
    method.loss_terms(first)
    assert len(calls) == 1
    method.loss_terms(second)  # no discriminator step before: a fresh forward pass
    assert len(calls) == 2
    method.auxiliary_loss(first)
    method.loss_terms(second)  # a different batch than the one kept: never reuse it
    assert len(calls) == 4
