"""ReviewKD (Chen et al. 2021, "Distilling Knowledge via Knowledge Review"), as mdistiller's ReviewKD.py and the
authors' dvlab-research/ReviewKD (CIFAR-100/model/reviewkd.py, train.py) compute it:

- levels: the student's stages but the stem, after their ReLU (mdistiller STU_PREACT False), and its pooled
  embedding as a 1x1 map; the teacher's stages but the stem before their last ReLU (`preact_feats[1:]`), and its
  pooled embedding. With unequal stage counts the deepest stages are paired (as `kdbench.methods.feature_zoo`);
- review: attention-based fusion (ABF) from the deepest level to the shallowest: each level's student feature is
  projected (1x1 conv + BN) to `mid` channels and, below the deepest, fused with the level below's output resized
  to its size, by two per-position attention weights (1x1 conv + sigmoid over both); the fused map is resized to
  the teacher's size and mapped to the teacher's channels (3x3 conv + BN), and handed up as the next residual;
- hierarchical context loss (HCL): per level, the mean squared error at full size plus, at each of the pooled sizes
  4, 2, 1 smaller than the map, the same at that size, weighted 1, 1/2, 1/4, ... in that order and divided by the
  weights' sum; summed over levels;
- the loss weight ramps linearly over the first epochs (mdistiller `min(epoch / WARMUP_EPOCHS, 1)`).

Channels and sizes come from a probe forward pass over the `feature_info` stages and the classifier's input, so any
pair of architectures works; the references hard-code them per architecture (`REVIEWKD.IN_CHANNELS`, `SHAPES`,
`OUT_SHAPES`), and the sizes each ABF resizes to are read here off the tensors themselves. Where kdbench differs:
the warm-up is a fraction of the run (`warmup_fraction`, 20/240 by default, so 20 epochs of a 240-epoch run, as
mdistiller; the authors' train.py counts epochs from 0, so its first epoch has weight 0); the student's features
are always taken after their ReLU (mdistiller's STU_PREACT option, False by default, is not offered).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.data.loader import Batch
from kdbench.errors import KdbenchError
from kdbench.methods.base import POSITIVE, Method, MethodInfo, Setup, register_method
from kdbench.methods.feature_zoo import paired
from kdbench.methods.ofd import probe_input
from kdbench.methods.preact import PreactFeatures

HCL_LEVELS = (4, 2, 1)  # mdistiller / authors' hcl_loss: `for l in [4, 2, 1]`, each weight half the previous

# ---- pure loss ------------------------------------------------------------------------------------------------


def hcl_loss(students: list[torch.Tensor], teachers: list[torch.Tensor]) -> torch.Tensor:
    """ReviewKD's hierarchical context loss (paper eq. 6, mdistiller `hcl_loss`): per pair of (N, C, H, W) maps, the
    MSE at full size (weight 1) plus the MSE after adaptive average pooling to l x l for each l in 4, 2, 1 with
    l < H, the k-th such level weighted 1 / 2^k, all divided by the sum of the weights used; summed over pairs."""
    total = students[0].new_zeros(())
    for fs, ft in zip(students, teachers, strict=True):
        loss, weight, weights = F.mse_loss(fs, ft), 1.0, 1.0
        for level in HCL_LEVELS:
            if level >= fs.shape[2]:
                continue
            weight /= 2
            loss = loss + weight * F.mse_loss(
                F.adaptive_avg_pool2d(fs, level), F.adaptive_avg_pool2d(ft, level)
            )
            weights += weight
        total = total + loss / weights
    return total


# ---- trained modules ------------------------------------------------------------------------------------------


class ABF(nn.Module):
    """Attention-based fusion of one level (mdistiller / authors' ABF): `conv1` (1x1, no bias, BN) to `c_mid`
    channels; with `fuse`, the residual from the deeper level is resized (nearest) to this map's size and the two
    are mixed by per-position weights from `att_conv` (1x1 conv with bias over both, sigmoid); the result is resized
    (nearest) to the teacher's size and `conv2` (3x3, no bias, BN) maps it to `c_out` channels. Both conv weights
    start kaiming-uniform with a = 1, as the reference."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, fuse: bool) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(c_in, c_mid, 1, bias=False), nn.BatchNorm2d(c_mid))
        self.conv2 = nn.Sequential(nn.Conv2d(c_mid, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
        self.att_conv = nn.Sequential(nn.Conv2d(2 * c_mid, 2, 1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None, out_size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """This level's output (teacher channels, `out_size`) and the residual handed to the next shallower level
        (`c_mid` channels, `out_size`)."""
        x = self.conv1(x)
        if self.att_conv is not None:
            if residual is None:
                raise ValueError("a fusing ABF needs the deeper level's residual")
            residual = F.interpolate(residual, size=x.shape[-2:], mode="nearest")
            att = self.att_conv(torch.cat([x, residual], 1))
            x = x * att[:, :1] + residual * att[:, 1:]
        if tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, size=tuple(out_size), mode="nearest")
        return self.conv2(x), x


class ReviewFusion(nn.Module):
    """ReviewKD's student side: one ABF per level (lists shallow to deep, the deepest being the pooled embedding,
    which fuses nothing), run from the deepest to the shallowest. `mid_channels` is shared by every level."""

    def __init__(self, in_channels: list[int], out_channels: list[int], mid_channels: int) -> None:
        super().__init__()
        n = len(in_channels)
        self.abfs = nn.ModuleList(
            ABF(c_in, mid_channels, c_out, fuse=i < n - 1)
            for i, (c_in, c_out) in enumerate(zip(in_channels, out_channels, strict=True))
        )

    def forward(self, features: list[torch.Tensor], out_sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
        """The student's levels, shallow to deep, to one map per level at the teacher's channels and sizes."""
        results, residual = [], None
        for abf, x, size in zip(self.abfs[::-1], features[::-1], out_sizes[::-1], strict=True):
            out, residual = abf(x, residual, size)
            results.append(out)
        return results[::-1]


def _as_map(embedding: torch.Tensor) -> torch.Tensor:
    """The pooled (N, C) embedding as a 1x1 map (mdistiller `pooled_feat.unsqueeze(-1).unsqueeze(-1)`)."""
    return embedding.flatten(1)[:, :, None, None]


def preacts_and_embedding(reader: PreactFeatures, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One forward pass of the reader's model: its stages before their last ReLU and the classifier's input."""
    seen: list[torch.Tensor] = []
    handle = reader.model.get_classifier().register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    try:
        _, preacts = reader(x)
    finally:
        handle.remove()
    return preacts, seen[0]


# ---- the method -----------------------------------------------------------------------------------------------


@register_method
class ReviewKD(Method):
    info = MethodInfo(
        name="reviewkd",
        technique="Feature-Based KD",
        scheme="offline",
        knowledge="feature (each teacher stage taught to the student's same and deeper stages, fused by attention)",
        reference="Chen et al. 2021, Distilling Knowledge via Knowledge Review",
        summary="Cross-entropy plus a hierarchical context loss between the teacher's stages and the student's "
        "stages fused from deep to shallow by attention; the loss warms up over the first epochs.",
    )
    defaults = {
        "ce_weight": 1.0,  # mdistiller REVIEWKD.CE_WEIGHT 1.0 (the authors' train.py --ce-loss-weight 1.0)
        # mdistiller configs/cifar100/reviewkd.yaml REVIEWKD_WEIGHT 5.0 (resnet32x4 -> resnet8x4); the authors'
        # script/reviewKD.sh --kd-loss-weight 5.0 for most pairs (0.6 resnet56 -> 20, 1.0 resnet110 -> 32, 8.0 shufflev2)
        "reviewkd_weight": 5.0,
        # mdistiller REVIEWKD.WARMUP_EPOCHS 20 of SOLVER.EPOCHS 240 (the authors: --kd-warm-up 20 of --epochs 240),
        # scaled to the run as kdbench scales DKD's warm-up: the weight ramps as min((epoch + 1) / (f x epochs), 1);
        # 0: no warm-up
        "warmup_fraction": 20 / 240,
        "max_mid_channel": 512,  # mdistiller REVIEWKD.MAX_MID_CHANNEL 512: mid = min(512, student embedding channels)
    }
    ranges = {"max_mid_channel": POSITIVE}

    def __init__(self, setup: Setup, **hparams: Any) -> None:
        super().__init__(setup, **hparams)
        self._preacts_t = PreactFeatures(
            self.teacher, probe_input(setup)
        )  # a reader, not a submodule: the teacher stays out
        s_out, t_out = self.probe(self.student), self.probe(self.teacher)
        s, t = paired(s_out.stages, t_out.stages, skip_stem=True)  # mdistiller: feats[1:] / preact_feats[1:]
        if not s or any(f.dim() != 4 for f in (*s, *t)):
            raise KdbenchError(
                "reviewkd needs intermediate (N, C, H, W) stages in both networks; this pair has none"
            )
        in_channels = [f.shape[1] for f in s] + [s_out.embedding.shape[1]]
        out_channels = [f.shape[1] for f in t] + [t_out.embedding.shape[1]]
        # mdistiller / authors: mid_channel = min(512, in_channels[-1]), the student's pooled embedding channels
        self.fusion = ReviewFusion(
            in_channels, out_channels, min(int(self.hp["max_mid_channel"]), in_channels[-1])
        )

    def warmup_factor(self) -> float:
        """mdistiller's `min(epoch / WARMUP_EPOCHS, 1)`, its epochs counted from 1 (ours from 0, hence + 1), the
        warm-up lasting `warmup_fraction` of the run's epochs."""
        warmup = self.hp["warmup_fraction"] * self.setup.epochs
        return min((self.epoch + 1) / warmup, 1.0) if warmup > 0 else 1.0

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = self.student_outputs(batch.x)
        with torch.no_grad():
            preacts_t, embedding_t = preacts_and_embedding(self._preacts_t, batch.x)
        s, t = paired(out.stages, preacts_t, skip_stem=True)
        teacher = [*t, _as_map(embedding_t)]
        results = self.fusion([*s, _as_map(out.embedding)], [tuple(f.shape[-2:]) for f in teacher])
        return {
            "ce": self.hp["ce_weight"] * F.cross_entropy(out.logits, batch.y),
            "reviewkd": self.hp["reviewkd_weight"] * self.warmup_factor() * hcl_loss(results, teacher),
        }
