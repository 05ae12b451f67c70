"""`kdbench bench`: what one training step of each method costs, against what it has to cost.

Every method is built as a grid cell builds it (`kdbench.runner.build_method`: the same data, teachers from the cache)
and timed in one process on the same pre-materialised batches through the engine's own `train_step`, so the
number is the real step, not a copy. Next to it, each part the step cannot avoid is timed alone on the same
batches, and their sum is the method's ideal step:

- the student's own training step: `baseline` on a copy of the method's student (after any search), or the
  method's teacher-free control where it has one (`qat` for qkd, `crossmodal_baseline`, `lifelong_finetune`);
- the inference forward of each teacher the step runs, with stage features when the method asks for them;
- every call of the method's own modules (regressors, peers, heads, discriminators, generators) alone, on
  copies of the inputs it received in a probe step: forward and backward, or only an inference forward for a
  frozen one (a teacher assistant).

`vs_ideal` is what the implementation adds on top of that (glue, repeated teacher calls, extra passes);
`vs_baseline` is what the method costs over training the profile's student alone. A method's components are
timed interleaved, repeat by repeat, so a drift in background load hits them alike (`kdbench.timing`).

Each method can be timed in several configurations, a precision and a memory format (`CONFIGS`,
`kdbench.fastpaths`): its step, its ideal step's components and its baseline all run in the row's configuration,
so each row's ratios compare like with like, and rows of one method compare the configurations.

What a step runs (its teachers' forwards, its own modules' calls) is found by watching one step
(`kdbench.step_probe`); the bench's frame is written as perf.md by `kdbench.perf_report`.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from kdbench import env
from kdbench.data.loader import Batch
from kdbench.engine import get_recipe
from kdbench.errors import KdbenchError, check_choice, unknown
from kdbench.fastpaths import LAYOUTS, autocast, check_precision
from kdbench.methods import Method, get_method
from kdbench.methods.base import REFERENCE_ROWS
from kdbench.metrics import PeakMemory, release_memory
from kdbench.models.features import forward_with_features
from kdbench.profiles import Profile, get_profile, main_cells
from kdbench.runner import RunConfig, build_method, default_cache_dir
from kdbench.step_probe import Call, Probe
from kdbench.teacher_outputs import DEFAULT_FEATURE_BUDGET_BYTES
from kdbench.teachers import TeacherCache
from kdbench.timing import Settings, Step, fixed_batches, interleaved_medians, ready, training_step

IDEAL_TARGET = 1.10  # every offline method's step within 1.10x of its ideal step
CACHED_TARGET = 1.05  # kd with cached teacher outputs within 1.05x of baseline's step
CACHED_SUFFIX = (
    " (cached teacher outputs)"  # the row of a method whose teacher outputs come from the shared cache
)
# the row of a method whose teacher features exceed the cache's budget, served all the same: not a configuration the
# grid runs, but it splits the method's step into its teacher forward and everything else (its own loss terms)
HELD_SUFFIX = " (teacher outputs held in memory)"
UNLIMITED_BUDGET = 2**62

# (precision, memory format) a step is timed in (kdbench.fastpaths); the first is the default path and the reference
CONFIGS: tuple[tuple[str, str], ...] = (
    ("fp32", "contiguous"),
    ("fp32", "channels_last"),
    ("bf16", "channels_last"),
)


# ---- timing ------------------------------------------------------------------------------------------------------
def teacher_step(teacher: nn.Module, batches: list[Batch], features: bool, precision: str = "fp32") -> Step:
    """A frozen teacher's inference forward on the i-th batch, features tapped as a method asking for them gets,
    in the run's precision."""

    def step(i: int) -> None:
        with torch.inference_mode(), autocast(batches[i].x.device.type, precision):
            forward_with_features(teacher, batches[i].x, stages=features, embedding=features)

    return step


# ---- one method ----------------------------------------------------------------------------------------------------
def student_reference(method: Method, student_arch: str) -> Method | None:
    """The method that trains the same student alone: None for a reference row (its own step is that); the
    method's teacher-free control where it has one; else `baseline` on a copy of the method's student (a NAS
    method's chosen architecture, an online method's deployed peer)."""
    if method.info.technique in REFERENCE_ROWS:
        return None
    name = method.info.compare_to
    cls = get_method(name)
    if name == "baseline":
        return cls(dataclasses.replace(method.setup, student=copy.deepcopy(method.student), teachers=[]))
    shared = {k: v for k, v in method.hp.items() if k in cls.defaults}
    return cls(
        dataclasses.replace(method.setup, student=method.setup.make_model(student_arch), teachers=[]),
        **shared,
    )


