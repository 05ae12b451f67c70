"""Quantized KD: the student is trained quantization-aware (fake-quantized weights and activations, straight-through
gradients to full-precision shadow weights) while it distils from the full-precision teacher; `qat` is the same
training without a teacher, so the grid can separate what quantization costs from what distillation gives back.

Stack: torch.ao's FX graph mode (`prepare_qat_fx` / `convert_fx`; deprecated in favour of torchao's PT2E flow, which
still converts to simulated quantize/dequantize ops, whereas FX converts to real int8 kernels):

- 8 bits: torch's default x86 QAT recipe (`get_default_qat_qconfig_mapping("x86")`: per-channel symmetric int8
  weights, per-tensor affine uint8 activations with fbgemm's reduced range). `deployable()` is the int8 model
  `convert_fx` builds, with batch norm folded and real quantized kernels. Those kernels run on the CPU only, so on a
  CUDA run the int8 model is evaluated (and timed) on the CPU, inputs copied over and logits copied back.
- fewer bits: the same graph with fake-quantize modules restricted to 2^bits levels (per-channel symmetric weights
  in [-2^(b-1), 2^(b-1) - 1], per-tensor affine activations in [0, 2^b - 1]). No kernels exist for them, so
  `deployable()` is the fake-quantized model with its observers frozen: it computes exactly what a b-bit model does.
  As in LSQ (Esser et al. 2020), the first convolution and the classifier (hence the network's input and its logits)
  stay at `ends_bits`, 8 by default; set `ends_bits` equal to `bits` to quantize every layer alike.

`deployable_size_bytes()` is what the model costs shipped at its bit widths: packed weights, a float32 scale and
an 8-bit zero point per output channel and per activation, a float32 bias per output channel (its own, or the one
batch norm folds into), and every remaining parameter in float32.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization import (
    FusedMovingAvgObsFakeQuantize,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    QConfig,
    QConfigMapping,
    disable_observer,
    get_default_qat_qconfig_mapping,
)
from torch.ao.quantization.fake_quantize import FakeQuantizeBase
from torch.ao.quantization.quantize_fx import convert_fx, prepare_qat_fx

from kdbench.data.loader import Batch
from kdbench.errors import check_choice
from kdbench.losses import kd_loss
from kdbench.methods.base import Method, MethodInfo, Setup, register_method
from kdbench.metrics import flops_per_image, state_dict_bytes

BIT_WIDTHS = (2, 3, 4, 5, 6, 7, 8)
QUANT_STACK = "torch.ao FX (prepare_qat_fx / convert_fx)"


def low_bit_qconfig(bits: int) -> QConfig:
    """Fake quantization to 2^bits levels: per-channel symmetric weights, per-tensor affine activations, with the
    moving-average min/max observers of torch's default QAT recipe."""
    activation = FusedMovingAvgObsFakeQuantize.with_args(
        observer=MovingAverageMinMaxObserver,
        quant_min=0,
        quant_max=2**bits - 1,
        dtype=torch.quint8,
        qscheme=torch.per_tensor_affine,
    )
    weight = FusedMovingAvgObsFakeQuantize.with_args(
        observer=MovingAveragePerChannelMinMaxObserver,
        quant_min=-(2 ** (bits - 1)),
        quant_max=2 ** (bits - 1) - 1,
        dtype=torch.qint8,
        qscheme=torch.per_channel_symmetric,
        ch_axis=0,
    )
    return QConfig(activation=activation, weight=weight)


def fake_quant_bits(fq: FakeQuantizeBase) -> int:
    """The bit width a fake-quantize module quantizes to, read from its integer range."""
    return math.ceil(math.log2(fq.quant_max - fq.quant_min + 1))


