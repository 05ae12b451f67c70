"""Feature-based KD of RepDistiller's zoo beyond FitNet, one-stage methods: VID and NST; and the pure losses of
all five (VID, NST, FSP, AB, FT), with the modules they train. The two-stage methods, whose connectors or student
are first trained alone (FSP, AB, FT), are in `kdbench.methods.feature_init`.

RepDistiller's models return `feat = [f0, ..., f_last, pooled]`; kdbench's `Outputs.stages` are `feat[:-1]` (stem,
then the stages), so RepDistiller's `feat[1:-1]` is `stages[1:]` and its `feat[-2]` is `stages[-1]`. Where a pair
of networks has unequal stage counts (RepDistiller's pairs never do), the deepest stages are paired, as in `at`.
Every loss here pools the larger of two feature maps to the smaller's size first, as RepDistiller's losses do.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.data.loader import Batch
from kdbench.errors import KdbenchError
from kdbench.losses import attention_map
from kdbench.methods.adapters import ConvRegressor
from kdbench.methods.base import NON_NEGATIVE, POSITIVE, Method, MethodInfo, Setup, register_method

# ---- pure losses ----------------------------------------------------------------------------------------------


def match_sizes(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two maps at the smaller one's spatial size: the larger is adaptively average-pooled (RepDistiller's
    VIDLoss, NSTLoss, FSP and FactorTransfer all do this before comparing)."""
    if a.shape[2] > b.shape[2]:
        a = F.adaptive_avg_pool2d(a, b.shape[2:])
    elif a.shape[2] < b.shape[2]:
        b = F.adaptive_avg_pool2d(b, a.shape[2:])
    return a, b


def vid_loss(pred_mean: torch.Tensor, target: torch.Tensor, pred_var: torch.Tensor) -> torch.Tensor:
    """VID (Ahn et al. 2019, eq. 2 and 4): the teacher's feature t under the student's Gaussian N(mu, sigma_c^2) with
    one learned variance per channel c, as a negative log-likelihood without its constant,
    mean over batch, channels and positions of 1/2 ((t - mu)^2 / sigma_c^2 + log sigma_c^2) (RepDistiller VIDLoss).
    `pred_mean` and `target` are (N, C, H, W); `pred_var` is (C,)."""
    var = pred_var.view(1, -1, 1, 1)
    return (0.5 * ((pred_mean - target).pow(2) / var + var.log())).mean()


def poly_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """k(x, y) = (x . y)^2 between every row of `b` and every row of `a`, per sample: (N, Cb, D), (N, Ca, D) ->
    (N, Cb, Ca) (NST's polynomial kernel with d = 2, c = 0, as RepDistiller's NSTLoss.poly_kernel)."""
    return torch.bmm(b, a.transpose(1, 2)).pow(2)


