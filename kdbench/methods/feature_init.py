"""Two-stage feature-based KD of RepDistiller's zoo: FSP, AB and FT first train part of the model alone on their
distillation loss (RepDistiller helper/pretrain.py `init`, for --init_epochs 30 before its 240 epochs), then
train the student:

- fsp: the init stage trains the student's body (every layer but the classifier) to match the teacher's FSP
  matrices; then plain cross-entropy (RepDistiller's loop adds nothing for fsp after the init stage);
- ab: the init stage trains the student's body and a connector to put the student's pre-activations on the
  teacher's side of every activation boundary; then plain cross-entropy, the connector frozen;
- ft: the init stage trains the paraphraser to reconstruct the teacher's last stage; then the student and a
  translator are trained with cross-entropy plus the factor-transfer loss against the frozen paraphraser.

The init stage runs in `before_training`, so it is inside the cell's timed training. Its length is the fraction
`init_fraction` of the run's epochs (RepDistiller's 30 of 240), at least one epoch's worth of steps, on the run's
own batches (epochs 0, 1, ... of the training stream); SGD with the run recipe's momentum, weight decay and Nesterov
setting at a constant rate `init_lr_scale` x the recipe's (RepDistiller's init has no schedule).
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.data.loader import Batch, BatchStream
from kdbench.errors import KdbenchError
from kdbench.fastpaths import autocast
from kdbench.methods.base import NON_NEGATIVE, POSITIVE, Method, MethodInfo, Setup, register_method
from kdbench.methods.feature_zoo import (
    Paraphraser,
    ab_connector,
    ab_loss,
    fsp_loss,
    ft_loss,
    paired,
    stage_shapes,
    translator,
)
from kdbench.methods.preact import PreactFeatures
from kdbench.models.features import stage_channels

INIT_FRACTION = 30 / 240  # RepDistiller train_student.py: --init_epochs 30 before --epochs 240


class InitStageMethod(Method):
    """A method with RepDistiller's init stage: subclasses give `init_parameters()` and `init_loss(batch)`, and
    may freeze modules after it (`frozen_after_init`, kept in evaluation mode and out of the optimiser)."""

    def __init__(self, setup: Setup, **hparams: Any) -> None:
        super().__init__(setup, **hparams)
        self._stream: BatchStream | None = None
        self.init_stats: dict[str, Any] = {}

    def init_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def init_loss(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def frozen_after_init(self) -> list[nn.Module]:
        return []

    def student_body_parameters(self) -> list[nn.Parameter]:
        """The student's parameters but its classifier's: RepDistiller's `model_s.get_feat_modules()`."""
        head = {id(p) for p in self.student.get_classifier().parameters()}
        return [p for p in self.student.parameters() if id(p) not in head]

    def init_steps(self, steps_per_epoch: int) -> int:
        """`init_fraction` of the run's steps, at least one epoch's worth; 0 when the fraction is 0 (no init)."""
        fraction = self.hp["init_fraction"]
        if fraction == 0 or steps_per_epoch == 0:
            return 0
        return max(steps_per_epoch, round(fraction * self.setup.epochs * steps_per_epoch))

    def on_training_data(self, stream: BatchStream) -> None:
        self._stream = stream

    def before_training(self) -> None:
        # imported here: the engine imports the method interface, so a module-level import would be circular
        from kdbench.engine import get_recipe

        if self._stream is None:
            raise RuntimeError(
                f"{self.info.name}'s init stage trains on real batches: the engine must call on_training_data"
            )
        stream, self._stream = self._stream, None
        steps = self.init_steps(len(stream))
        recipe = self.setup.recipe or get_recipe("cpu")
        opt = torch.optim.SGD(
            self.init_parameters(),
            lr=self.hp["init_lr_scale"] * recipe.lr,
            momentum=recipe.momentum,
            weight_decay=recipe.weight_decay,
            nesterov=recipe.nesterov,
        )
        batches = itertools.islice(
            itertools.chain.from_iterable(stream.epoch(e) for e in itertools.count()), steps
        )
        last: deque[torch.Tensor] = deque(
            maxlen=max(len(stream), 1)
        )  # the last epoch's worth, read at the end
        for batch in batches:
            with autocast(self.setup.device.type, self.setup.precision):
                loss = self.init_loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            last.append(loss.detach())
        opt.zero_grad(set_to_none=True)
        for module in self.frozen_after_init():
            module.requires_grad_(False).eval()
        self.init_stats = {
            "init_steps": steps,
            "init_loss": float(torch.stack(list(last)).mean()) if last else None,
        }

    def train(self, mode: bool = True) -> InitStageMethod:
        """The engine puts the method in training mode; modules frozen after the init stage stay in evaluation."""
        super().train(mode)
        if self.init_stats:
            for module in self.frozen_after_init():
                module.eval()
        return self

    def record_extras(self) -> dict[str, Any]:
        return dict(self.init_stats)


