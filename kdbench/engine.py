"""The one training loop every method runs in.

The loop knows nothing about distillation: it asks the method for named loss terms, sums them and steps SGD.
Regimes plug in through the method's hooks (auxiliary step, task sequence, before-training work). Loss values
stay on the device and are read once per epoch, so the hot loop never waits on the host.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from kdbench.data.loader import Batch, BatchStream
from kdbench.errors import check_choice, unknown
from kdbench.fastpaths import autocast, grad_scaler
from kdbench.methods.base import Method
from kdbench.metrics import PeakMemory
from kdbench.resume import Checkpoint, load_module_state, module_state, set_rng_state

SCHEDULES = ("step", "onecycle")
AUGMENTATIONS = ("crop+flip", "flip", "none")


@dataclass(frozen=True)
class Recipe:
    """An SGD recipe. Milestones and warm-up are fractions of the run, so `epochs` can change without rewriting them.

    `schedule`: "step" multiplies the rate by `gamma` at each milestone (the CIFAR benchmark's); "onecycle" warms it
    up linearly over the first `warmup` of the steps and anneals it to zero with a half cosine, per step, which gets a
    short run much closer to convergence than a step schedule of the same length. `augment`: which of the dataset's
    augmentations the training stream applies (random crop with the dataset's padding and/or horizontal flip)."""

    name: str
    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    schedule: str = "step"
    warmup: float = 0.0
    nesterov: bool = False
    augment: str = "crop+flip"

    def __post_init__(self) -> None:
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("augmentation", self.augment, AUGMENTATIONS)

    def milestone_epochs(self, epochs: int) -> list[int]:
        return sorted({max(1, round(f * epochs)) for f in self.milestones if round(f * epochs) < epochs})

    def lr_factor(self, step: int, steps_per_epoch: int, epochs: int) -> float:
        """The learning rate at global `step` of a run of `epochs`, as a fraction of `lr`."""
        if self.schedule == "step":
            epoch = step // max(steps_per_epoch, 1)
            return self.gamma ** sum(epoch >= m for m in self.milestone_epochs(epochs))
        total = max(steps_per_epoch * epochs, 1)
        warm = self.warmup * total
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(total - warm, 1)))

    def as_dict(self) -> dict:
        return asdict(self)


RECIPES: dict[str, Recipe] = {
    # The CIFAR-100 benchmark recipe of RepDistiller/CRD: 240 epochs, batch 64, lr 0.05, x0.1 at 150/180/210.
    "cifar": Recipe("cifar", 240, 64, 0.05, 0.9, 5e-4, (150 / 240, 180 / 240, 210 / 240), 0.1),
    # kdbench's first CPU recipe: batch 128 at lr 0.1 (the linear-scaling rule from 64 @ 0.05), x0.1 at 50%/75%.
    "cpu": Recipe("cpu", 10, 128, 0.1, 0.9, 5e-4, (0.5, 0.75), 0.1),
    # The short-schedule recipe of the cpu profile: one cycle (10% linear warm-up, cosine to zero, per step),
    # Nesterov momentum, batch 128 at lr 0.1; AUGMENT chosen by measurement (see README, "The cpu profile").
    "short": Recipe("short", 10, 128, 0.1, 0.9, 5e-4, (), 0.1, "onecycle", 0.1, True, "flip"),
}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise unknown("recipe", name, RECIPES)
    return RECIPES[name]


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; carries the global step at which it first did."""

    def __init__(self, step: int, terms: dict[str, float]) -> None:
        super().__init__(f"loss became non-finite at step {step} (epoch means: {terms})")
        self.step = step


@dataclass
class FitStats:
    """What training cost: wall time (setup work of the method included), throughput, memory, losses."""

    wall_time_s: float = 0.0
    samples: int = 0
    peak_memory_bytes: int | None = 0  # None where the device's peak cannot be measured per run
    epoch_losses: list[dict[str, float]] = field(default_factory=list)
    untimed_s: float = (
        0.0  # time spent in the caller's per-epoch and per-task hooks (evaluation), not training
    )
    started: float = 0.0  # perf_counter() when this process began training
    resumed_s: float = 0.0  # training time spent before a resume, in the processes that saved the checkpoint
    resumed_at_epoch: int | None = None  # the first epoch this process trained, when it resumed a checkpoint

    def trained_s(self) -> float:
        """Training time so far, over every process that trained this cell."""
        return time.perf_counter() - self.started - self.untimed_s + self.resumed_s

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.wall_time_s if self.wall_time_s else 0.0


def fit(
    method: Method,
    stream: BatchStream,
    recipe: Recipe,
    epochs: int,
    after_task: Callable[[int], None] | None = None,
    progress: bool = True,
    desc: str = "",
    after_epoch: Callable[[int], None] | None = None,
    checkpoint: Checkpoint | None = None,
    log_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> FitStats:
    """Train `method` on `stream` for `epochs` per task. `after_epoch(e)` (e counts epochs over all tasks) and
    `after_task(t)` run untimed after each epoch and task, with the method back in training mode afterwards.
    `checkpoint`: save the training state every few epochs and resume from a saved one (`kdbench.resume`;
    ignored for a method with a task sequence). `log_epoch(e, means)`: each epoch's mean loss terms, as soon as they
    are read, untimed (`kdbench.epoch_log`)."""
    stats = FitStats()
    place(method, stream.device)
    with PeakMemory(stream.device) as memory:
        stats.started = time.perf_counter()
        tasks = begin_training(method, stream)
        for t, classes in enumerate(tasks or [None]):
            phase = stream if classes is None else start_task(method, stream, tasks, t)
            _fit_phase(
                method,
                phase,
                recipe,
                epochs,
                stats,
                progress,
                desc if classes is None else f"{desc} task {t}",
                after_epoch,
                checkpoint if tasks is None else None,
                log_epoch,
            )
            if after_task is not None:
                _untimed(method, stats, after_task, t)
        stats.wall_time_s = stats.trained_s()
    stats.peak_memory_bytes = memory.peak_bytes
    return stats


def _untimed(method: Method, stats: FitStats, hook: Callable[[int], None], index: int) -> None:
    """Run a caller's hook outside the timed training, then put the method back in training mode."""
    pause = time.perf_counter()
    hook(index)
    method.train()
    stats.untimed_s += time.perf_counter() - pause


