"""Data-free KD: the student never sees a training image. Its inputs are synthesised from the frozen teacher,
either by a generator trained alongside it (DAFL) or by optimising a pool of inputs before training
(DeepInversion). `batch.x` is never read; the stream only sets the number of steps and the batch size."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.data.loader import Batch, random_crop_flip
from kdbench.losses import kd_loss
from kdbench.methods.base import Method, MethodInfo, Setup, register_method
from kdbench.models.features import forward_with_features


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Run `module` with its parameters out of autograd, so gradients reach its inputs but never its weights."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)


class DAFLGenerator(nn.Module):
    """DAFL's generator (DAFL_train.py `Generator`): z → linear to 128 x (S/4)² → BN → 2x upsample → conv 128 →
    BN(eps 0.8) → LeakyReLU → upsample to S → conv 64 → BN(eps 0.8) → LeakyReLU → conv to the image channels →
    tanh → BN without affine. The last BN standardises every channel over the batch, which puts the images on
    the normalised input scale (zero mean, unit variance) the teacher was trained on."""

    def __init__(self, latent_dim: int, image_size: int, channels: int) -> None:
        super().__init__()
        self.latent_dim, self.image_size = latent_dim, image_size
        self.init_size = image_size // 4
        self.l1 = nn.Linear(latent_dim, 128 * self.init_size**2)
        self.bn0 = nn.BatchNorm2d(128)
        # nn.BatchNorm2d(c, 0.8) as in the DAFL code: the 0.8 is the eps argument
        self.conv1 = nn.Sequential(nn.Conv2d(128, 128, 3, 1, 1), nn.BatchNorm2d(128, 0.8), nn.LeakyReLU(0.2))
        self.conv2 = nn.Sequential(
            nn.Conv2d(128, 64, 3, 1, 1),
            nn.BatchNorm2d(64, 0.8),
            nn.LeakyReLU(0.2),
            nn.Conv2d(64, channels, 3, 1, 1),
            nn.Tanh(),
            nn.BatchNorm2d(channels, affine=False),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.bn0(self.l1(z).view(len(z), 128, self.init_size, self.init_size))
        out = self.conv1(F.interpolate(out, scale_factor=2))
        return self.conv2(
            F.interpolate(out, size=self.image_size)
        )  # = scale_factor 2 when S is divisible by 4


@register_method
class DAFL(Method):
    info = MethodInfo(
        name="dafl",
        technique="Data-Free KD",
        scheme="offline",
        knowledge="response (teacher outputs on generated inputs)",
        reference="Chen et al. 2019, Data-Free Learning of Student Networks",
        summary="A generator, trained against the frozen teacher (one-hot, activation and information-entropy "
        "losses), produces the inputs on which the student is distilled; no training image is used.",
    )
    defaults = {
        "latent_dim": 100,  # DAFL_train.py --latent_dim 100 (MNIST setting; Fashion-MNIST is MNIST-sized)
        "lr_g": 0.2,  # DAFL_train.py --lr_G 0.2 (MNIST; the CIFAR runs use 0.02), Adam
        "oh": 1.0,  # DAFL_train.py --oh 1: one-hot loss weight
        "ie": 5.0,  # DAFL_train.py --ie 5: information-entropy loss weight
        "a": 0.1,  # DAFL_train.py --a 0.1: activation loss weight
        "temperature": 1.0,  # DAFL_train.py kdloss: KL between plain softmaxes (T = 1)
    }

    def __init__(self, setup: Setup, **hparams) -> None:
        super().__init__(setup, **hparams)
        info = setup.data
        self.generator = DAFLGenerator(self.hp["latent_dim"], info.image_size, info.in_chans)
        self._fresh: tuple[torch.Tensor, torch.Tensor] | None = None  # this step's images and teacher logits
        self.generated = 0

    def auxiliary_parameters(self) -> list[nn.Parameter]:
        return list(self.generator.parameters())

    def auxiliary_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=self.hp["lr_g"])  # DAFL_train.py optimizer_G

    def generate(self, n: int) -> torch.Tensor:
        z = torch.randn(n, self.hp["latent_dim"], device=next(self.generator.parameters()).device)
        return self.generator(z)

    def auxiliary_loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        images = self.generate(len(batch))  # only the batch size is taken from the stream
        with frozen(self.teacher):
            out = forward_with_features(self.teacher, images, stages=False)
        logits = out.logits
        p = F.softmax(logits, dim=1).mean(0)
        # DAFL's student step reuses this forward: the images and the teacher's outputs, detached
        self._fresh = (images.detach(), logits.detach())
        return {
            "one_hot": self.hp["oh"] * F.cross_entropy(logits, logits.argmax(1)),
            "activation": self.hp["a"] * -out.embedding.abs().mean(),
            # DAFL's sum of p · log10 p, bit for bit where p > 0; the clamp keeps a class whose mean probability
            # underflows to 0 (100 classes) at 0 · log10(tiny) = 0, where the reference's p * log10(p) is NaN
            "entropy": self.hp["ie"] * (p * torch.log10(p.clamp_min(torch.finfo(p.dtype).tiny))).sum(),
        }

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self._fresh is None:  # called without the auxiliary step (e.g. a measurement): draw a batch now
            with torch.no_grad():
                images = self.generate(len(batch))
            self._fresh = (images, self.teacher_outputs(images).logits)
        images, teacher_logits = self._fresh
        self._fresh = None
        self.generated += len(images)
        return {"kd": kd_loss(self.student(images), teacher_logits, self.hp["temperature"])}

    def record_extras(self) -> dict[str, Any]:
        return {
            "generator_params": sum(p.numel() for p in self.generator.parameters()),
            "generated_samples": self.generated,
            "latent_dim": self.hp["latent_dim"],
        }


class BNStatistics:
    """DeepInversion's feature-distribution regulariser: forward hooks on every BatchNorm2d of a network
    compare the batch statistics of its input with the layer's running statistics,
    ||var - running_var||₂ + ||mean - running_mean||₂ (DeepInversionFeatureHook)."""

    def __init__(self, model: nn.Module) -> None:
        self.terms: list[torch.Tensor] = []
        self.handles = [
            m.register_forward_hook(self._hook) for m in model.modules() if isinstance(m, nn.BatchNorm2d)
        ]

    def _hook(self, module: nn.BatchNorm2d, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        x = inputs[0]
        mean = x.mean((0, 2, 3))
        var = x.transpose(0, 1).flatten(1).var(1, unbiased=False)
        self.terms.append(torch.norm(module.running_var - var, 2) + torch.norm(module.running_mean - mean, 2))

    def pop(self) -> torch.Tensor:
        total, self.terms = sum(self.terms), []
        return total

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """DeepInversion's TV prior: L2 norms of the differences to the right, below and both diagonal neighbours."""
    return (
        torch.norm(x[:, :, :, :-1] - x[:, :, :, 1:])
        + torch.norm(x[:, :, :-1, :] - x[:, :, 1:, :])
        + torch.norm(x[:, :, 1:, :-1] - x[:, :, :-1, 1:])
        + torch.norm(x[:, :, :-1, :-1] - x[:, :, 1:, 1:])
    )