def features_fit_output_cache(
    teachers: list[nn.Module], features: set[int], batch: Batch, batches: int
) -> bool:
    """Whether an epoch of the stage features asked of each teacher fits a teacher-output cache's default budget:
    above it the cache keeps none and recomputes them (`kdbench.teacher_outputs`), so a method asking for them
    gains nothing from it, and a row timed on a few cached batches would flatter it."""
    for i in features:
        with torch.inference_mode():
            stages = forward_with_features(teachers[i], batch.x, embedding=False).stages
        if sum(s.numel() * s.element_size() for s in stages) * batches > DEFAULT_FEATURE_BUDGET_BYTES:
            return False
    return True


@dataclass
class Measurement:
    """One method's row, whether a teacher-output cache could serve every teacher call of its step, and whether
    its teachers came from the teacher cache (False: they were trained for the bench)."""

    row: dict[str, Any]
    cacheable: bool
    teachers_loaded: bool
    servable: bool  # every teacher call is a request a cache could serve, were its budget large enough


def measure(
    cfg: RunConfig,
    device: torch.device,
    cache: TeacherCache,
    settings: Settings,
    data_root: str | Path | None = None,
    share_outputs: bool = False,
    hold: bool = False,
    memory_format: str = "contiguous",
) -> Measurement:
    """The method's step, the components of its ideal step and the plain baseline, timed interleaved, all in the
    cell's precision and `memory_format`. `share_outputs`: teacher outputs served from a cache
    (`kdbench.teacher_outputs`), filled by an untimed pass over the batches first; `hold`: with no limit on the
    stage features it keeps."""
    budget = UNLIMITED_BUDGET if hold else DEFAULT_FEATURE_BUDGET_BYTES
    method, prepared, teachers = build_method(
        cfg,
        device,
        cache,
        data_root,
        progress=False,
        share_outputs=share_outputs,
        feature_budget_bytes=budget,
        memory_format=memory_format,
    )
    start = time.perf_counter()
    stream, note = ready(method, prepared.train)
    setup_s = time.perf_counter() - start
    batches = fixed_batches(stream, settings.steps)
    step = training_step(method, batches, cfg.recipe)
    if share_outputs:
        for i in range(len(batches)):
            step(i)
    release_memory(device)
    with PeakMemory(device) as memory, Probe(method) as probe:
        step(0)
    steps: dict[str, Step] = {"step": step}
    reference = student_reference(method, cfg.student)
    if reference is not None:
        ready(reference, prepared.train)
        steps["student"] = training_step(reference, batches, cfg.recipe)
    plain = get_method("baseline")(
        dataclasses.replace(method.setup, student=method.setup.make_model(cfg.student), teachers=[])
    )
    same_as_plain = (
        (cfg.method == "baseline")
        if reference is None
        else (reference.info.name == "baseline" and repr(reference.student) == repr(plain.student))
    )
    if not same_as_plain:
        steps["baseline"] = training_step(plain, batches, cfg.recipe)
    for i in probe.teachers_run:
        steps[f"teacher {i}"] = teacher_step(method.teachers[i], batches, i in probe.features, cfg.precision)
    for k, call in enumerate(probe.calls):
        steps[f"module {k}"] = call.step()
    t = interleaved_medians(steps, settings, device)
    student_s = t.get("student", t["step"])
    teachers_s = sum(t[f"teacher {i}"] for i in probe.teachers_run)
    modules_s = sum(t[f"module {k}"] for k in range(len(probe.calls)))
    ideal_s = student_s + teachers_s + modules_s
    baseline_s = t.get("baseline", student_s)
    offline = method.info.scheme == "offline" and method.info.technique not in REFERENCE_ROWS
    cacheable = probe.cacheable and features_fit_output_cache(
        method.teachers, probe.features, batches[0], len(stream)
    )
    if probe.cacheable and not cacheable:
        note = "; ".join(
            filter(None, [note, "an epoch of its teacher features exceeds the output cache's budget"])
        )
    row = {
        "method": cfg.method + (HELD_SUFFIX if hold else CACHED_SUFFIX if share_outputs else ""),
        "config": config_label(cfg.precision, method.setup.memory_format),
        "scheme": method.info.scheme,
        "step_ms": 1000 * t["step"],
        "samples_per_s": len(batches[0]) / t["step"],
        "vs_baseline": t["step"] / baseline_s,
        "student_ms": 1000 * student_s,
        "teachers_ms": 1000 * teachers_s,
        "modules_ms": 1000 * modules_s,
        "ideal_ms": 1000 * ideal_s,
        "vs_ideal": t["step"] / ideal_s,
        "ideal_target": ("met" if t["step"] / ideal_s <= IDEAL_TARGET else "not met") if offline else "",
        "setup_s": setup_s,
        "peak_memory_mb": memory.peak_bytes / 2**20 if memory.peak_bytes is not None else None,
        "student_step": reference.info.name if reference is not None else cfg.method,
        "teachers_timed": ", ".join(
            cfg.teachers[i] + (" +features" if i in probe.features else "") for i in probe.teachers_run
        ),
        "modules_timed": _call_summary(probe.calls),
        "note": note,
    }
    return Measurement(row, cacheable, all(teacher.from_cache for teacher in teachers), probe.cacheable)