def place(method: Method, device: torch.device) -> None:
    """Move the method (student, adapters) and its frozen teachers, in evaluation mode, to `device`."""
    method.to(device)
    for teacher in method.teachers:
        teacher.to(device).eval()


def begin_training(method: Method, stream: BatchStream) -> list[list[int]] | None:
    """The method's work before its first step (data handed over, search, synthesis); returns its task
    sequence, or None for ordinary training."""
    method.train()
    method.on_training_data(stream)
    method.before_training()
    return method.tasks(stream.info.num_classes)


def start_task(method: Method, stream: BatchStream, tasks: list[list[int]], t: int) -> BatchStream:
    """Enter task `t` of the method's sequence; returns the stream of the samples that task trains on."""
    trained = method.task_training_classes(t, tasks)
    phase = stream.subset(torch.isin(stream.labels, torch.tensor(trained, device=stream.device)))
    method.task_index = t
    method.on_task_start(t, tasks[t])
    return phase


def optimizers(method: Method, recipe: Recipe) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer | None]:
    """The main SGD optimiser and the method's auxiliary one (None without auxiliary parameters)."""
    opt = torch.optim.SGD(
        method.trainable_parameters(),
        lr=recipe.lr,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
        nesterov=recipe.nesterov,
    )
    aux_params = method.auxiliary_parameters()
    return opt, method.auxiliary_optimizer(aux_params) if aux_params else None


def train_step(
    method: Method,
    batch: Batch,
    opt: torch.optim.Optimizer,
    aux_opt: torch.optim.Optimizer | None,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, torch.Tensor]:
    """One training step: the auxiliary step (if any), then the main loss terms, backward and SGD update.
    Returns every term (auxiliary ones prefixed `aux_`), still on the device. The loop and the bench
    (kdbench.bench) both call this, so what is timed is exactly what is trained. The loss terms are computed
    in the run's precision (`Setup.precision`, see kdbench.fastpaths); backward and the update are not autocast.
    `scaler`: fp16's gradient scaler (kdbench.fastpaths.grad_scaler), updated once per step."""
    terms: dict[str, torch.Tensor] = {}
    precise = autocast(
        method.setup.device.type, method.setup.precision
    )  # data-free methods never read batch.x
    if aux_opt is not None:
        aux_opt.zero_grad(set_to_none=True)
        with precise:
            aux_terms = method.auxiliary_loss(batch)
        _update(sum(aux_terms.values()), aux_opt, scaler)
        terms.update({f"aux_{k}": v for k, v in aux_terms.items()})
    with precise:
        main_terms = method.step_terms(batch)
    opt.zero_grad(set_to_none=True)
    _update(sum(main_terms.values()), opt, scaler)
    if scaler is not None:
        scaler.update()
    terms.update(main_terms)
    return terms


