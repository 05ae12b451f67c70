"""Bad input, case by case: one line naming the problem (and the valid choices where there are some), exit
status 2, and nothing half-written in the results or cache folders."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import warnings
from pathlib import Path

import pytest
import torch

from kdbench.cli import main
from kdbench.data import DATASETS, catalog, load_dataset
from kdbench.errors import KdbenchError, KdbenchWarning
from kdbench.methods import Setup, get_method
from kdbench.models import create_model
from kdbench.runner import RunConfig, run
from kdbench.teacher_training import get_teacher, teacher_key
from kdbench.teachers import TeacherCache
from tests.helpers import KD_RUN as KD
from tests.helpers import STUDENT, TEACHER, grid_yaml

ROOT = Path(__file__).resolve().parents[1]
GOOD_GRID = grid_yaml(("kd",), test_subset=None)


@pytest.fixture
def folders(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """Results and cache folders under tmp_path, also as the defaults, so nothing can land anywhere else."""
    results, cache = tmp_path / "results", tmp_path / "cache"
    monkeypatch.setenv("KDBENCH_RESULTS", str(results))
    monkeypatch.setenv("KDBENCH_CACHE", str(cache))
    return results, cache


def files_under(*folders: Path) -> list[Path]:
    return [p for folder in folders if folder.exists() for p in folder.rglob("*") if p.is_file()]


def error_line(capsys, code: int | None, prefix: str = "kdbench: error: ") -> str:
    """The one stderr line of a run that must have failed with exit status 2."""
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), err
    return lines[0]


def cli_error(argv: list[str], folders: tuple[Path, Path], capsys) -> str:
    """Run the CLI in-process on `argv` with the test's folders; it must fail on one line and write nothing."""
    results, cache = folders
    line = error_line(capsys, main([*argv, "--results-dir", str(results), "--cache-dir", str(cache)]))
    assert not files_under(results, cache), "a bad input left files behind"
    return line


# ---- 1, 6, 8: unknown names, bad --hp, bad --device ---------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["run", "--method", "nope", "--student", STUDENT],
            "unknown method 'nope'; valid choices: ab, adversarial, at, ",
        ),
        ([*KD[:4], "nope", *KD[5:]], "unknown model 'nope'; valid choices: cifar_mobilenetv2, "),
        ([*KD[:6], "nope"], "unknown model 'nope'; valid choices: cifar_mobilenetv2, "),
        (
            ["run", "--method", "baseline", "--student", STUDENT, "--dataset", "nope"],
            "unknown dataset 'nope'; valid choices: cifar10, cifar100, fashion-mnist, imagenet, mnist, synthetic:cifar10",
        ),
        (["grid", "--profile", "nope"], "unknown profile 'nope'; valid choices: "),
        (
            [*KD, "--hp", "nope=1"],
            "unknown hyperparameter of kd 'nope'; valid choices: ce_weight, kd_weight, temperature",
        ),
        ([*KD, "--hp", "temperature"], "hyperparameter 'temperature' must look like name=value"),
        ([*KD, "--hp", "=4"], "hyperparameter '=4' must look like name=value"),
        ([*KD, "--hp", "temperature=hot"], "hyperparameter temperature='hot' of kd must be like 4.0"),
        ([*KD, "--hp", "temperature=0"], "hyperparameter temperature=0 of kd must be > 0"),
        ([*KD, "--hp", "kd_weight=-1"], "hyperparameter kd_weight=-1 of kd must be >= 0"),
        (
            [*KD[:4], "swin_tiny_patch4_window7_224", *KD[5:]],
            "model 'swin_tiny_patch4_window7_224' takes only 224x224 inputs",
        ),
        ([*KD, "--device", "mps"], "unknown device 'mps'; valid choices: auto, cpu, cuda, cuda:N"),
        (
            [*KD, "--device", "cuda:first"],
            "unknown device 'cuda:first'; valid choices: auto, cpu, cuda, cuda:N",
        ),
        ([*KD, "--device", "cuda:99"], "valid choices here: auto, cpu"),  # with or without a GPU
    ],
)
def test_unknown_names_and_bad_options(argv, message, folders, capsys):
    assert message in cli_error(argv, folders, capsys)