def _first_conv_and_classifier(model: nn.Module, example: torch.Tensor) -> tuple[str | None, str | None]:
    """Names of the first convolution to run and of the classifier (the model's `get_classifier()`, else the last
    linear layer), found by a forward pass with hooks that leaves batch-norm statistics untouched."""
    names = {m: n for n, m in model.named_modules()}
    order: list[str] = []
    hooks = [
        m.register_forward_pre_hook(lambda mod, _inp: order.append(names[mod]))
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    convs = [n for n in order if isinstance(model.get_submodule(n), nn.Conv2d)]
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    linears = [n for n in order if isinstance(model.get_submodule(n), nn.Linear)]
    classifier = names.get(head) if head is not None else (linears[-1] if linears else None)
    return (convs[0] if convs else None), classifier


def prepare_student(student: nn.Module, example: torch.Tensor, bits: int, ends_bits: int) -> nn.Module:
    """The student as an FX graph with fused conv-bn(-relu) QAT modules and fake quantization at `bits`."""
    if bits == 8:
        mapping = get_default_qat_qconfig_mapping("x86")
    else:
        mapping = QConfigMapping().set_global(low_bit_qconfig(bits))
        for name in _first_conv_and_classifier(student, example):
            if name is not None:
                mapping.set_module_name(name, low_bit_qconfig(ends_bits))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice and observer range notes
        return prepare_qat_fx(student.train(), mapping, (example,))


class OnCpu(nn.Module):
    """Runs a CPU-only model (int8 kernels) on inputs from any device; logits go back to the input's device."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.cpu()).to(x.device)


class _QuantizedStudent(Method):
    """Shared by `qkd` and `qat`: builds the fake-quantized student, converts and sizes it."""

    def __init__(self, setup: Setup, **hparams) -> None:
        super().__init__(setup, **hparams)
        for key in ("bits", "ends_bits"):
            self.hp[key] = int(check_choice(key, self.hp[key], BIT_WIDTHS))
        info = setup.data
        device = next(setup.student.parameters()).device
        example = torch.zeros(2, info.in_chans, info.image_size, info.image_size, device=device)
        self.student = prepare_student(setup.student, example, self.hp["bits"], self.hp["ends_bits"])
        self._shape = tuple(example.shape[1:])
        self._deployed: dict[str, nn.Module] = {}  # a plain dict: a cached copy must not become a submodule

    def student_logits(self, x: torch.Tensor) -> torch.Tensor:
        self._deployed.clear()  # a training step follows: the converted model goes stale
        with torch.autocast(
            x.device.type, enabled=False
        ):  # fake quantization has no bf16 kernels: fp32 always
            return self.student(x.float())

    # ---- what is deployed ------------------------------------------------------------------------------------
    def fake_quantized(self) -> nn.Module:
        """A frozen copy of the fake-quantized student: eval mode, observers off, so evaluation changes nothing, and
        no gradients (the FLOP counter's module tracker fails on a module called with a grad-requiring Parameter,
        as each weight fake-quantizer is)."""
        model = copy.deepcopy(self.student).eval().requires_grad_(False)
        model.apply(disable_observer)
        return model

    def int8(self) -> nn.Module:
        """The real int8 model of `convert_fx` (8 bits only), on the CPU where its kernels run."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return convert_fx(copy.deepcopy(self.student).cpu().eval())

    def deployable(self) -> nn.Module:
        if "model" not in self._deployed:
            if self.hp["bits"] == 8:
                model = self.int8()
                self._deployed["model"] = model if self.setup.device.type == "cpu" else OnCpu(model)
            else:
                self._deployed["model"] = self.fake_quantized()
        return self._deployed["model"]

    def monitored(self) -> nn.Module:
        # converting to int8 is final, and evaluating the live student would move its observers: watch a frozen copy
        return self.fake_quantized()

    def extra_parameters(self) -> int:
        # the int8 model has packed weights and no `parameters()`: count against the QAT student instead
        deployed = {id(p) for p in self.student.parameters()}
        return sum(p.numel() for p in self.parameters() if id(p) not in deployed)

    def quantized_modules(self) -> list[nn.Module]:
        return [
            m for m in self.student.modules() if isinstance(getattr(m, "weight_fake_quant", None), nn.Module)
        ]

    def deployable_size_bytes(self) -> int:
        total, covered, weight_fqs = 0, set(), set()
        for m in self.quantized_modules():
            fq, weight = m.weight_fake_quant, m.weight
            per_channel = fq.qscheme in (torch.per_channel_symmetric, torch.per_channel_affine)
            total += math.ceil(weight.numel() * fake_quant_bits(fq) / 8)  # packed weights
            total += (weight.shape[fq.ch_axis] if per_channel else 1) * (
                4 + 1
            )  # float32 scale + 8-bit zero point
            if m.bias is not None or getattr(m, "bn", None) is not None:
                total += weight.shape[0] * 4  # float32 bias, folded from batch norm where there is one
            covered |= {id(p) for p in m.parameters()}
            weight_fqs.add(id(fq))
        total += sum(4 * p.numel() for p in self.student.parameters() if id(p) not in covered)
        activations = [
            m for m in self.student.modules() if isinstance(m, FakeQuantizeBase) and id(m) not in weight_fqs
        ]
        return total + 5 * len(activations)  # float32 scale + 8-bit zero point per quantized activation

    def record_extras(self) -> dict[str, Any]:
        bits = self.hp["bits"]
        weights = sum(m.weight.numel() for m in self.quantized_modules())
        extras: dict[str, Any] = {
            "quant_stack": QUANT_STACK,
            "bits": bits,
            "ends_bits": self.hp["ends_bits"] if bits < 8 else 8,
            "int8_kernels": bits == 8,
            # below 8 bits the deployed model simulates the arithmetic in float32 (quantize-dequantize around every
            # layer): its latency measures the simulation, slower than the float model, not a low-bit kernel
            "latency_simulated": bits < 8,
            "eval_device": "cpu" if bits == 8 else self.setup.device.type,
            "quantized_weights": weights,  # the int8 model's `parameters()` are empty (packed weights)
        }
        if bits == 8:
            # the FLOP counter sees no aten ops in the int8 graph (quantized:: kernels), so it reports 0 there;
            # the same graph's operations counted on its fake-quantized twin
            extras["flops_per_image"] = flops_per_image(self.fake_quantized(), self._shape, self.setup.device)
            # torch's own serialisation of the int8 model, for comparison with `deployable_size_bytes()`
            extras["torch_int8_state_dict_bytes"] = state_dict_bytes(self.int8())
        return extras


@register_method
class QKD(_QuantizedStudent):
    info = MethodInfo(
        name="qkd",
        technique="Quantized KD",
        compare_to="qat",  # the KD boost of a quantized student: against the same QAT without a teacher
        scheme="offline",
        knowledge="response (softened logits) into a quantized student",
        reference="Polino et al. 2018, Model Compression via Distillation and Quantization; "
        "Mishra & Marr 2018, Apprentice",
        summary="A quantization-aware-trained (fake-quantized) student distils from the full-precision teacher with "
        "Hinton's loss; deployed as int8 at 8 bits.",
    )
    defaults = {
        "bits": 8,  # weights and activations; 8 converts to real int8 kernels, 2–7 stay fake-quantized
        "ends_bits": 8,  # first conv and classifier when bits < 8: LSQ (Esser et al. 2020) keeps them at 8 bits
        "temperature": 4.0,  # as kd (RepDistiller --kd_T 4): Polino et al.'s quantized distillation is Hinton's loss
        "ce_weight": 0.1,  # as kd: RepDistiller -r 0.1
        "kd_weight": 0.9,  # as kd: RepDistiller -a 0.9
    }

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        logits = self.student_logits(batch.x)
        teacher = self.teacher_outputs(batch).logits
        return {
            "ce": self.hp["ce_weight"] * F.cross_entropy(logits, batch.y),
            "kd": self.hp["kd_weight"] * kd_loss(logits, teacher, self.hp["temperature"]),
        }


@register_method
class QAT(_QuantizedStudent):
    info = MethodInfo(
        name="qat",
        technique="Reference",  # qkd's control, not a distillation technique
        scheme="offline",
        knowledge="none (labels only): quantization-aware training without a teacher, qkd's control",
        reference="Jacob et al. 2018, Quantization and Training of Neural Networks for Efficient "
        "Integer-Arithmetic-Only Inference",
        teachers=0,
        summary="The same quantization-aware training as qkd with cross-entropy only: what quantization costs "
        "before distillation gives anything back.",
    )
    defaults = {
        "bits": 8,  # as qkd
        "ends_bits": 8,  # as qkd
    }

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {"ce": F.cross_entropy(self.student_logits(batch.x), batch.y)}