# the init stage of fsp and ab (ft keeps its own rate): its length, a kdbench option scaling RepDistiller's epochs to the
# run (at least one epoch), and its learning rate
INIT_DEFAULTS = {
    "init_fraction": INIT_FRACTION,  # RepDistiller train_student.py: --init_epochs 30 of --epochs 240
    "init_lr_scale": 1.0,  # RepDistiller helper/pretrain.py: SGD at the run's --learning_rate, no schedule
}


@register_method
class FSP(InitStageMethod):
    info = MethodInfo(
        name="fsp",
        technique="Feature-Based KD",
        scheme="offline",
        knowledge="feature (flow of solution procedure: Gram matrices between consecutive stages)",
        reference="Yim et al. 2017, A Gift from Knowledge Distillation: Fast Optimization, Network Minimization "
        "and Transfer Learning",
        summary="An init stage trains the student's body to match the teacher's FSP matrices between consecutive "
        "stages; then cross-entropy training.",
    )
    defaults = {
        # RepDistiller scripts/run_cifar_distill.sh passes -b 50, but helper/loops.py sets loss_kd = 0 for fsp after
        # the init stage, so the weight multiplies nothing there; > 0 adds the FSP loss to that stage too
        "fsp_weight": 0.0,
        "ce_weight": 1.0,  # RepDistiller: -r 1 -a 0 (no KD term added)
        **INIT_DEFAULTS,
    }

    @classmethod
    def pair_problem(cls, student: nn.Module, teacher: nn.Module) -> str | None:
        # RepDistiller train_student.py: feat[:-1]; FSP.__init__: 'num of channels not equal (error in FSP)'
        s_c, t_c = paired(stage_channels(student), stage_channels(teacher), skip_stem=False)
        if s_c != t_c:
            return f"fsp needs the same channels in the student's and teacher's stages; this pair has {s_c} and {t_c}"
        return None

    def __init__(self, setup: Setup, **hparams: Any) -> None:
        super().__init__(setup, **hparams)
        problem = self.pair_problem(self.student, self.teacher)
        if problem:
            raise KdbenchError(problem)

    def init_parameters(self) -> list[nn.Parameter]:
        return (
            self.student_body_parameters()
        )  # RepDistiller: init_trainable_list = [model_s.get_feat_modules()]

    def fsp(self, batch: Batch, stages: list[torch.Tensor]) -> torch.Tensor:
        s, t = paired(stages, self.teacher_outputs(batch, features=True).stages, skip_stem=False)
        return fsp_loss(s, t)

    def init_loss(self, batch: Batch) -> torch.Tensor:
        return self.fsp(batch, self.student_outputs(batch.x).stages)

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = self.student_outputs(batch.x)
        terms = {"ce": self.hp["ce_weight"] * F.cross_entropy(out.logits, batch.y)}
        if self.hp["fsp_weight"] > 0:
            terms["fsp"] = self.hp["fsp_weight"] * self.fsp(batch, out.stages)
        return terms


