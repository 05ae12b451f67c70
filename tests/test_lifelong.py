"""Lifelong distillation: the class-incremental protocol, the snapshot teacher and EWC anchor of LwF, the joint
upper bound's cumulative data, the forgetting summary, and per-task accuracy after every task end to end."""

from __future__ import annotations

import math
import struct

import pytest
import torch

from kdbench.data import BatchStream
from kdbench.engine import RECIPES, fit
from kdbench.errors import KdbenchError
from kdbench.methods import get_method
from kdbench.methods.lifelong import class_incremental_tasks, forgetting, lifelong_summary
from kdbench.runner import RunConfig, run
from tests.conftest import make_setup


def test_class_incremental_tasks():
    assert class_incremental_tasks(10, 5) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert [len(t) for t in class_incremental_tasks(10, 3)] == [4, 3, 3]
    with pytest.raises(KdbenchError, match="num_tasks"):
        class_incremental_tasks(10, 11)


def test_forgetting_and_average_accuracy():
    acc = [[90.0, 0.0, 0.0], [50.0, 80.0, 0.0], [30.0, 60.0, 70.0]]
    # task 0 fell from its best 90 to 30, task 1 from 80 to 60; the last task cannot have been forgotten
    assert forgetting(acc) == pytest.approx((60 + 20) / 2)
    assert lifelong_summary(acc) == {
        "avg_accuracy": pytest.approx(160 / 3),
        "avg_forgetting": pytest.approx(40),
    }
    assert forgetting([[50.0]]) is None


@pytest.fixture
def six_class_stream(fashion):
    keep = fashion.y_train[:120] < 6
    return BatchStream(fashion.x_train[:120][keep], fashion.y_train[:120][keep], fashion.info, batch_size=16)


def _labels_per_task(method, stream):
    seen: dict[int, set[int]] = {}
    inner = method.loss_terms

    def spy(batch):
        seen.setdefault(method.task_index, set()).update(batch.y.tolist())
        return inner(batch)

    method.loss_terms = spy
    fit(method, stream, RECIPES["cpu"], epochs=1, progress=False)
    return seen


def test_lwf_and_finetune_train_on_the_current_task_joint_on_all_seen(fashion, six_class_stream):
    for name, expected in [
        ("lwf", {0: {0, 1}, 1: {2, 3}, 2: {4, 5}}),
        ("lifelong_finetune", {0: {0, 1}, 1: {2, 3}, 2: {4, 5}}),
        ("lifelong_joint", {0: {0, 1}, 1: {0, 1, 2, 3}, 2: {0, 1, 2, 3, 4, 5}}),
    ]:
        method = get_method(name)(make_setup(fashion, six_class_stream, teachers=0), num_tasks=5)
        method.tasks = lambda _c: [[0, 1], [2, 3], [4, 5]]  # the first three tasks are enough here
        assert _labels_per_task(method, six_class_stream) == expected, name


def _of_classes(stream, classes):
    """A batch of `stream` holding only `classes`, as the engine hands a task."""
    return next(stream.subset(torch.isin(stream.labels, torch.tensor(classes))).epoch(0))


