"""Online (DML) and self-distillation (BYOT, PS-KD): the peers, heads and per-sample memories behave as the
papers describe."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbench.data import BatchStream
from kdbench.engine import RECIPES, fit
from kdbench.methods import get_method
from tests.conftest import make_setup


def _params(module):
    return {id(p) for p in module.parameters()}


def test_dml_kl_term_alone_reaches_every_peer(fashion, tiny_stream):
    method = get_method("dml")(make_setup(fashion, tiny_stream, teachers=0), peers=3)
    assert len(method.peers) == 3 and method.deployable() is method.peers[0] is method.student
    # peers are independently initialised copies of the student's architecture
    w0, w1 = method.peers[0].conv1.weight, method.peers[1].conv1.weight
    assert w0.shape == w1.shape and not torch.equal(w0, w1)
    terms = method.loss_terms(next(tiny_stream.epoch(0)))
    terms["kl"].backward()
    for k, peer in enumerate(method.peers):
        grads = [p.grad for p in peer.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads), f"peer {k} got no gradient from the KL term"
    # the non-deployed peers are the extra training-time parameters
    assert method.extra_parameters() == sum(p.numel() for p in method.others.parameters())


def test_dml_kl_is_zero_between_identical_peers(fashion, tiny_stream):
    method = get_method("dml")(make_setup(fashion, tiny_stream, teachers=0))
    method.others[0].load_state_dict(method.student.state_dict())
    terms = method.loss_terms(next(tiny_stream.epoch(0)))
    assert terms["kl"].abs().item() < 1e-6


def test_byot_heads_are_trained_but_not_deployed(fashion, tiny_stream):
    method = get_method("byot")(make_setup(fashion, tiny_stream, teachers=0))
    assert len(method.heads) == 2  # resnet8: heads on layer1 and layer2, the deepest layer3 teaches them
    deployed, heads = _params(method.deployable()), _params(method.heads)
    assert not deployed & heads
    assert method.extra_parameters() == sum(p.numel() for p in method.heads.parameters())
    terms = method.loss_terms(next(tiny_stream.epoch(0)))
    assert set(terms) == {"ce", "kd", "feature"}
    # the KD term flows from the deepest classifier into the heads, never back into the deepest classifier
    terms["kd"].backward()
    assert method.student.fc.weight.grad is None
    assert all(h.fc.weight.grad is not None and h.fc.weight.grad.abs().sum() > 0 for h in method.heads)


def test_byot_trains_through_the_engine(fashion, tiny_stream):
    method = get_method("byot")(make_setup(fashion, tiny_stream, teachers=0))
    before = [h.fc.weight.detach().clone() for h in method.heads]
    fit(method, tiny_stream, RECIPES["cpu"], epochs=1, progress=False)
    assert all(not torch.equal(b, h.fc.weight) for b, h in zip(before, method.heads, strict=True))


def test_pskd_mixes_the_label_with_last_epochs_prediction(fashion):
    # indices into the full split, far beyond the subset's size: the memory must map them, not assume 0..n-1
    index = torch.arange(32) + 50_000
    stream = BatchStream(fashion.x_train[:32], fashion.y_train[:32], fashion.info, batch_size=16, index=index)
    method = get_method("pskd")(make_setup(fashion, stream, teachers=0, epochs=4))
    method.on_training_data(stream)
    method.eval()  # deterministic logits, so the stored prediction can be recomputed
    batch = next(stream.epoch(0))
    first = method.loss_terms(batch)["ce"]
    logits = method.student(batch.x)
    # first visit: no past prediction, the target is the one-hot label
    assert torch.allclose(first, F.cross_entropy(logits, batch.y), atol=1e-5)
    method.epoch = 1
    alpha = 0.8 * 2 / 4  # alpha_T · (epoch + 1) / epochs
    assert abs(method.alpha() - alpha) < 1e-9
    target = (1 - alpha) * F.one_hot(batch.y, 10).float() + alpha * logits.softmax(1)
    second = method.loss_terms(batch)["ce"]
    assert torch.allclose(second, -(target * logits.log_softmax(1)).sum(1).mean(), atol=1e-5)
    # samples not in this batch have not been seen yet
    assert int(method.seen.sum()) == len(batch)