@register_method
class AB(InitStageMethod):
    info = MethodInfo(
        name="ab",
        technique="Feature-Based KD",
        scheme="offline",
        knowledge="feature (activation boundaries of hidden neurons)",
        reference="Heo et al. 2019, Knowledge Transfer via Distillation of Activation Boundaries Formed by "
        "Hidden Neurons",
        summary="An init stage trains the student's body and a connector so that the student's pre-ReLU stage "
        "features switch on where the teacher's do (a margin hinge); then cross-entropy training.",
    )
    defaults = {
        # RepDistiller scripts/run_cifar_distill.sh passes -b 1, but helper/loops.py sets loss_kd = 0 for abound
        # after the init stage, so the weight multiplies nothing there; > 0 adds the AB loss (frozen connector)
        "ab_weight": 0.0,
        "ce_weight": 1.0,  # RepDistiller: -r 1 -a 0 (no KD term added)
        "margin": 1.0,  # RepDistiller ABLoss(margin=1.0)
        **INIT_DEFAULTS,
    }
    ranges = {"margin": NON_NEGATIVE}

    def __init__(self, setup: Setup, **hparams: Any) -> None:
        super().__init__(setup, **hparams)
        info = setup.data
        example = torch.zeros(2, info.in_chans, info.image_size, info.image_size, device=setup.device)
        # the stages before their last ReLU (RepDistiller's preact=True); a stage's pre-activation has its shape
        self._preacts_s = PreactFeatures(self.student, example)
        self._preacts_t = PreactFeatures(
            self.teacher, example
        )  # a reader, not a submodule: the teacher stays out
        s, t = stage_shapes(self, skip_stem=True)  # RepDistiller train_student.py: feat[1:-1]
        try:
            self.connectors = nn.ModuleList(ab_connector(a, b) for a, b in zip(s, t, strict=True))
        except KdbenchError as exc:  # RepDistiller's ConvReg raises too: its connector cannot map such maps
            raise KdbenchError(f"ab's connector {exc}") from None

    def ab(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The student's logits on `x` and the AB loss of its connected pre-activations against the teacher's."""
        out, s = self._preacts_s(x)
        with torch.no_grad():
            _, t = self._preacts_t(x)
        s, t = paired(s, t, skip_stem=True)
        return out.logits, ab_loss(
            [c(a) for c, a in zip(self.connectors, s, strict=True)], t, self.hp["margin"]
        )

    def init_parameters(self) -> list[nn.Parameter]:
        # RepDistiller: init_trainable_list = [connector, model_s.get_feat_modules()]
        return [*self.connectors.parameters(), *self.student_body_parameters()]

    def frozen_after_init(self) -> list[nn.Module]:
        return [self.connectors]  # RepDistiller helper/loops.py: module_list[1].eval(), not in trainable_list

    def init_loss(self, batch: Batch) -> torch.Tensor:
        return self.ab(batch.x)[1]

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self.hp["ab_weight"] == 0:
            return {"ce": self.hp["ce_weight"] * F.cross_entropy(self.student(batch.x), batch.y)}
        logits, ab = self.ab(batch.x)
        return {
            "ce": self.hp["ce_weight"] * F.cross_entropy(logits, batch.y),
            "ab": self.hp["ab_weight"] * ab,
        }


@register_method
class FT(InitStageMethod):
    info = MethodInfo(
        name="ft",
        technique="Feature-Based KD",
        scheme="offline",
        knowledge="feature (factors of the last stage, paraphrased)",
        reference="Kim et al. 2018, Paraphrasing Complex Network: Network Compression via Factor Transfer",
        summary="An init stage trains a paraphraser to reconstruct the teacher's last stage; then cross-entropy "
        "plus the L1 distance between normalised factors of a translator on the student and the paraphraser.",
    )
    defaults = {
        "ft_weight": 200.0,  # RepDistiller scripts/run_cifar_distill.sh, FT: -b 200
        "ce_weight": 1.0,  # RepDistiller: -r 1 -a 0 (no KD term added)
        "paraphrase_rate": 0.5,  # RepDistiller models/util.py: Paraphraser(k=0.5), Translator(k=0.5)
        "p1": 2,  # RepDistiller FactorTransfer(p1=2): the factor's channel mean of f^2
        "p2": 1,  # RepDistiller FactorTransfer(p2=1): L1 distance
        "init_fraction": INIT_FRACTION,  # RepDistiller train_student.py: --init_epochs 30 of --epochs 240
        # RepDistiller helper/pretrain.py: lr 0.01 for ft with resnet and wrn students, against their run's 0.05
        # (vgg students: the run's 0.05; MobileNetV2 and ShuffleNet students: their run's own 0.01, so 1.0)
        "init_lr_scale": 0.2,
    }
    ranges = {"paraphrase_rate": POSITIVE, "p1": POSITIVE, "p2": POSITIVE}

    def __init__(self, setup: Setup, **hparams: Any) -> None:
        super().__init__(setup, **hparams)
        s = self.probe(self.student).stages[-1].shape  # RepDistiller train_student.py: feat_s[-2], feat_t[-2]
        t = self.probe(self.teacher).stages[-1].shape
        rate = self.hp["paraphrase_rate"]
        if int(t[1] * rate) < 1:
            raise KdbenchError(
                f"ft's paraphrase_rate={rate} leaves no factor channels of the teacher's {t[1]}"
            )
        self.paraphraser = Paraphraser(t[1], rate)  # on RepDistiller's feat[-2]: the last stage
        self.translator = translator(s[1], t[1], rate)

    def init_parameters(self) -> list[nn.Parameter]:
        return list(self.paraphraser.parameters())  # RepDistiller: init_trainable_list = [paraphraser]

    def frozen_after_init(self) -> list[nn.Module]:
        return [self.paraphraser]  # RepDistiller: module_list[2].eval(), not in trainable_list

    def init_loss(self, batch: Batch) -> torch.Tensor:
        f_t = self.teacher_outputs(batch, features=True).stages[-1]
        return F.mse_loss(self.paraphraser(f_t)[1], f_t)  # RepDistiller: criterion_init = nn.MSELoss()

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = self.student_outputs(batch.x)
        with torch.no_grad():
            factor_t = self.paraphraser.encoder(self.teacher_outputs(batch, features=True).stages[-1])
        factor_s = self.translator(out.stages[-1])
        return {
            "ce": self.hp["ce_weight"] * F.cross_entropy(out.logits, batch.y),
            "ft": self.hp["ft_weight"] * ft_loss(factor_s, factor_t, self.hp["p1"], self.hp["p2"]),
        }
