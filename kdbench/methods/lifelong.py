"""Lifelong distillation: classes arrive in a sequence of tasks and the model must not forget the old ones.

Every method here trains one single-headed model on a class-incremental sequence (the engine restricts the
stream to each task's classes and builds a fresh optimiser per task; the runner evaluates after every task
and stores `task_accuracy[t][k]`, accuracy on task k's classes after task t, with argmax over all classes).
LwF distils the model's own previous version on the old classes, optionally with EWC's weight anchoring;
`lifelong_finetune` (no retention) and `lifelong_joint` (all data seen so far) bound it from below and above.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.data.loader import Batch, BatchStream
from kdbench.errors import KdbenchError
from kdbench.losses import kd_loss
from kdbench.methods.base import Method, MethodInfo, Setup, register_method
from kdbench.metrics import accuracy


def class_incremental_tasks(num_classes: int, num_tasks: int) -> list[list[int]]:
    """Classes 0..C-1 in order, cut into `num_tasks` contiguous tasks of (near-)equal size:
    10 classes, 5 tasks → [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]."""
    if not 1 <= num_tasks <= num_classes:
        raise KdbenchError(f"num_tasks must be between 1 and the {num_classes} classes, got {num_tasks}")
    return [chunk.tolist() for chunk in torch.arange(num_classes).tensor_split(num_tasks)]


def forgetting(task_accuracy: list[list[float]]) -> float | None:
    """Average forgetting (Chaudhry et al. 2018): over every task k but the last, the drop from its best
    accuracy after any earlier task to its accuracy after the last one; None with a single task."""
    if len(task_accuracy) < 2:
        return None
    last = task_accuracy[-1]
    drops = [max(row[k] for row in task_accuracy[:-1]) - last[k] for k in range(len(task_accuracy) - 1)]
    return sum(drops) / len(drops)


def lifelong_summary(task_accuracy: list[list[float]]) -> dict[str, float | None]:
    """`avg_accuracy`: mean accuracy over all tasks after the last one (equals the accuracy on all classes
    when tasks have equally many test samples); `avg_forgetting`: see `forgetting`."""
    last = task_accuracy[-1] if task_accuracy else []
    return {
        "avg_accuracy": sum(last) / len(last) if last else None,
        "avg_forgetting": forgetting(task_accuracy),
    }


class ClassIncremental(Method):
    """The task sequence every lifelong row shares; subclasses add what carries knowledge across tasks.

    Each task after the first begins with LwF's warm-up step (Li & Hoiem 2016, sec. 3): the body and the old
    classes' outputs frozen, the new classes' outputs trained alone on the new task, then everything together.
    Without it the new classes start far below the old ones, and the first loss (6-13 nats here) kills the
    body's features: the student ends at chance on every later task. The bounds (fine-tuning, joint training)
    take the same step, so lwf differs from them only in what it distils."""

    defaults = {
        "num_tasks": 5,  # kdbench: the common split-MNIST / split-CIFAR-10 protocol of 5 two-class tasks
        "head_warmup_epochs": 3,  # kdbench: passes over the new task's data for the warm-up step (0 = none)
    }

    def __init__(self, setup: Setup, **hparams) -> None:
        super().__init__(setup, **hparams)
        self.seen: list[int] = []  # the classes of every task begun so far: the outputs the head has grown to
        self._stream: BatchStream | None = None
        self.task_accuracy: list[list[float]] = []  # after task t: the accuracy on each task's test classes

    def tasks(self, num_classes: int) -> list[list[int]]:
        return class_incremental_tasks(num_classes, self.hp["num_tasks"])

    def on_training_data(self, stream: BatchStream) -> None:
        self._stream = stream

    def after_task(self, task_index: int, logits: torch.Tensor, labels: torch.Tensor) -> None:
        tasks = self.tasks(self.setup.data.num_classes)
        masks = [torch.isin(labels, torch.tensor(classes, device=labels.device)) for classes in tasks]
        self.task_accuracy.append([accuracy(logits[m], labels[m]) for m in masks])

    def record_extras(self) -> dict[str, Any]:
        """The task sequence, the accuracy on every task after each, and their summary (avg_accuracy,
        avg_forgetting)."""
        return {
            "task_classes": self.tasks(self.setup.data.num_classes),
            "task_accuracy": self.task_accuracy,
            **lifelong_summary(self.task_accuracy),
        }

    def task_stream(self, classes: list[int]) -> BatchStream:
        """The training samples of `classes`."""
        assert self._stream is not None, "on_training_data comes first"
        return self._stream.subset(
            torch.isin(self._stream.labels, torch.tensor(classes, device=self._stream.device))
        )

    def on_task_start(self, task_index: int, classes: list[int]) -> None:
        tasks = self.tasks(self.setup.data.num_classes)
        self.seen = sorted(c for task in tasks[: task_index + 1] for c in task)
        if task_index > 0 and self.hp["head_warmup_epochs"] > 0 and self._stream is not None:
            self.warm_up_head(self.task_stream(self.task_training_classes(task_index, tasks)), classes)

    def warm_up_head(self, stream: BatchStream, new: list[int]) -> None:
        """Train the outputs of the `new` classes alone on `stream`, the rest of the network fixed (evaluation
        mode, so batch-norm statistics stay too)."""
        head, was_training = self.student.get_classifier(), self.student.training
        frozen = torch.ones(head.out_features, dtype=torch.bool, device=head.weight.device)
        frozen[new] = False
        lr = self.setup.recipe.lr if self.setup.recipe is not None else 0.1
        opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9)
        self.student.eval()
        for epoch in range(self.hp["head_warmup_epochs"]):
            for batch in stream.epoch(epoch):
                with torch.no_grad():
                    features = self.student.forward_head(
                        self.student.forward_features(batch.x), pre_logits=True
                    )
                opt.zero_grad(set_to_none=True)
                self.seen_ce(head(features), batch.y).backward()
                head.weight.grad[frozen] = 0
                head.bias.grad[frozen] = 0
                opt.step()
        self.student.train(was_training)

    def seen_ce(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the outputs of the classes seen so far only, as LwF's head grows a node per new
        class: a class that has not arrived is not trained as a negative before its task."""
        if not self.seen:  # outside a task sequence (a bench step): the whole head
            return F.cross_entropy(logits, y)
        cols = torch.tensor(self.seen, device=logits.device)
        return F.cross_entropy(logits[:, cols], torch.searchsorted(cols, y))

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        # single head: the labels name the current task's classes (all seen ones for joint training)
        return {"ce": self.seen_ce(self.student(batch.x), batch.y)}