def test_profile_choices_are_listed(folders, capsys):
    assert all(
        name in cli_error(["grid", "--profile", "nope"], folders, capsys)
        for name in ("cpu", "paper", "smoke")
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without a GPU")
def test_cuda_without_a_gpu(folders, capsys):
    line = cli_error([*KD, "--device", "cuda"], folders, capsys)
    assert "device 'cuda' requested but no CUDA GPU is visible; valid choices here: auto, cpu" in line


# ---- 2: a bad grid YAML ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "old, new, message",
    [
        ("seeds: [0]\n", "", "missing required field 'seeds'"),
        ("seeds:", "seedz:", "unknown field 'seedz'; valid fields: cells_from, checkpoint_every, dataset, "),
        ("epochs: 1\n", "epochs: -1\n", "epochs must be at least 1, got -1"),
        ("teacher_epochs: 1", "teacher_epochs: 0", "teacher_epochs must be at least 1, got 0"),
        ("epochs: 1\n", "epochs: many\n", "field 'epochs' must be int, got 'many'"),
        ("seeds: [0]", "seeds: [a]", "field 'seeds' must be a list of int, got ['a']"),
        ("seeds: [0]", "seeds: [0.5]", "field 'seeds' must be a list of int, got [0.5]"),
        ("train_subset: 64", "train_subset: all", "field 'train_subset' must be int or null, got 'all'"),
        ("methods: [kd]", "methods: kd", "field 'methods' must be a list of str or null, got 'kd'"),
        ("methods: [kd]", "methods: [kdd]", "unknown method 'kdd'; valid choices: ab, adversarial, "),
        (TEACHER, "cifar_resnet15", "unknown model 'cifar_resnet15'; valid choices: cifar_mobilenetv2, "),
        (
            "{teacher:",
            "{teachr:",
            "unknown field 'teachr'; valid fields: epochs, kind, methods, student, teacher",
        ),
        ("dataset: fashion-mnist", "dataset: svhn", "unknown dataset 'svhn'; valid choices: cifar10, "),
        (
            "methods: [kd]",
            "methods: [kd]\nhparams: {kd: {temperature: hot}}",
            "hyperparameter temperature='hot' of kd must be like 4.0",
        ),
        (
            "methods: [kd]",
            "methods: [kd]\nhparams: {kd: {temperature: 0}}",
            "hyperparameter temperature=0 of kd must be > 0",
        ),
        (
            "methods: [kd]",
            "methods: [kd]\nhparams: {kd: {tau: 2}}",
            "unknown hyperparameter of kd 'tau'; valid choices: ce_weight, kd_weight, temperature",
        ),
        (
            "methods: [kd]",
            "methods: [kd]\nhparams: {kd: 4}",
            "field 'hparams' must be a mapping of str to a mapping",
        ),
        (
            "methods: [kd]",
            "methods: [kd]\nhparams: {kdd: {temperature: 2}}",
            "unknown method in hparams 'kdd'; valid choices: ab, adversarial, ",
        ),
    ],
)
def test_bad_grid_yaml(old, new, message, tmp_path, folders, capsys):
    assert old in GOOD_GRID
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(GOOD_GRID.replace(old, new))
    assert message in cli_error(["grid", "--grid", str(grid_file)], folders, capsys)


# ---- 3: a data file with the wrong checksum ----------------------------------------------------------------------
def test_corrupt_data_file_names_it_and_writes_nothing(tmp_path):
    bundled, root = tmp_path / "bundled", tmp_path / "data"
    bundled.mkdir()
    for original in catalog.bundled_fashion_mnist_dir().iterdir():
        (bundled / original.name).symlink_to(original)
    victim = bundled / list(catalog.FASHION_MNIST_SHA256)[-1]  # the last one checked: the others pass first
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.unlink()
    victim.write_bytes(bytes(data))

    with pytest.raises(KdbenchError) as caught:
        load_dataset("fashion-mnist", root, bundled=bundled)
    message = str(caught.value)
    expected, got = catalog.FASHION_MNIST_SHA256[victim.name][:12], catalog.sha256(victim)[:12]
    assert "\n" not in message and f"Fashion-MNIST file {victim} does not match its checksum" in message
    assert (
        f"SHA-256 {got}" in message and f"expected {expected}" in message and "reinstall kdbench" in message
    )
    assert not files_under(root), "files were unpacked although one of them is corrupt"