def test_lwf_distils_a_frozen_snapshot_on_the_old_classes(fashion, six_class_stream):
    method = get_method("lwf")(make_setup(fashion, six_class_stream, teachers=0), num_tasks=5)
    batch = _of_classes(six_class_stream, [0, 1])
    method.on_task_start(0, [0, 1])
    assert set(method.loss_terms(batch)) == {"ce"}
    method.on_task_start(1, [2, 3])
    (previous,) = method._previous
    assert method.old_classes == [0, 1]
    assert previous is not method.student and not previous.training
    assert all(not p.requires_grad for p in previous.parameters())
    assert method.extra_parameters() == 0  # the snapshot is neither trained nor counted
    before = {k: v.clone() for k, v in previous.state_dict().items()}
    terms = method.loss_terms(_of_classes(six_class_stream, [2, 3]))
    assert set(terms) == {"ce", "lwf"}
    sum(terms.values()).backward()
    assert method.student.fc.weight.grad.abs().sum() > 0
    assert all(torch.equal(v, previous.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize("name", ["lwf", "lifelong_finetune", "lifelong_joint"])
def test_a_new_task_begins_with_the_warm_up_step_on_its_own_outputs(fashion, six_class_stream, name):
    """LwF's warm-up step: entering task 1 trains the new classes' outputs alone; the body (batch-norm
    statistics included) and the old classes' outputs are exactly as task 0 left them."""
    method = get_method(name)(make_setup(fashion, six_class_stream, teachers=0))
    method.tasks = lambda _c: [[0, 1], [2, 3], [4, 5]]
    method.on_training_data(six_class_stream)
    method.on_task_start(0, [0, 1])
    before = {k: v.clone() for k, v in method.student.state_dict().items()}
    method.on_task_start(1, [2, 3])
    after = method.student.state_dict()
    changed = {k for k, v in before.items() if not torch.equal(v, after[k])}
    assert changed == {"fc.weight", "fc.bias"}
    moved = (after["fc.weight"] != before["fc.weight"]).any(dim=1)
    assert moved.nonzero().flatten().tolist() == [2, 3]
    assert method.seen == [0, 1, 2, 3] and method.student.training


def test_outputs_of_classes_not_yet_seen_are_not_trained(fashion, six_class_stream):
    """The head grows with the tasks: during task 0 the later classes' outputs get no gradient."""
    method = get_method("lifelong_finetune")(make_setup(fashion, six_class_stream, teachers=0))
    method.on_task_start(0, [0, 1])
    sum(method.loss_terms(_of_classes(six_class_stream, [0, 1])).values()).backward()
    grad = method.student.fc.weight.grad.abs().sum(dim=1)
    assert (grad[:2] > 0).all() and (grad[2:] == 0).all()


def test_ewc_anchors_the_weights_of_finished_tasks(fashion, six_class_stream):
    method = get_method("lwf")(
        make_setup(fashion, six_class_stream, teachers=0), ewc_weight=100.0, head_warmup_epochs=0
    )  # no warm-up step: the weights stay at the anchor
    method.on_training_data(six_class_stream)
    method.on_task_start(0, [0, 1])
    assert not method.anchors
    method.on_task_start(1, [2, 3])
    ((fisher, anchor),) = method.anchors
    assert set(fisher) == {n for n, _ in method.student.named_parameters()}
    assert all((f >= 0).all() for f in fisher.values()) and sum(f.sum() for f in fisher.values()) > 0
    assert method.ewc_penalty().item() == 0.0  # at the anchor
    with torch.no_grad():
        for p in method.student.parameters():
            p.add_(0.01)
    assert method.ewc_penalty().item() > 0
    assert "ewc" in method.loss_terms(_of_classes(six_class_stream, [2, 3]))


def _write_idx(path, tensor: torch.Tensor, magic: int) -> None:
    dims = tensor.shape
    with open(path, "wb") as fh:
        fh.write(struct.pack(f">i{len(dims)}i", magic, *dims))
        fh.write(tensor.to(torch.uint8).numpy().tobytes())


@pytest.fixture
def small_fashion_root(fashion, tmp_path):
    """A Fashion-MNIST folder with 600 training and 300 test images, so an end-to-end run evaluates fast."""
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    _write_idx(raw / "train-images-idx3-ubyte", fashion.x_train[:600, 0], 2051)
    _write_idx(raw / "train-labels-idx1-ubyte", fashion.y_train[:600], 2049)
    _write_idx(raw / "t10k-images-idx3-ubyte", fashion.x_test[:300, 0], 2051)
    _write_idx(raw / "t10k-labels-idx1-ubyte", fashion.y_test[:300], 2049)
    return tmp_path / "data"


def test_runner_reports_accuracy_per_task_after_every_task(small_fashion_root, tmp_path):
    cfg = RunConfig(method="lwf", student="cifar_resnet8", train_subset=200, epochs=1)
    record = run(
        cfg,
        device="cpu",
        results_dir=tmp_path / "results",
        cache_dir=tmp_path / "cache",
        data_root=small_fashion_root,
        progress=False,
        latency_repeats=1,
    )
    extras = record["extras"]
    assert record["test_samples"] == 300
    assert extras["task_classes"] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    acc = extras["task_accuracy"]
    assert len(acc) == 5 and all(len(row) == 5 for row in acc)
    assert all(0 <= a <= 100 for row in acc for a in row)
    assert extras["avg_accuracy"] == pytest.approx(sum(acc[-1]) / 5)
    assert extras["avg_forgetting"] == pytest.approx(forgetting(acc))
    assert math.isfinite(extras["avg_forgetting"])
    assert record["compare_to"] == "lifelong_finetune"