def diagonal_fisher(model: nn.Module, stream: BatchStream) -> dict[str, torch.Tensor]:
    """EWC's diagonal Fisher information on one pass over `stream`: the squared gradient of the log-likelihood
    of the true labels, per batch (the batch-level empirical Fisher of common EWC code), averaged over batches.
    Batch-norm statistics are left untouched (evaluation mode)."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    was_training, batches = model.training, 0
    model.eval()
    for batch in stream.epoch(0):
        grads = torch.autograd.grad(F.cross_entropy(model(batch.x), batch.y), list(params.values()))
        for name, g in zip(params, grads, strict=True):
            fisher[name] += g.detach().pow(2)
        batches += 1
    model.train(was_training)
    return {n: f / max(batches, 1) for n, f in fisher.items()}


@register_method
class LwF(ClassIncremental):
    info = MethodInfo(
        name="lwf",
        technique="Lifelong Distillation",
        scheme="offline",
        knowledge="response (the previous model's outputs on the old classes)",
        reference="Li & Hoiem 2016, Learning without Forgetting; optional EWC term: Kirkpatrick et al. 2017, "
        "Overcoming Catastrophic Forgetting in Neural Networks",
        teachers=0,
        summary="Class-incremental tasks; cross-entropy on the current task plus T²-scaled KL from a frozen "
        "snapshot of the model taken before the task, on the old classes; optionally EWC's Fisher-weighted anchor.",
        compare_to="lifelong_finetune",
    )
    defaults = {
        **ClassIncremental.defaults,
        "temperature": 2.0,  # Li & Hoiem 2016, sec. 3: T = 2 for the old-task outputs
        "lwf_weight": 1.0,  # Li & Hoiem 2016, eq. 1: loss balance lambda_o = 1
        # Kirkpatrick et al. 2017 (survey eq. 3.4.1.2): lambda/2 · sum_i F_i (theta_i - theta*_i)²; 0 = off
        "ewc_weight": 0.0,
    }

    def __init__(self, setup: Setup, **hparams) -> None:
        super().__init__(setup, **hparams)
        self._previous: list[nn.Module] = []  # a plain list: a frozen snapshot is neither trained nor counted
        self.old_classes: list[int] = []
        self.anchors: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = []  # (Fisher, theta*)

    def on_task_start(self, task_index: int, classes: list[int]) -> None:
        if task_index > 0:  # the snapshot and the anchor are of the model as the last task left it
            tasks = self.tasks(self.setup.data.num_classes)
            self._previous = [copy.deepcopy(self.student).eval().requires_grad_(False)]
            self.old_classes = sorted(c for task in tasks[:task_index] for c in task)
            if self.hp["ewc_weight"] > 0 and self._stream is not None:
                stream = self.task_stream(tasks[task_index - 1])  # a finished task's Fisher, on its classes
                anchor = {
                    n: p.detach().clone() for n, p in self.student.named_parameters() if p.requires_grad
                }
                self.anchors.append((diagonal_fisher(self.student, stream), anchor))
        super().on_task_start(task_index, classes)  # then the warm-up step

    def ewc_penalty(self) -> torch.Tensor:
        params = dict(self.student.named_parameters())
        return sum(
            (fisher[n] * (params[n] - anchor[n]).pow(2)).sum()
            for fisher, anchor in self.anchors
            for n in fisher
        )

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        logits = self.student(batch.x)
        terms = {"ce": self.seen_ce(logits, batch.y)}
        if self._previous:
            with torch.no_grad():
                old = self._previous[0](batch.x)
            cols = torch.tensor(self.old_classes, device=logits.device)
            terms["lwf"] = self.hp["lwf_weight"] * kd_loss(
                logits[:, cols], old[:, cols], self.hp["temperature"]
            )
        if self.anchors:
            terms["ewc"] = self.hp["ewc_weight"] / 2 * self.ewc_penalty()
        return terms

    def record_extras(self) -> dict[str, Any]:
        return {
            **super().record_extras(),
            "num_tasks": self.hp["num_tasks"],
            "ewc": self.hp["ewc_weight"] > 0,
        }


@register_method
class LifelongFinetune(ClassIncremental):
    info = MethodInfo(
        name="lifelong_finetune",
        technique="Reference",
        scheme="offline",
        knowledge="none (labels of the current task only)",
        reference="—, fine-tuning on each task in turn: the lower bound of the lifelong row",
        teachers=0,
        summary="The same class-incremental tasks as lwf, cross-entropy on the current task only.",
    )


@register_method
class LifelongJoint(ClassIncremental):
    info = MethodInfo(
        name="lifelong_joint",
        technique="Reference",
        scheme="offline",
        knowledge="none (labels of every task seen so far)",
        reference="—, cumulative joint training: the upper bound of the lifelong row",
        teachers=0,
        summary="The same task sequence and evaluation as lwf, but task t trains on the data of tasks 0..t "
        "together (cumulative joint training), so nothing needs to be remembered.",
    )

    def task_training_classes(self, task_index: int, tasks: list[list[int]]) -> list[int]:
        return sorted(c for task in tasks[: task_index + 1] for c in task)
