"""The fast paths (kdbench.fastpaths): channels-last and bf16 change speed, not results beyond float tolerance;
the memory-format probe's decision is cached; bf16 is refused where it cannot run; the bench times each config."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

import kdbench.bench as bench_module
from kdbench import env, fastpaths
from kdbench.bench import CONFIGS, bench, runnable_configs
from kdbench.cli import main
from kdbench.engine import RECIPES, Recipe, get_recipe, optimizers, train_step
from kdbench.errors import KdbenchError
from kdbench.methods import get_method
from kdbench.models import create_model
from kdbench.perf_report import perf_markdown, target_lines
from kdbench.runner import RunConfig, run
from kdbench.timing import Settings
from tests.conftest import make_setup
from tests.helpers import KD_RUN, tiny_profile

TINY = dict(
    student="cifar_resnet8", teachers=("cifar_resnet14",), train_subset=256, epochs=1, test_subset=200
)
BF16 = env.bf16_supported(torch.device("cpu"))
needs_bf16 = pytest.mark.skipif(not BF16, reason="this CPU has no bf16 kernels")


def _trained_logits(fashion, stream, method_name: str, memory_format: str, steps: int) -> torch.Tensor:
    """The student's logits on a fixed batch after `steps` training steps of `method_name` in `memory_format`."""
    setup = make_setup(fashion, stream)
    for model in (setup.student, *setup.teachers):
        fastpaths.prepare_model(model, memory_format, "fp32")
    setup = dataclasses.replace(setup, memory_format=memory_format)
    torch.manual_seed(1)  # the method's own modules start alike in both layouts
    method = fastpaths.to_layout(get_method(method_name)(setup), memory_format)
    opt, aux_opt = optimizers(method, get_recipe("cifar"))
    batches = list(stream.epoch(0))
    for batch in batches[:steps]:
        train_step(method, batch, opt, aux_opt)
    method.eval()
    with torch.no_grad():
        return method.student(batches[3].x)


# The layouts sum in other orders, and on this CPU the contiguous kernels' gradients are the less exact ones (about
# 5e-4 relative against fp64, channels-last 5e-6): logits agree to ~1e-7 before training, ~1.5e-4 of their scale
# after two kd steps, ~1e-3 after one fitnet step (its hint weight of 100 amplifies the gradient differences).
@pytest.mark.parametrize(("method_name", "steps", "tolerance"), [("kd", 2, 1e-3), ("fitnet", 1, 5e-3)])
def test_channels_last_trains_like_contiguous(fashion, tiny_stream, method_name, steps, tolerance):
    contiguous = _trained_logits(fashion, tiny_stream, method_name, "contiguous", steps)
    channels_last = _trained_logits(fashion, tiny_stream, method_name, "channels_last", steps)
    torch.testing.assert_close(
        channels_last, contiguous, atol=tolerance * contiguous.abs().max().item(), rtol=0
    )


def test_channels_last_is_deterministic(fashion, tiny_stream):
    first, again = (_trained_logits(fashion, tiny_stream, "kd", "channels_last", 2) for _ in range(2))
    assert torch.equal(first, again)


def test_channels_last_weights_make_every_layer_channels_last():
    """Why inputs are not converted: the first convolution's channels-last weight makes its output channels-last."""
    model = fastpaths.prepare_model(create_model("cifar_resnet8", 10, 1), "channels_last", "fp32")
    seen = []
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(lambda _m, _i, out: seen.append(out))
    model(torch.randn(2, 1, 28, 28))  # a contiguous NCHW batch, as BatchStream yields
    assert seen and all(out.is_contiguous(memory_format=torch.channels_last) for out in seen)


@needs_bf16
def test_bf16_logits_come_out_fp32_and_losses_are_finite(fashion, tiny_stream):
    setup = make_setup(fashion, tiny_stream)
    plain = copy.deepcopy(setup.student)
    for model in (setup.student, *setup.teachers):
        fastpaths.prepare_model(model, "contiguous", "bf16")
    x = next(tiny_stream.epoch(0)).x
    with fastpaths.autocast("cpu", "bf16"):
        assert plain(x).dtype == torch.bfloat16  # what autocast alone gives: softmax would run in bf16
        assert setup.student(x).dtype == torch.float32
    method = get_method("kd")(dataclasses.replace(setup, precision="bf16"))
    opt, aux_opt = optimizers(method, get_recipe("cpu"))
    terms = train_step(method, next(tiny_stream.epoch(0)), opt, aux_opt)
    assert all(t.dtype == torch.float32 and torch.isfinite(t) for t in terms.values())
    assert all(p.dtype == torch.float32 for p in method.parameters())  # weights and the update stay fp32


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """The same kd cell in fp32 contiguous, fp32 channels-last and (where the CPU has it) bf16 channels-last,
    sharing one teacher."""
    root = tmp_path_factory.mktemp("fastpaths")
    out = {}
    for precision, layout in runnable_configs(torch.device("cpu")):
        out[precision, layout] = run(
            RunConfig(method="kd", precision=precision, **TINY),
            device="cpu",
            results_dir=root / f"{precision}-{layout}",
            cache_dir=root / "cache",
            progress=False,
            latency_repeats=1,
            memory_format=layout,
        )
    return out


