"""On a CUDA device only (scripts/device_check.sh runs these; elsewhere they are skipped): a cell trains and is
recorded on the GPU, and bf16 autocast there holds fp32's accuracy on a short run."""

from __future__ import annotations

import math

import pytest
import torch

from kdbench.runner import RunConfig, run

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CELL = dict(
    student="cifar_resnet20",
    teachers=("cifar_resnet56",),
    dataset="synthetic:cifar100",
    recipe="cifar",
    epochs=2,
    teacher_epochs=1,
    train_subset=5000,
    test_subset=2000,
)


def _run(tmp_path, **fields) -> dict:
    cfg = RunConfig(method="kd", **{**CELL, **fields})
    return run(cfg, device="cuda", results_dir=tmp_path / "res", cache_dir=tmp_path / "cache", progress=False)


def test_a_cell_trains_and_is_recorded_on_the_gpu(tmp_path):
    rec = _run(tmp_path)
    assert rec["status"] == "ok" and rec["env"]["device"].startswith("cuda") and rec["env"]["gpu"]
    assert all(math.isfinite(v) for epoch in rec["epoch_losses"] for v in epoch.values())
    assert rec["student_top1"] > 2.0  # above chance (1%) on the learnable synthetic data
    assert rec["peak_memory_bytes"] > 0 and rec["latency_ms_b256"] > 0


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_holds_fp32_accuracy(tmp_path, precision):
    fp32, low = _run(tmp_path), _run(tmp_path, precision=precision)
    assert low["precision"] == precision and low["cell_id"] != fp32["cell_id"]
    assert all(math.isfinite(v) for epoch in low["epoch_losses"] for v in epoch.values())
    assert abs(low["student_top1"] - fp32["student_top1"]) < 5.0


def test_compiled_cell_matches_eager(tmp_path):
    eager = _run(tmp_path)
    compiled = run(
        RunConfig(method="kd", **CELL),
        device="cuda",
        results_dir=tmp_path / "compiled",
        cache_dir=tmp_path / "cache",
        progress=False,
        compile_models=True,
        cudnn_benchmark=True,
    )
    assert compiled["speed_ups"] == ["compile", "cudnn_benchmark"] and compiled["cell_id"] == eager["cell_id"]
    assert abs(compiled["student_top1"] - eager["student_top1"]) < 5.0
