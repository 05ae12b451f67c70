"""Cost columns that measure the technique: a deployable's inference costs are measured once and shared by every
cell that ships it, teacher and student latency are timed interleaved, and a cell's peak memory does not depend on
what ran before it in the process."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn as nn

from kdbench import deployables, metrics
from kdbench.errors import KdbenchWarning
from kdbench.runner import RunConfig, run

SHAPE = (1, 8, 8)
MiB = 2**20


def _small(width: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, width, 3), nn.ReLU(), nn.Flatten(), nn.Linear(width * 36, 10))


def _spy(monkeypatch, module, name: str) -> list:
    """Record the arguments of every call of `module.name`, calling through."""
    calls, real = [], getattr(module, name)

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return calls


def test_two_cells_with_one_student_read_one_measurement(tmp_path, monkeypatch):
    measured = _spy(monkeypatch, deployables, "_measure_now")
    tiny = dict(method="baseline", student="cifar_resnet8", train_subset=64, test_subset=100, epochs=1)
    records = [
        run(
            RunConfig(**tiny, seed=seed),
            device="cpu",
            results_dir=tmp_path / "res",
            cache_dir=tmp_path / "c",
            progress=False,
            latency_repeats=2,
        )
        for seed in (0, 1)
    ]
    (kept,) = (tmp_path / "res" / deployables.FOLDER).iterdir()
    assert len(measured) == 1 and kept.name.endswith(deployables.SUFFIX)
    costs = (
        "student_params",
        "deployable_bytes",
        "flops_per_image",
        "latency_ms_b1",
        "latency_ms_b1_iqr",
        "latency_ms_b256",
        "latency_ms_b256_iqr",
    )
    assert [records[0][k] for k in costs] == [records[1][k] for k in costs]
    assert records[0]["latency_ms_b1"] > 0 and records[0]["epoch_losses"] != records[1]["epoch_losses"]


def test_a_new_teacher_and_student_are_timed_interleaved_and_shared_by_architecture(tmp_path, monkeypatch):
    timed = _spy(monkeypatch, metrics, "latencies")
    student, teacher = _small(4), _small(16)
    first = deployables.measure(
        {"student": (student, 100), "teacher": (teacher, 400)}, SHAPE, torch.device("cpu"), tmp_path, rounds=3
    )
    assert [sorted(call[0]) for call in timed] == [["student", "teacher"]] * 2  # batch 1, then batch 256
    assert first["teacher"].params > first["student"].params and first["student"].bytes == 100

    # other weights, the same architecture: read back; another architecture: measured alone
    again = deployables.measure(
        {"student": (_small(4, seed=1), 100), "teacher": (_small(8), 200)},
        SHAPE,
        torch.device("cpu"),
        tmp_path,
        rounds=3,
    )
    assert again["student"] == first["student"]
    assert [sorted(call[0]) for call in timed[2:]] == [["teacher"]] * 2
    assert len(list((tmp_path / deployables.FOLDER).iterdir())) == 3

    # the same architecture shipped in fewer bytes (quantized), or laid out channels-last, is another deployable
    deployables.measure({"student": (_small(4), 50)}, SHAPE, torch.device("cpu"), tmp_path, rounds=1)
    deployables.measure(
        {"student": (_small(4).to(memory_format=torch.channels_last), 100)},
        SHAPE,
        torch.device("cpu"),
        tmp_path,
        rounds=1,
    )
    assert len(timed) == 8


def test_an_unreadable_measurement_is_measured_again(tmp_path):
    models = {"student": (_small(), 100)}
    deployables.measure(models, SHAPE, torch.device("cpu"), tmp_path, rounds=1)
    (path,) = (tmp_path / deployables.FOLDER).iterdir()
    path.write_text("{")
    with pytest.warns(KdbenchWarning, match="unreadable deployable measurement"):
        costs = deployables.measure(models, SHAPE, torch.device("cpu"), tmp_path, rounds=1)
    assert costs["student"].latency_ms_b1 > 0 and deployables._read(path) == costs["student"]


class _Tick(nn.Module):
    """Notes each call, so the order in which models were timed can be read back."""

    def __init__(self, name: str, log: list[str]) -> None:
        super().__init__()
        self.name, self.log = name, log

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.log.append(self.name)
        return x


def test_latencies_interleave_the_models_and_report_a_spread():
    log: list[str] = []
    models = {"a": _Tick("a", log), "b": _Tick("b", log)}
    result = metrics.latencies(models, SHAPE, 1, rounds=4, warmup=1)
    blocks = [name for name, _ in itertools.groupby(log)]
    assert blocks[-8:] == ["a", "b"] * 4  # the timed rounds alternate, one block of each model in turn
    assert all(lat.median_ms > 0 and lat.iqr_ms >= 0 for lat in result.values())
    assert all(m.training for m in models.values())  # evaluated in eval mode, handed back as found


def _fill(count: int) -> list[torch.Tensor]:
    """`count` tensors of 256 KiB, the size of a small network's activations, each written (so resident)."""
    return [torch.ones(64 * 1024) for _ in range(count)]


def _training_like_peak() -> int:
    with metrics.PeakMemory("cpu") as memory:
        activations = _fill(400)  # 100 MiB alive at once, then freed
        del activations
    return memory.peak_bytes


def test_peak_memory_does_not_depend_on_what_ran_before():
    torch.ones(4 * MiB).sum()  # 16 MiB allocated and freed: glibc now serves 256 KiB blocks from its heap
    alone = _training_like_peak()
    held = torch.ones(32 * MiB)  # 128 MiB an earlier cell still holds
    # 200 MiB freed between blocks still in use (two in three, so that a freed pair fits a new aligned block):
    # the allocator keeps it, and would reuse it unseen
    holes = _fill(1200)[2::3]
    after = _training_like_peak()
    assert 90 * MiB < alone < 130 * MiB
    assert abs(after - alone) < 10 * MiB, (alone / MiB, after / MiB)
    del held, holes


def test_peak_memory_is_none_without_the_kernels_reset(monkeypatch, tmp_path):
    monkeypatch.setattr(metrics, "CLEAR_REFS", str(tmp_path / "missing" / "clear_refs"))
    with metrics.PeakMemory("cpu") as memory:
        _fill(4)
    assert memory.peak_bytes is None