def test_memory_format_is_recorded_but_not_in_the_cell_id(records):
    contiguous, channels_last = records["fp32", "contiguous"], records["fp32", "channels_last"]
    assert contiguous["memory_format"] == "contiguous" and channels_last["memory_format"] == "channels_last"
    assert contiguous["cell_id"] == channels_last["cell_id"]
    assert "precision" not in contiguous["config"] and contiguous["precision"] == "fp32"
    for a, b in zip(contiguous["epoch_losses"], channels_last["epoch_losses"], strict=True):
        assert a == pytest.approx(b, rel=1e-4)
    assert abs(contiguous["student_top1"] - channels_last["student_top1"]) <= 1.0  # at most 2 of 200 images


@needs_bf16
def test_bf16_run_is_finite_close_to_fp32_and_its_own_cell(records):
    fp32, bf16 = records["fp32", "contiguous"], records["bf16", "channels_last"]
    assert bf16["cell_id"] != fp32["cell_id"] and bf16["config"]["precision"] == "bf16"
    losses = bf16["epoch_losses"][-1]
    assert losses and all(math.isfinite(v) for v in losses.values())
    assert losses == pytest.approx(fp32["epoch_losses"][-1], rel=0.05)
    assert abs(bf16["student_top1"] - fp32["student_top1"]) <= 5.0


def test_fp32_cell_ids_are_unchanged_and_bad_precision_is_one_line():
    cfg = RunConfig(method="kd", **TINY)
    assert "precision" not in cfg.resolve()
    assert RunConfig(method="kd", precision="bf16", **TINY).cell_id() != cfg.cell_id()
    with pytest.raises(KdbenchError, match="valid choices: bf16, fp16, fp32"):
        RunConfig(method="kd", precision="fp8", **TINY).resolve()


def test_bf16_refused_without_bf16_kernels(monkeypatch):
    monkeypatch.setattr(env, "bf16_supported", lambda _device: False)
    with pytest.raises(KdbenchError, match="valid choices here: fp32"):
        fastpaths.check_precision("bf16", torch.device("cpu"))
    assert fastpaths.check_precision("fp32", torch.device("cpu")) == "fp32"
    assert runnable_configs(torch.device("cpu")) == [c for c in CONFIGS if c[0] == "fp32"]


def test_fp16_needs_cuda_and_only_it_scales_gradients():
    with pytest.raises(KdbenchError, match="'fp16' needs a CUDA device .*valid choices here: fp32"):
        fastpaths.check_precision("fp16", torch.device("cpu"))
    assert fastpaths.grad_scaler("fp32") is None and fastpaths.grad_scaler("bf16") is None
    assert isinstance(fastpaths.grad_scaler("fp16"), torch.amp.GradScaler)


def _key(fashion, student: str = "cifar_resnet8") -> fastpaths.ProbeKey:
    return fastpaths.ProbeKey.of(student, ("cifar_resnet8",), fashion.info, 8, "fp32", torch.device("cpu"))


def test_probe_decision_is_cached_and_reused(fashion, tmp_path, monkeypatch):
    key = _key(fashion)
    chosen = fastpaths.resolve_memory_format("auto", key, torch.device("cpu"), tmp_path)  # a real, tiny probe
    assert chosen in fastpaths.LAYOUTS
    assert len(list((tmp_path / "memory_format").glob("*.json"))) == 1

    def no_probe(*_args, **_kwargs):
        raise AssertionError("probed again although the decision is cached")

    monkeypatch.setattr(fastpaths, "probe_memory_format", no_probe)
    assert fastpaths.resolve_memory_format("auto", key, torch.device("cpu"), tmp_path) == chosen
    assert fastpaths.resolve_memory_format("contiguous", key, torch.device("cpu"), tmp_path) == "contiguous"
    with pytest.raises(KdbenchError, match="valid choices: auto, channels_last, contiguous"):
        fastpaths.resolve_memory_format("nhwc", key, torch.device("cpu"), tmp_path)