def _call_summary(calls: list[Call]) -> str:
    """`regressor`, `discriminator x3`: each module timed, with how often the step calls it."""
    counts: dict[str, int] = {}
    for call in calls:
        counts[call.name] = counts.get(call.name, 0) + 1
    return ", ".join(name if n == 1 else f"{name} x{n}" for name, n in counts.items())


# ---- the bench -----------------------------------------------------------------------------------------------------
def bench_cells(profile: Profile, methods: Sequence[str] | None = None) -> list[RunConfig]:
    """One cell per method, configured as the grid configures it (hyperparameters, extra teachers) on the profile's
    first pair and first seed; `baseline` first, since every row is compared with it."""
    pair, seed = profile.pairs[0], profile.seeds[0]
    cells = {
        c.method: c
        for c in main_cells(profile)  # a teacher-free method's cell has no teacher
        if c.student == pair.student
        and c.teachers[:1] in ((), (pair.teacher,))
        and c.seed == seed
        and not c.variant
    }
    names = list(dict.fromkeys(methods or cells))
    for name in names:
        if name not in cells:
            raise unknown(f"method of profile {profile.name!r}", name, cells)
    return [cells[name] for name in sorted(names, key=lambda n: n != "baseline")]


def bench(
    profile: Profile | str = "cpu",
    methods: Sequence[str] | None = None,
    device: str = "auto",
    settings: Settings = Settings(),
    cache_dir: str | Path | None = None,
    data_root: str | Path | None = None,
    progress: bool = True,
    cached: bool = True,
    configs: Sequence[tuple[str, str]] = CONFIGS[:1],
) -> pd.DataFrame:
    """Time every method of the profile (or `methods`) in each (precision, memory format) of `configs`; one row
    each, and with `cached` a second row for each offline method whose teacher calls a teacher-output cache can
    serve. A method that fails in a configuration other than fp32 contiguous is left out of it and named in the
    frame's `attrs`, which also hold the environment and the settings that `perf_report.write_perf` puts above
    the table."""
    profile = get_profile(profile) if isinstance(profile, str) else profile
    settings.check()
    dev = env.resolve_device(device)
    for precision, _ in configs:
        check_precision(precision, dev)
    cells = bench_cells(profile, methods)
    cache = TeacherCache(cache_dir or default_cache_dir())
    start = time.perf_counter()
    measured: list[Measurement] = []
    not_run: list[str] = []
    for cfg, (precision, layout) in tqdm(
        list(itertools.product(cells, configs)), desc="bench", disable=not progress
    ):
        cell = dataclasses.replace(cfg, precision=precision)
        try:
            first = measure(cell, dev, cache, settings, data_root, memory_format=layout)
        except (RuntimeError, NotImplementedError) as exc:  # a kernel or an operation the fast path lacks
            if (precision, layout) == CONFIGS[0]:
                raise
            not_run.append(f"{cfg.method} in {config_label(precision, layout)} ({str(exc).splitlines()[0]})")
            continue
        measured.append(first)
        if cached and first.servable and first.row["ideal_target"]:
            measured.append(
                measure(
                    cell,
                    dev,
                    cache,
                    settings,
                    data_root,
                    share_outputs=True,
                    hold=not first.cacheable,
                    memory_format=layout,
                )
            )
    if not measured:
        raise KdbenchError(
            f"no method could be timed in {', '.join(config_label(*c) for c in configs)}: "
            + "; ".join(not_run)
        )
    frame = pd.DataFrame([m.row for m in measured])
    pair = profile.pairs[0]
    frame.attrs.update(
        profile=profile.name,
        dataset=profile.dataset,
        teacher=pair.teacher,
        student=pair.student,
        batch_size=get_recipe(profile.recipe).batch_size,
        train_subset=profile.train_subset,
        settings=dataclasses.asdict(settings),
        env=env.describe(dev),
        wall_s=time.perf_counter() - start,
        teachers_trained=list(dict.fromkeys(m.row["method"] for m in measured if not m.teachers_loaded)),
        configs=[config_label(*c) for c in configs],
        not_run=not_run,
    )
    return frame


def config_label(precision: str, memory_format: str) -> str:
    return f"{precision} {memory_format}"


def runnable_configs(
    device: torch.device, precision: str | None = None, memory_format: str | None = None
) -> list[tuple[str, str]]:
    """The CONFIGS the device can run (bf16 needs bf16 kernels), only those of `precision` / `memory_format`
    when given (bf16 asked for on a device without it is an error, not an empty bench)."""
    if precision is not None:
        check_precision(precision, device)
    if memory_format is not None:
        check_choice("memory format", memory_format, LAYOUTS)
    return [
        (p, f)
        for p, f in CONFIGS
        if precision in (None, p)
        and memory_format in (None, f)
        and (p == "fp32" or env.bf16_supported(device))
    ]