# ---- 4: a truncated teacher checkpoint ---------------------------------------------------------------------------
def test_truncated_teacher_checkpoint_is_retrained_with_one_warning_line(tmp_path):
    cfg = RunConfig(
        method="kd", student=STUDENT, teachers=(STUDENT,), train_subset=64, epochs=1, test_subset=100
    )
    cache, cpu = TeacherCache(tmp_path), torch.device("cpu")
    get_teacher(cfg, 0, cpu, cache, progress=False)
    ckpt = cache.path(teacher_key(cfg, 0))
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        retrained = get_teacher(cfg, 0, cpu, cache, progress=False)
    (warning,) = [w for w in caught if issubclass(w.category, KdbenchWarning)]
    text = str(warning.message)
    assert "\n" not in text and f"teacher checkpoint {ckpt} is unusable" in text and "retraining it" in text
    assert not retrained.from_cache
    sidecar = json.loads(ckpt.with_suffix(".json").read_text())
    assert sidecar["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    reloaded = get_teacher(cfg, 0, cpu, cache, progress=False)
    assert reloaded.from_cache and reloaded.meta["top1"] == retrained.meta["top1"]
    assert not list(tmp_path.rglob("*.tmp"))


# ---- 5: a results (or cache) folder that cannot be written -------------------------------------------------------
def unwritable_folder(tmp_path: Path) -> Path:
    """A folder nobody can create: under a read-only folder, or, for root (whom permissions do not stop),
    under a regular file."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if not os.access(locked, os.W_OK):
        return locked / "results"
    blocker = tmp_path / "afile"
    blocker.write_text("")
    return blocker / "results"


@pytest.mark.parametrize("command", ["run", "grid"])
@pytest.mark.parametrize("which, option", [("results", "--results-dir"), ("cache", "--cache-dir")])
def test_unwritable_folder_fails_before_training(command, which, option, tmp_path, folders, capsys):
    results, cache = folders
    bad = unwritable_folder(tmp_path)
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(GOOD_GRID)
    argv = (
        [*KD, "--train-subset", "64", "--epochs", "1"]
        if command == "run"
        else ["grid", "--grid", str(grid_file)]
    )
    dirs = {"results": results, "cache": cache, which: bad}
    line = error_line(
        capsys, main([*argv, "--results-dir", str(dirs["results"]), "--cache-dir", str(dirs["cache"])])
    )
    assert f"cannot write to {bad}" in line and option in line
    assert not files_under(results, cache), "something was trained or written before the check"


# ---- 7: a teacher/student pair whose features cannot be aligned --------------------------------------------------
def fitnet_error(teacher: str, student: str, **hparams) -> str:
    info = DATASETS["fashion-mnist"]

    def make(name: str) -> torch.nn.Module:
        return create_model(name, info.num_classes, info.in_chans)

    setup = Setup(make(student), [make(teacher)], info, make, num_train=64, epochs=1, steps_per_epoch=1)
    with pytest.raises(KdbenchError) as caught:
        get_method("fitnet")(setup, **hparams)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_fitnet_pair_that_cannot_be_aligned():
    """On 28x28 inputs resnet14's middle stage is 14x14 and mobilenetv2's is 4x4: smaller, and not half of it,
    so no regressor maps it; only their first stages (28 and 14) would align."""
    message = fitnet_error(TEACHER, "cifar_mobilenetv2")
    assert "student features (48, 4, 4) to teacher features (32, 14, 14) at hint_stage=-2" in message
    assert message.endswith("; hint_stage -4 would work")


def test_fitnet_hint_stage_out_of_range():
    assert "hint_stage=9 is out of range for this pair; valid choices: -4 to 3" in fitnet_error(
        TEACHER, STUDENT, hint_stage=9
    )


def test_unalignable_pair_in_a_run_writes_no_record(tmp_path):
    cfg = RunConfig(
        method="fitnet",
        student="cifar_mobilenetv2",
        teachers=(TEACHER,),
        train_subset=64,
        epochs=1,
        test_subset=100,
    )
    with pytest.raises(KdbenchError, match="fitnet cannot align"):
        run(cfg, device="cpu", results_dir=tmp_path / "results", cache_dir=tmp_path / "cache", progress=False)
    assert not files_under(tmp_path / "results") and not list(tmp_path.rglob("*.tmp"))


# ---- 8: run_all ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_all():
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_all_unknown_profile(run_all, folders, capsys):
    line = error_line(capsys, run_all.main(["--profile", "nope"]), "run_all: error: ")
    assert "unknown profile 'nope'; valid choices: " in line and "smoke" in line
    assert not files_under(*folders)


def test_run_all_unwritable_results_folder(run_all, tmp_path, folders, capsys):
    bad = unwritable_folder(tmp_path)
    line = error_line(
        capsys, run_all.main(["--profile", "smoke", "--results-dir", str(bad)]), "run_all: error: "
    )
    assert f"cannot write to {bad}" in line and "--results-dir" in line
    assert not files_under(*folders)