def nst_loss(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """NST (Huang & Wang 2017, eq. 7 with the polynomial kernel of eq. 10): the squared MMD between the student's and
    the teacher's sets of channel maps, each map flattened over its positions and L2-normalised,
    mean_ij k(t_i, t_j) + mean_ij k(s_i, s_j) - 2 mean_ij k(s_i, t_j), each mean over the batch and every channel
    pair (RepDistiller NSTLoss, full_loss=True). The channel counts may differ."""
    f_s, f_t = match_sizes(f_s, f_t)
    s = F.normalize(f_s.flatten(2), dim=2)
    t = F.normalize(f_t.flatten(2), dim=2)
    return poly_kernel(t, t).mean().detach() + poly_kernel(s, s).mean() - 2 * poly_kernel(s, t).mean()


def fsp_matrix(bottom: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """FSP (Yim et al. 2017, eq. 1): the flow between two layers, G[n, j, i] = mean over positions of
    top[n, j] * bottom[n, i], after pooling the larger map to the smaller (RepDistiller FSP.compute_fsp);
    (N, C_top, C_bottom)."""
    bottom, top = match_sizes(bottom, top)
    return torch.bmm(top.flatten(2), bottom.flatten(2).transpose(1, 2)) / bottom[0, 0].numel()


def fsp_loss(stages_s: list[torch.Tensor], stages_t: list[torch.Tensor]) -> torch.Tensor:
    """FSP (Yim et al. 2017, eq. 2) with RepDistiller's reduction: over each pair of consecutive stages, the mean
    squared difference of the student's and the teacher's FSP matrices, summed over pairs (all lambda_i = 1)."""
    total = stages_s[0].new_zeros(())
    for i in range(len(stages_s) - 1):
        g_s, g_t = fsp_matrix(stages_s[i], stages_s[i + 1]), fsp_matrix(stages_t[i], stages_t[i + 1])
        total = total + (g_s - g_t).pow(2).mean()
    return total


def ab_layer_loss(source: torch.Tensor, target: torch.Tensor, margin: float) -> torch.Tensor:
    """AB (Heo et al. 2019, eq. 5): the squared hinge that puts every student neuron on the teacher's side of the
    activation boundary, with a margin m: summed over all elements,
    (s + m)^2 where s > -m and t <= 0, plus (s - m)^2 where s <= m and t > 0 (RepDistiller ABLoss)."""
    off = ((source > -margin) & (target <= 0)).to(source.dtype)
    on = ((source <= margin) & (target > 0)).to(source.dtype)
    return ((source + margin).pow(2) * off + (source - margin).pow(2) * on).sum()


def ab_loss(preacts_s: list[torch.Tensor], preacts_t: list[torch.Tensor], margin: float) -> torch.Tensor:
    """AB over layers as RepDistiller's ABLoss weights and scales it: layer i of n gets 2^(i - n + 1) (the deepest 1,
    each shallower one half the next), divided by the batch size and multiplied by 3 / 1000; summed over layers.
    The student's pre-activations are the connector's outputs, the teacher's its stages before their last ReLU."""
    n, batch = len(preacts_s), preacts_s[0].shape[0]
    pairs = enumerate(zip(preacts_s, preacts_t, strict=True))
    return sum(2.0 ** (i - n + 1) * ab_layer_loss(s, t, margin) for i, (s, t) in pairs) / batch / 1000 * 3


def ft_loss(factor_s: torch.Tensor, factor_t: torch.Tensor, p1: int = 2, p2: int = 1) -> torch.Tensor:
    """FT (Kim et al. 2018, eq. 3) as RepDistiller's FactorTransfer computes it: each factor map is reduced to its
    L2-normalised channel mean of f^p1 (`attention_map`), and the loss is the mean |difference|^p2 (p2 = 1: the
    paper's L1 distance between normalised factors). The paper normalises the whole flattened factor instead."""
    factor_s, factor_t = match_sizes(factor_s, factor_t)
    return (attention_map(factor_s, p1) - attention_map(factor_t, p1)).abs().pow(p2).mean()


# ---- trained modules ------------------------------------------------------------------------------------------


class VIDRegressor(nn.Module):
    """VID's per-layer predictor (RepDistiller VIDLoss): three 1x1 convolutions without bias (student channels ->
    mid -> mid -> teacher channels, ReLU between) give the mean; a softplus of one learned parameter per teacher
    channel, plus eps, gives the variance, starting at `init_pred_var`."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, init_pred_var: float, eps: float) -> None:
        super().__init__()
        self.regressor = nn.Sequential(
            nn.Conv2d(c_in, c_mid, 1, bias=False), nn.ReLU(),
            nn.Conv2d(c_mid, c_mid, 1, bias=False), nn.ReLU(),
            nn.Conv2d(c_mid, c_out, 1, bias=False),
        )  # fmt: skip
        # softplus(log_scale) + eps = init_pred_var at the start
        self.log_scale = nn.Parameter(torch.full((c_out,), math.log(math.expm1(init_pred_var - eps))))
        self.eps = eps

    def variance(self) -> torch.Tensor:
        return F.softplus(self.log_scale) + self.eps

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        student, teacher = match_sizes(student, teacher)
        return vid_loss(self.regressor(student), teacher, self.variance())


class LinearConvRegressor(ConvRegressor):
    """RepDistiller's ConvReg(use_relu=False): `ConvRegressor`'s convolution and batch norm without the ReLU, so it
    can map onto pre-activations of either sign (AB's connector)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


def ab_connector(s_shape: torch.Size, t_shape: torch.Size) -> nn.Module:
    """RepDistiller's Connector for one layer: the identity when channels and size already match, else a
    `LinearConvRegressor`."""
    if s_shape[1] == t_shape[1] and s_shape[2] == t_shape[2]:
        return nn.Identity()
    return LinearConvRegressor(s_shape, t_shape)


def _ft_stack(channels: list[int], bn: bool, transposed: bool = False) -> nn.Sequential:
    """3x3 stride-1 (transposed) convolutions through `channels`, each followed by batch norm (when `bn`) and
    LeakyReLU(0.1): the encoders and decoder of RepDistiller's Paraphraser and Translator."""
    conv = nn.ConvTranspose2d if transposed else nn.Conv2d
    layers: list[nn.Module] = []
    for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
        layers.append(conv(c_in, c_out, 3, 1, 1))
        if bn:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.LeakyReLU(0.1, inplace=True))
    return nn.Sequential(*layers)


class Paraphraser(nn.Module):
    """FT's paraphraser (RepDistiller models/util.py, use_bn=False): an encoder from the teacher's C channels to
    k*C factor channels, and a decoder back, trained to reconstruct the teacher's feature."""

    def __init__(self, channels: int, rate: float) -> None:
        super().__init__()
        factor = int(channels * rate)
        self.encoder = _ft_stack([channels, channels, factor, factor], bn=False)
        self.decoder = _ft_stack([factor, factor, channels, channels], bn=False, transposed=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        factor = self.encoder(x)
        return factor, self.decoder(factor)


def translator(student_channels: int, teacher_channels: int, rate: float) -> nn.Sequential:
    """FT's translator (RepDistiller models/util.py Translator, use_bn=True): the student's feature to the
    paraphraser's k*C factor channels."""
    factor = int(teacher_channels * rate)
    return _ft_stack([student_channels, student_channels, factor, factor], bn=True)


# ---- stage pairing --------------------------------------------------------------------------------------------


def paired(student: list[Any], teacher: list[Any], skip_stem: bool) -> tuple[list[Any], list[Any]]:
    """RepDistiller's `feat[1:-1]` (skip_stem) or `feat[:-1]` of both networks, as kdbench stages; with unequal
    stage counts, the deepest of each are paired."""
    n = min(len(student), len(teacher)) - int(skip_stem)
    return student[len(student) - n :], teacher[len(teacher) - n :]


def stage_shapes(method: Method, skip_stem: bool) -> tuple[list[torch.Size], list[torch.Size]]:
    """The paired stage shapes of the method's student and teacher, from a probe; none is an error."""
    s, t = paired(
        [f.shape for f in method.probe(method.student).stages],
        [f.shape for f in method.probe(method.teacher).stages],
        skip_stem,
    )
    if not s:
        raise KdbenchError(
            f"{method.info.name} needs intermediate stages in both networks; this pair has none"
        )
    return s, t


# ---- one-stage methods ----------------------------------------------------------------------------------------


@register_method
class VID(Method):
    info = MethodInfo(
        name="vid",
        technique="Feature-Based KD",
        scheme="offline",
        knowledge="feature (mutual information with intermediate features)",
        reference="Ahn et al. 2019, Variational Information Distillation for Knowledge Transfer",
        summary="Cross-entropy plus the Gaussian negative log-likelihood of each teacher stage under a regressor of "
        "the student's stage with a learned per-channel variance.",
    )
    defaults = {
        "vid_weight": 1.0,  # RepDistiller scripts/run_cifar_distill.sh, VID: -b 1
        "ce_weight": 1.0,  # RepDistiller: -r 1 -a 0 (no KD term added)
        "init_pred_var": 5.0,  # RepDistiller VIDLoss(init_pred_var=5.0)
        "eps": 1e-5,  # RepDistiller VIDLoss(eps=1e-5), added to the softplus variance
    }
    ranges = {"init_pred_var": POSITIVE, "eps": NON_NEGATIVE}

    def __init__(self, setup: Setup, **hparams: Any) -> None:
        super().__init__(setup, **hparams)
        if self.hp["init_pred_var"] <= self.hp["eps"]:
            raise KdbenchError("vid's init_pred_var must be larger than its eps")
        s, t = stage_shapes(self, skip_stem=True)  # RepDistiller train_student.py: feat[1:-1]
        # RepDistiller train_student.py: VIDLoss(s, t, t), mid channels = the teacher's
        self.regressors = nn.ModuleList(
            VIDRegressor(a[1], b[1], b[1], self.hp["init_pred_var"], self.hp["eps"])
            for a, b in zip(s, t, strict=True)
        )

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = self.student_outputs(batch.x)
        teacher = self.teacher_outputs(batch, features=True)
        s, t = paired(out.stages, teacher.stages, skip_stem=True)
        vid = sum(reg(a, b) for reg, a, b in zip(self.regressors, s, t, strict=True))
        return {
            "ce": self.hp["ce_weight"] * F.cross_entropy(out.logits, batch.y),
            "vid": self.hp["vid_weight"] * vid,
        }


@register_method
class NST(Method):
    info = MethodInfo(
        name="nst",
        technique="Feature-Based KD",
        scheme="offline",
        knowledge="feature (neuron selectivity distributions)",
        reference="Huang & Wang 2017, Like What You Like: Knowledge Distill via Neuron Selectivity Transfer",
        summary="Cross-entropy plus the polynomial-kernel MMD between the student's and teacher's normalised "
        "channel maps after every stage.",
    )
    defaults = {
        "nst_weight": 50.0,  # RepDistiller scripts/run_cifar_distill.sh, NST: -b 50
        "ce_weight": 1.0,  # RepDistiller: -r 1 -a 0 (no KD term added)
    }

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = self.student_outputs(batch.x)
        teacher = self.teacher_outputs(batch, features=True)
        s, t = paired(out.stages, teacher.stages, skip_stem=True)  # RepDistiller: feat[1:-1]
        return {
            "ce": self.hp["ce_weight"] * F.cross_entropy(out.logits, batch.y),
            "nst": self.hp["nst_weight"] * sum(nst_loss(a, b) for a, b in zip(s, t, strict=True)),
        }
