"""`kdbench bench`: what one training step of each method costs, against what it has to cost.

Every method is built as a grid cell builds it (`runner.build_method`: the same data, teachers from the cache)
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
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import itertools
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn as nn
from torch.utils._pytree import tree_leaves, tree_map
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
from kdbench.results import atomic_write_text
from kdbench.runner import RunConfig, build_method, default_cache_dir
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


# ---- what a step runs ----------------------------------------------------------------------------------------------
def own_modules(method: Method) -> list[tuple[str, nn.Module]]:
    """The method's own networks besides the student: its direct children with parameters (regressors,
    discriminators, generators, projectors; a frozen one, such as a trained teacher assistant, named so), module
    lists opened into their members (peers, heads). Teachers are not submodules; parameter-free children (input
    transforms) are part of the student's own step."""
    found = []
    for name, child in method.named_children():
        if child is method.student:
            continue
        members = (
            child.named_children() if isinstance(child, (nn.ModuleList, nn.ModuleDict)) else [("", child)]
        )
        for key, module in members:
            params = list(module.parameters())
            if params:
                label = (f"{name}.{key}" if key else name) + (
                    "" if any(p.requires_grad for p in params) else " (frozen)"
                )
                found.append((label, module))
    return found


def _detached(value: Any) -> Any:
    """Copies of the tensors in a call's arguments, cut from the graph but needing a gradient exactly where the
    originals did, so a timed backward reaches what the real one reached."""
    return tree_map(
        lambda t: t.detach().clone().requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t,
        value,
    )


@dataclass
class Call:
    """One call of one of the method's own modules during the probe step, with detached copies of its inputs."""

    name: str
    module: nn.Module
    args: tuple
    kwargs: dict[str, Any]
    device_type: str = "cpu"
    precision: str = "fp32"  # the forward is autocast as in the training step, the backward is not

    def step(self) -> Step:
        """This call alone: forward and backward (gradients of ones on every output that needs them), or an
        inference forward when nothing in it needs a gradient."""
        leaves = [
            t
            for t in tree_leaves((self.args, self.kwargs, list(self.module.parameters())))
            if isinstance(t, torch.Tensor) and t.requires_grad
        ]
        if not leaves:
            return torch.inference_mode()(lambda _i: self.forward())

        def run(_i: int) -> None:
            for t in leaves:
                t.grad = None
            out = [t for t in tree_leaves(self.forward()) if isinstance(t, torch.Tensor) and t.requires_grad]
            torch.autograd.backward(out, [torch.ones_like(t) for t in out])

        return run

    def forward(self) -> Any:
        with autocast(self.device_type, self.precision):
            return self.module(*self.args, **self.kwargs)