@register_method
class DeepInversion(Method):
    info = MethodInfo(
        name="deepinversion",
        technique="Data-Free KD",
        scheme="offline",
        knowledge="response (teacher outputs on inverted inputs)",
        reference="Yin et al. 2020, Dreaming to Distill: Data-free Knowledge Transfer via DeepInversion",
        summary="Before training, a pool of inputs is optimised from noise so the teacher classifies them as "
        "sampled targets and its batch-norm statistics match; the student is distilled on the pool only.",
    )
    defaults = {
        # the pool and the optimisation are far smaller than the paper's (2000 iterations per batch of 256):
        # kdbench's CPU budget; synthesis time is part of the recorded training time
        "pool_size": 512,  # kdbench CPU budget; never more than the real training split's size (setup.num_train)
        "synthesis_batch": 128,  # kdbench CPU budget (DeepInversion cifar10 code: --bs 256)
        "synthesis_steps": 50,  # kdbench CPU budget (DeepInversion cifar10 code: --iters_mi 2000)
        "lr": 0.05,  # DeepInversion cifar10 README, paper parameters: --di_lr 0.05 (Adam)
        "r_feature": 10.0,  # cifar10 README, paper parameters: --r_feature_weight 10
        "tv_weight": 2.5e-5,  # deepinversion_cifar10.py --di_var_scale 2.5e-5
        "l2_weight": 0.0,  # deepinversion_cifar10.py --di_l2_scale 0.0 (the L2 prior, off for CIFAR)
        "jitter": 2,  # deepinversion_cifar10.py: random roll by up to lim_0 = lim_1 = 2 pixels
        "temperature": 4.0,  # kdbench choice, as kd (RepDistiller --kd_T 4): the DI code releases the synthesis only
    }

    def __init__(self, setup: Setup, **hparams) -> None:
        super().__init__(setup, **hparams)
        info = setup.data
        self.register_buffer(
            "pool", torch.zeros(0, info.in_chans, info.image_size, info.image_size), persistent=False
        )
        self.register_buffer("order", torch.zeros(0, dtype=torch.long), persistent=False)
        self.cursor = 0
        self.synthesis: dict[str, Any] = {}
        # a data-free student never gets more distinct inputs than its real-data counterpart
        self.pool_size = max(1, min(self.hp["pool_size"], setup.num_train))

    def before_training(self) -> None:
        start = time.perf_counter()
        bn = BNStatistics(self.teacher)
        try:
            with frozen(self.teacher):  # gradients reach the inputs only
                batches = [
                    self.synthesise(first, bn)
                    for first in range(0, self.pool_size, self.hp["synthesis_batch"])
                ]
        finally:
            bn.close()
        self.pool = torch.cat(batches)
        self.synthesis.update(
            synthesis_time_s=time.perf_counter() - start,
            pool_size=len(self.pool),
            synthesis_steps=self.hp["synthesis_steps"],
        )

    def synthesise(self, first: int, bn: BNStatistics) -> torch.Tensor:
        """One batch of the pool, optimised from Gaussian noise (deepinversion_cifar10.py `get_images`)."""
        info, hp, device = self.setup.data, self.hp, self.pool.device
        n = min(hp["synthesis_batch"], self.pool_size - first)
        targets = (
            torch.arange(first, first + n, device=device) % info.num_classes
        )  # the DI code's columns 0..9
        x = torch.randn(n, info.in_chans, info.image_size, info.image_size, device=device, requires_grad=True)
        opt = torch.optim.Adam([x], lr=hp["lr"])
        terms: dict[str, torch.Tensor] = {}
        for _ in range(hp["synthesis_steps"]):
            dy, dx = (int(v) for v in torch.randint(-hp["jitter"], hp["jitter"] + 1, (2,)))
            jittered = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            bn.pop()
            terms = {
                "ce": F.cross_entropy(self.teacher(jittered), targets),
                "bn": hp["r_feature"] * bn.pop(),
                "tv": hp["tv_weight"] * total_variation(jittered),
                "l2": hp["l2_weight"] * torch.norm(jittered, 2),
            }
            opt.zero_grad(set_to_none=True)
            sum(terms.values()).backward()
            opt.step()
        self.synthesis["final_synthesis_terms"] = {k: float(v.detach()) for k, v in terms.items()}
        return x.detach()

    def on_epoch_start(self, epoch: int) -> None:
        gen = torch.Generator().manual_seed(1_000_003 * (1_009 * self.setup.seed + self.task_index) + epoch)
        n, pad = len(self.pool), self.setup.data.crop_padding
        self.order = torch.randperm(n, generator=gen).to(self.pool.device)
        # the same crop-and-flip augmentation the real images get, drawn per epoch
        self._offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen).to(self.pool.device)
        flips = (
            torch.rand(n, generator=gen) < 0.5 if self.setup.data.flip else torch.zeros(n, dtype=torch.bool)
        )
        self._flips = flips.to(self.pool.device)
        self.cursor = 0

    def pool_batch(self, n: int) -> torch.Tensor:
        if not len(self.order):
            self.on_epoch_start(self.epoch)
        rows = self.order[(self.cursor + torch.arange(n, device=self.order.device)) % len(self.order)]
        self.cursor += n
        return random_crop_flip(
            self.pool[rows], self._offsets[rows], self._flips[rows], self.setup.data.crop_padding
        )

    def loss_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        x = self.pool_batch(len(batch))  # only the batch size is taken from the stream
        teacher = self.teacher_outputs(x).logits
        return {"kd": kd_loss(self.student(x), teacher, self.hp["temperature"])}

    def record_extras(self) -> dict[str, Any]:
        return dict(self.synthesis)