def _update(loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    """Backward and an SGD step, through the gradient scaler when there is one (it skips a step with inf grads)."""
    if scaler is None:
        loss.backward()
        opt.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(opt)


def _fit_phase(
    method: Method,
    stream: BatchStream,
    recipe: Recipe,
    epochs: int,
    stats: FitStats,
    progress: bool,
    desc: str,
    after_epoch: Callable[[int], None] | None = None,
    checkpoint: Checkpoint | None = None,
    log_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> None:
    opt, aux_opt = optimizers(method, recipe)
    scaler = grad_scaler(method.setup.precision)
    steps = len(stream)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: recipe.lr_factor(s, steps, epochs)
    )  # stepped per batch
    first = _resume(checkpoint, method, (opt, aux_opt, sched, scaler), stats) if checkpoint is not None else 0
    step = len(stats.epoch_losses) * len(stream)
    bar = tqdm(range(first, epochs), desc=desc or type(method).__name__, disable=not progress, leave=False)
    for epoch in bar:
        method.epoch = epoch
        method.on_epoch_start(epoch)
        sums: dict[str, torch.Tensor] = {}
        first_bad = torch.tensor(-1, device=stream.device)
        batches = 0
        for batch in stream.epoch(epoch):
            terms = train_step(method, batch, opt, aux_opt, scaler)
            sched.step()
            total = torch.zeros((), device=stream.device)
            for key, value in terms.items():
                sums[key] = sums.get(key, 0) + value.detach()
                total = total + value.detach()  # non-finite if any term is, auxiliary ones included
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(total), step, first_bad)
            step += 1
            batches += 1
            stats.samples += len(batch)
        method.on_epoch_end(epoch)
        means = {k: float(v) / max(batches, 1) for k, v in sums.items()}  # the one host read per epoch
        stats.epoch_losses.append(means)
        bar.set_postfix({k: f"{v:.3g}" for k, v in means.items()})
        if int(first_bad) >= 0:
            raise TrainingDiverged(int(first_bad), means)
        if log_epoch is not None:
            pause = time.perf_counter()
            log_epoch(len(stats.epoch_losses) - 1, means)
            stats.untimed_s += time.perf_counter() - pause
        if after_epoch is not None:
            _untimed(method, stats, after_epoch, len(stats.epoch_losses) - 1)
        if checkpoint is not None and checkpoint.due(epoch, epochs):
            pause = time.perf_counter()
            checkpoint.save(
                {
                    "epoch": epoch,
                    "method": module_state(method),
                    "opt": opt.state_dict(),
                    "aux_opt": aux_opt.state_dict() if aux_opt is not None else None,
                    "sched": sched.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "stats": {
                        "epoch_losses": stats.epoch_losses,
                        "samples": stats.samples,
                        "trained_s": stats.trained_s(),
                    },
                }
            )
            stats.untimed_s += time.perf_counter() - pause


def _resume(checkpoint: Checkpoint, method: Method, steppers: tuple, stats: FitStats) -> int:
    """Load the checkpoint's state, if there is one, into the freshly built training (`steppers`: optimiser,
    auxiliary optimiser, scheduler, gradient scaler, the last two possibly None); returns the first epoch still
    to train (0 without a checkpoint)."""
    saved = checkpoint.load()
    if saved is None:
        return 0
    load_module_state(method, saved["method"])
    for stepper, key in zip(steppers, ("opt", "aux_opt", "sched", "scaler"), strict=True):
        if stepper is not None:
            stepper.load_state_dict(saved[key])
    stats.epoch_losses = list(saved["stats"]["epoch_losses"])
    stats.samples = saved["stats"]["samples"]
    stats.resumed_s = saved["stats"]["trained_s"] - (time.perf_counter() - stats.started - stats.untimed_s)
    stats.resumed_at_epoch = saved["epoch"] + 1
    set_rng_state(saved["rng"])
    return saved["epoch"] + 1