@pytest.mark.parametrize(("channels_last_ms", "expected"), [(96.0, "contiguous"), (90.0, "channels_last")])
def test_channels_last_only_when_clearly_faster(fashion, tmp_path, monkeypatch, channels_last_ms, expected):
    monkeypatch.setattr(
        fastpaths,
        "probe_memory_format",
        lambda *_a, **_k: {"channels_last": channels_last_ms, "contiguous": 100.0},
    )
    assert fastpaths.resolve_memory_format("auto", _key(fashion), torch.device("cpu"), tmp_path) == expected


def test_output_caches_are_kept_apart_by_arithmetic():
    tags = {
        fastpaths.output_cache_tag(layout, precision)
        for precision in fastpaths.PRECISIONS
        for layout in fastpaths.LAYOUTS
    }
    assert (
        len(tags) == len(fastpaths.PRECISIONS) * len(fastpaths.LAYOUTS)
        and fastpaths.output_cache_tag("contiguous", "fp32") == ""
    )  # fp32 caches keep their names


BENCH = tiny_profile("fastpaths-bench", ("baseline", "kd"), recipe="bench-tiny")


def test_bench_times_every_config_and_reports_what_cannot_run(tmp_path, monkeypatch):
    measure = bench_module.measure

    def fails_in_bf16(cell, *args, **kwargs):
        if cell.precision == "bf16":
            raise RuntimeError("no bf16 kernel for this\nsecond line")
        return measure(cell, *args, **kwargs)

    monkeypatch.setitem(RECIPES, "bench-tiny", Recipe("bench-tiny", 1, 32, 0.05))
    monkeypatch.setattr(bench_module, "measure", fails_in_bf16)
    monkeypatch.setattr(env, "bf16_supported", lambda _device: True)  # bf16 never runs here: it fails first
    frame = bench(
        BENCH,
        device="cpu",
        settings=Settings(0, 1, 1),
        cache_dir=tmp_path,
        progress=False,
        cached=False,
        configs=CONFIGS,
    )
    fp32 = [c for c in CONFIGS if c[0] == "fp32"]
    assert list(zip(frame["method"], frame["config"], strict=True)) == [
        (m, f"{p} {f}") for m in ("baseline", "kd") for p, f in fp32
    ]
    assert frame.attrs["not_run"] == [
        f"{m} in bf16 channels_last (no bf16 kernel for this)" for m in ("baseline", "kd")
    ]
    for _, rows in frame.groupby("config"):  # each config has its own baseline and ideal
        assert rows.set_index("method").loc["baseline", "vs_baseline"] == 1.0
    lines = target_lines(frame)
    assert any(line.startswith("- [fp32 channels_last] Every offline method") for line in lines)
    text = perf_markdown(frame)
    header = next(line for line in text.splitlines() if line.startswith("|"))
    assert "config" in header and "Not run: baseline in bf16 channels_last" in text
    with pytest.raises(KdbenchError, match="no method could be timed in bf16 channels_last: baseline in"):
        bench(
            BENCH,
            methods=["baseline"],
            device="cpu",
            settings=Settings(0, 1, 1),
            cache_dir=tmp_path,
            progress=False,
            configs=[("bf16", "channels_last")],
        )


@pytest.mark.parametrize(
    "argv",
    [
        [*KD_RUN, "--precision", "fp8"],
        [*KD_RUN, "--memory-format", "nhwc"],
        ["bench", "--profile", "smoke", "--precision", "fp8"],
        ["bench", "--profile", "smoke", "--memory-format", "nhwc"],
        ["grid", "--profile", "smoke", "--list", "--precision", "fp8"],
    ],
)
def test_cli_bad_fast_path_is_one_line(argv, capsys, tmp_path):
    assert main([*argv, "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kdbench: error:") and len(err.strip().splitlines()) == 1


def test_grid_list_names_bf16_cells_apart(capsys):
    listed = {}
    for precision in ("fp32", "bf16"):
        assert main(["grid", "--profile", "smoke", "--list", "--precision", precision]) == 0
        listed[precision] = [line.split(" ", 1) for line in capsys.readouterr().out.splitlines()]
    assert [rest for _, rest in listed["fp32"]] == [rest for _, rest in listed["bf16"]]  # the same cells
    assert not {i for i, _ in listed["fp32"]} & {i for i, _ in listed["bf16"]}  # under other ids
