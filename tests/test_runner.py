"""End to end through the runner: records, determinism, the teacher cache, bad input at the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from kdbench import results
from kdbench.cli import main
from kdbench.runner import RunConfig, get_teacher, run
from kdbench.teachers import TeacherCache
from tests.helpers import KD_RUN

TINY = dict(
    student="cifar_resnet8", teachers=("cifar_resnet14",), train_subset=256, epochs=1, test_subset=1000
)

REQUIRED = {
    "cell_id": str,
    "config": dict,
    "method": str,
    "technique": str,
    "teacher": str,
    "student": str,
    "dataset": str,
    "seed": int,
    "epochs": int,
    "student_top1": float,
    "teacher_top1": float,
    "ece": float,
    "agreement": float,
    "student_params": int,
    "teacher_params": int,
    "extra_params": int,
    "flops_per_image": int,
    "deployable_bytes": int,
    "latency_ms_b1": float,
    "latency_ms_b256": float,
    "train_time_s": float,
    "train_samples_per_s": float,
    "peak_memory_bytes": int,
    "env": dict,
}


def _run_kd(root, results: str) -> dict:
    """The tiny kd cell into root/results, with root's teacher cache."""
    cfg = RunConfig(method="kd", **TINY)
    return run(
        cfg,
        device="cpu",
        results_dir=root / results,
        cache_dir=root / "cache",
        progress=False,
        latency_repeats=2,
    )


@pytest.fixture(scope="module")
def kd_record(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    return root, _run_kd(root, "res")


def test_record_schema(kd_record):
    _, rec = kd_record
    for key, kind in REQUIRED.items():
        assert isinstance(rec[key], kind), f"{key}: {rec[key]!r}"
    for key in ("kdbench", "torch", "device_name", "cpu", "git_commit"):
        assert key in rec["env"]
    assert 0 <= rec["student_top1"] <= 100 and rec["flops_per_image"] > 0 and rec["deployable_bytes"] > 0
    assert rec["config"]["hparams"] == {"temperature": 4.0, "ce_weight": 0.1, "kd_weight": 0.9}


def test_records_load_as_dataframe(kd_record):
    root, rec = kd_record
    df = results.load(root / "res")
    assert len(df) == 1 and df.loc[0, "cell_id"] == rec["cell_id"]
    assert "config.hparams.temperature" in df.columns and "env.torch" in df.columns
    assert not list((root / "res").rglob("*.tmp")), "temporary files left behind"


def test_same_seed_same_record_and_teacher_reused(kd_record):
    root, first = kd_record
    again = _run_kd(root, "res2")
    assert again["teachers_from_cache"] == [True]
    for key in (
        "cell_id",
        "student_top1",
        "teacher_top1",
        "ece",
        "agreement",
        "epoch_losses",
        "flops_per_image",
    ):
        assert again[key] == first[key], key


def test_different_config_different_cell():
    a = RunConfig(method="kd", **TINY)
    b = RunConfig(method="kd", **{**TINY, "seed": 1})
    c = RunConfig(method="kd", **TINY, hparams={"temperature": 2})
    assert len({a.cell_id(), b.cell_id(), c.cell_id()}) == 3
    assert a.cell_id() == RunConfig(method="kd", **TINY, hparams={"temperature": 4.0}).cell_id()


@pytest.mark.parametrize("damage", ["truncate", "flip", "no_sidecar"])
def test_corrupt_teacher_checkpoint_is_retrained(kd_record, tmp_path, damage):
    root, _ = kd_record
    cache_dir = tmp_path / "cache"
    shutil.copytree(root / "cache", cache_dir)
    (ckpt,) = (cache_dir / "teachers").glob("*.safetensors")
    data = ckpt.read_bytes()
    if damage == "truncate":
        ckpt.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        ckpt.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    else:
        ckpt.with_suffix(".json").unlink()
    cfg, cache = RunConfig(method="baseline", **TINY), TeacherCache(cache_dir)
    with pytest.warns(UserWarning, match="unusable"):
        first = get_teacher(cfg, 0, torch.device("cpu"), cache, progress=False)
    assert not first.from_cache  # retrained, and the new checkpoint is valid again:
    again = get_teacher(cfg, 0, torch.device("cpu"), cache, progress=False)
    assert again.from_cache and again.meta["top1"] == first.meta["top1"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--method", "nope", "--student", "cifar_resnet8"], "unknown method 'nope'; valid choices: "),
        (["run", "--method", "kd", "--student", "cifar_resnet8", "--teacher", "resnet9999"], "unknown model"),
        (
            ["run", "--method", "baseline", "--student", "cifar_resnet8", "--dataset", "svhn"],
            "unknown dataset",
        ),
        (["run", "--method", "kd", "--student", "cifar_resnet8"], "needs 1 teacher"),
        (
            [*KD_RUN, "--hp", "tau=3"],
            "unknown hyperparameter of kd 'tau'; valid choices: ce_weight, kd_weight, temperature",
        ),
        (
            [*KD_RUN, "--hp", "temperature=hot"],
            "must be like 4.0",
        ),
        (["run", "--method", "baseline", "--student", "cifar_resnet8", "--epochs", "0"], "at least 1"),
        (["run", "--method", "baseline", "--student", "cifar_resnet8", "--device", "tpu"], "unknown device"),
        (["run", "--method", "baseline", "--student", "cifar_resnet8", "--recipe", "long"], "unknown recipe"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(argv, message, capsys, tmp_path):
    code = main([*argv, "--results-dir", str(tmp_path), "--cache-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not list(tmp_path.rglob("*.json"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_an_error(capsys, tmp_path):
    code = main(
        [
            "run",
            "--method",
            "baseline",
            "--student",
            "cifar_resnet8",
            "--device",
            "cuda",
            "--results-dir",
            str(tmp_path),
        ]
    )
    assert code == 2 and "no CUDA GPU" in capsys.readouterr().err


def test_methods_listing_json_and_module_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "kdbench", "methods", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = json.loads(out.stdout)
    assert {"baseline", "kd", "fitnet", "at"} <= {r["name"] for r in rows}
    assert all({"technique", "scheme", "knowledge", "reference"} <= set(r) for r in rows)


def test_results_files_get_the_mode_of_any_new_file(tmp_path):
    """Temporary files are private to their owner; a finished result must be readable as the umask allows."""
    import os
    import stat

    from kdbench.results import atomic_write_text

    mask = os.umask(0)
    os.umask(mask)
    path = atomic_write_text(tmp_path / "r.json", "{}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