class Probe:
    """Watches one training step: how often each teacher runs a forward pass, which teachers a method asked for
    features and how often for a whole `Batch` (what a teacher-output cache can serve), and every call of the
    method's own modules besides the student, with its inputs."""

    def __init__(self, method: Method) -> None:
        self.method = method
        self.forwards: Counter[int] = Counter()
        self.batch_requests: Counter[int] = Counter()
        self.features: set[int] = set()
        self.calls: list[Call] = []
        self._handles: list[Any] = []

    @property
    def teachers_run(self) -> list[int]:
        return sorted(self.forwards)

    @property
    def cacheable(self) -> bool:
        """Whether every teacher forward came from a request a teacher-output cache could have served."""
        return bool(self.forwards) and all(n <= self.batch_requests[i] for i, n in self.forwards.items())

    def __enter__(self) -> Probe:
        for i, teacher in enumerate(self.method.teachers):
            self._handles.append(teacher.register_forward_pre_hook(lambda *_, i=i: self.forwards.update([i])))
        for name, module in own_modules(self.method):
            self._handles.append(module.register_forward_hook(self._capture(name), with_kwargs=True))
        original = self.method.teacher_outputs
        signature = inspect.signature(original)

        def recorded(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            index = bound.arguments.get("index", 0)
            if bound.arguments.get("features"):
                self.features.add(index)
            if isinstance(bound.args[0], Batch):
                self.batch_requests.update([index])
            return original(*args, **kwargs)

        self.method.teacher_outputs = recorded  # an instance attribute shadows the method while probing
        return self

    def __exit__(self, *exc: object) -> None:
        del self.method.teacher_outputs
        for handle in self._handles:
            handle.remove()

    def _capture(self, name: str) -> Callable:
        setup = self.method.setup

        def hook(module: nn.Module, args: tuple, kwargs: dict, _output: Any) -> None:
            self.calls.append(
                Call(name, module, _detached(args), _detached(kwargs), setup.device.type, setup.precision)
            )

        return hook


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
    frame's `attrs`, which also hold the environment and the settings that `write_perf` puts above the table."""
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


# ---- the report ----------------------------------------------------------------------------------------------------
DISPLAY_DIGITS = {
    "step_ms": 1,
    "samples_per_s": 0,
    "vs_baseline": 2,
    "student_ms": 1,
    "teachers_ms": 1,
    "modules_ms": 1,
    "ideal_ms": 1,
    "vs_ideal": 2,
    "setup_s": 1,
    "peak_memory_mb": 0,
}

COLUMN_NOTES = (
    "`config`: the precision and memory format the step and every component of its ideal step ran in "
    "(`kdbench.fastpaths`; bf16 autocasts the loss terms, fp32 weights and update). "
    "`step_ms`: median time of one training step (`engine.train_step`: auxiliary step, loss terms, backward, "
    "SGD update); `samples_per_s`: the batch size over it; `vs_baseline`: over `baseline`'s step on the profile's "
    "student. `student_ms`: the student's own training step (`student_step` names the method timed for it); "
    "`teachers_ms`: the inference forward of every teacher the step runs (`teachers_timed`); `modules_ms`: "
    "forward + backward of each call of the method's own modules alone, an inference forward only for a frozen one (`modules_timed`); `ideal_ms`: their "
    "sum, and `vs_ideal`: the step over it. `setup_s`: untimed work before the first step (search, synthesis, "
    "estimates); `peak_memory_mb`: memory the first step adds (on the CPU, resident-set growth after freed memory "
    "was returned to the system: a rough figure). A row named `(cached teacher outputs)` serves the teachers' "
    "outputs from `kdbench.teacher_outputs` (filled by one untimed pass over the batches), as grid cells sharing "
    "outputs get them; it is timed for each offline method whose every teacher call the cache can serve (stage "
    "features only while an epoch of them fits the cache's budget). A row named `(teacher outputs held in "
    "memory)` does the same for a method whose stage features exceed that budget, with no limit: the grid never "
    "runs it so, but its `vs_ideal` shows what the step costs beyond its teacher forward (its own loss terms)."
)


def _ideal_target_line(rows: pd.DataFrame, what: str) -> str:
    missed = rows[rows["ideal_target"] == "not met"]
    over = (
        "; over: " + ", ".join(f"{r.method} {r.vs_ideal:.2f}x" for r in missed.itertuples())
        if len(missed)
        else ""
    )
    return (
        f"- Every offline method{what} within {IDEAL_TARGET:.2f}x of its ideal step: "
        f"{'met' if missed.empty else 'not met'} ({len(rows) - len(missed)} of {len(rows)}{over})"
    )


def target_lines(frame: pd.DataFrame) -> list[str]:
    """The targets, each as met / not met from the rows, for each configuration timed."""
    return [
        f"- [{config}] {line[2:]}"
        for config, rows in frame.groupby("config", sort=False)
        for line in _config_target_lines(rows)
    ]


def _config_target_lines(frame: pd.DataFrame) -> list[str]:
    offline = frame[frame["ideal_target"] != ""]
    served = offline["method"].str.endswith(CACHED_SUFFIX)
    held = offline["method"].str.endswith(HELD_SUFFIX)
    lines = [_ideal_target_line(offline[~served & ~held], "")]
    for rows, suffix in ((served, CACHED_SUFFIX), (held, HELD_SUFFIX)):
        if rows.any():
            lines.append(_ideal_target_line(offline[rows], suffix))
    cached = frame[frame["method"] == "kd" + CACHED_SUFFIX]
    if cached.empty:
        lines.append(
            f"- kd with cached teacher outputs within {CACHED_TARGET:.2f}x of baseline: not measured here"
        )
    else:
        ratio = float(cached["vs_baseline"].iloc[0])
        lines.append(
            f"- kd with cached teacher outputs within {CACHED_TARGET:.2f}x of baseline: "
            f"{'met' if ratio <= CACHED_TARGET else 'not met'} ({ratio:.2f}x)"
        )
    return lines


def perf_markdown(frame: pd.DataFrame) -> str:
    """perf.md: what was measured where (from the frame's attrs), the table, the targets, the columns explained."""
    a = frame.attrs
    e, s = a["env"], a["settings"]
    shown = frame.round(DISPLAY_DIGITS)
    notes = sorted({n for n in frame["note"] if n})
    lines = [
        f"# Training-step cost: profile {a['profile']}",
        "",
        f"{a['dataset']}, teacher {a['teacher']} → student {a['student']}, batch {a['batch_size']}"
        f" (training subset {a['train_subset']}). Each method built as its grid cell (seed 0 of the profile),"
        f" timed in one process on the same {s['steps']} batches: {s['warmup']} untimed warm-up call(s), then the"
        f" median of {s['repeats']} timed passes; every component timed interleaved with the step. Teachers: "
        + (
            f"trained for the bench (not in the teacher cache) for {', '.join(a['teachers_trained'])}"
            if a["teachers_trained"]
            else "all loaded from the teacher cache"
        )
        + f". Configurations: {', '.join(a['configs'])}. Bench wall time {a['wall_s']:.0f} s.",
        "",
        f"Environment: {e['device']} ({e['device_name']}), {e['threads']} threads, torch {e['torch']},"
        f" Python {e['python']}, kdbench {e['kdbench']}, commit {e['git_commit'] or 'unknown'}.",
        "",
        shown.to_markdown(index=False),
        "",
        "Targets:",
        *target_lines(frame),
        "",
        COLUMN_NOTES,
        *(["", "Notes: " + "; ".join(notes) + "."] if notes else []),
        *(["", "Not run: " + "; ".join(a["not_run"]) + "."] if a["not_run"] else []),
    ]
    return "\n".join(lines) + "\n"


def write_perf(results_dir: str | Path, frame: pd.DataFrame) -> Path:
    """Write the bench's frame as `perf.md` (environment, table, targets) and `perf.csv` under `results_dir`,
    each atomically; returns the Markdown file's path. Notebooks call this with `bench(...)`'s frame."""
    results_dir = Path(results_dir)
    atomic_write_text(results_dir / "perf.csv", frame.to_csv(index=False))
    return atomic_write_text(results_dir / "perf.md", perf_markdown(frame))
