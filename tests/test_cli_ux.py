"""A newcomer's first commands: help, version, the method list, progress, Ctrl-C, failed cells, portable
executed notebooks, and the warnings and one-line errors that replace silent surprises."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import nbformat
import pytest
import torch

from kdbench import cli, cli_options, cli_parser, grid, notebooks, profiles, sanity
from kdbench.data import DATASETS, catalog
from kdbench.engine import RECIPES
from kdbench.errors import KdbenchError, KdbenchWarning
from kdbench.executor import EXECUTORS, run_jobs
from kdbench.methods import METHODS, get_method
from kdbench.methods.base import hparam_range, resolve_hparams
from kdbench.models import create_model
from kdbench.results import read_record, record_path
from kdbench.runner import default_cache_dir

ROOT = Path(__file__).resolve().parents[1]
TINY_GRID = """name: {name}
dataset: fashion-mnist
pairs: [{{teacher: cifar_resnet8, student: cifar_resnet8}}]
seeds: [0]
epochs: 1
teacher_epochs: 1
train_subset: 64
test_subset: 100
methods: [{methods}]
"""


def load_run_all():
    spec = importlib.util.spec_from_file_location("run_all_ux", ROOT / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def run_all():
    return load_run_all()


@pytest.fixture
def results(tmp_path, monkeypatch) -> Path:
    """A results root of the test's own, as the default."""
    monkeypatch.setenv("KDBENCH_RESULTS", str(tmp_path / "results"))
    return tmp_path / "results"


def tiny_grid(tmp_path: Path, name: str = "tiny", methods: str = "baseline") -> Path:
    path = tmp_path / "grid.yaml"  # a file name unlike the grid's name: the name decides the folder
    path.write_text(TINY_GRID.format(name=name, methods=methods))
    return path


def python(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=120, **kw
    )


# ---- the CLI's surface -------------------------------------------------------------------------------------------
def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == "kdbench 0.1.0"


def subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in cli_parser.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_option_has_help_with_its_choices():
    for command, parser in subparsers().items():
        for action in parser._actions:
            assert action.help, f"kdbench {command} {action.option_strings} has no help"
    helps = {(c, o): a.help for c, p in subparsers().items() for a in p._actions for o in a.option_strings}
    for option, choices in [("--dataset", DATASETS), ("--recipe", RECIPES), ("--method", METHODS)]:
        assert all(name in helps["run", option] for name in choices), option
    assert all(name in helps["grid", "--executor"] for name in EXECUTORS)
    assert all(name in helps["grid", "--profile"] for name in [*profiles.PROFILES, *profiles.EXPERIMENTS])
    for command in ("run", "grid", "bench"):
        assert (command, "--data-root") in helps


def test_run_all_options_have_help(run_all):
    for action in run_all.build_parser()._actions:
        assert action.help, action.option_strings
    assert "--retry-failed" in run_all.build_parser().format_help()


def test_methods_table_fits_100_columns_with_details_elsewhere(capsys):
    assert cli.main(["methods"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) > len(METHODS) and max(map(len, table)) <= 100
    assert cli.main(["methods", "--verbose"]) == 0
    verbose = capsys.readouterr().out
    assert max(map(len, verbose.splitlines())) <= 100
    assert "hyperparameters: temperature=4.0, ce_weight=0.1, kd_weight=0.9" in verbose
    assert "Hinton et al. 2015, Distilling the Knowledge in a Neural Network" in verbose
    assert cli.main(["methods", "--format", "json"]) == 0
    assert {row["name"] for row in json.loads(capsys.readouterr().out)} == set(METHODS)


def test_methods_into_a_closed_pipe():
    done = subprocess.run(
        f"{sys.executable} -m kdbench methods | head -1",
        shell=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.stdout.startswith("name ") and "Error" not in done.stderr and "Traceback" not in done.stderr


def test_import_registers_the_architectures_in_timm_without_importing_torch():
    code = (
        "import sys, kdbench; assert 'torch' not in sys.modules and 'timm' not in sys.modules; import timm; "
        "print(type(timm.create_model('cifar_resnet8', num_classes=10)).__name__)"
    )
    done = python("-c", code)
    assert done.returncode == 0 and done.stdout.strip() == "CifarResNet", done.stderr


# ---- hyperparameter ranges ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method, hp, message",
    [
        ("kd", {"temperature": 0}, "hyperparameter temperature=0 of kd must be > 0"),
        ("kd", {"temperature": -2.0}, "must be > 0"),
        ("kd", {"kd_weight": -0.5}, "hyperparameter kd_weight=-0.5 of kd must be >= 0"),
        ("dkd", {"beta": -1}, "must be >= 0"),
        ("dkd", {"warmup_fraction": 1.5}, "hyperparameter warmup_fraction=1.5 of dkd must be in [0, 1]"),
        ("pskd", {"alpha_T": 1.2}, "hyperparameter alpha_T=1.2 of pskd must be in [0, 1]"),
        ("adversarial", {"d_lr": 0.0}, "must be > 0"),
    ],
)
def test_out_of_range_hyperparameters(method, hp, message):
    with pytest.raises(KdbenchError) as caught:
        resolve_hparams(get_method(method), hp)
    assert message in str(caught.value)


def test_hyperparameter_ranges_hold_the_defaults_and_edges():
    for name, cls in METHODS.items():
        for key, value in cls.defaults.items():
            valid = hparam_range(cls, key)
            assert valid is None or isinstance(value, bool) or value in valid, (name, key, value)
    resolved = resolve_hparams(get_method("kd"), {"temperature": 0.5, "kd_weight": 0, "ce_weight": 1})
    assert resolved["temperature"] == 0.5 and resolved["kd_weight"] == 0.0
    assert resolve_hparams(get_method("pskd"), {"alpha_T": 1})["alpha_T"] == 1.0


# ---- warnings about misleading runs ------------------------------------------------------------------------------
def test_student_larger_than_its_teacher_warns():
    with pytest.warns(KdbenchWarning, match="student cifar_resnet14 has more parameters"):
        sanity.check_pairs([("cifar_resnet8", "cifar_resnet14")], "fashion-mnist")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sanity.check_pairs([("cifar_resnet14", "cifar_resnet8")], "fashion-mnist")


def test_teacher_at_chance_warns_once():
    weak = {"teacher": "cifar_resnet8", "teacher_top1": 12.5, "dataset": "fashion-mnist"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sanity.check_teachers([weak, weak, {**weak, "teacher_top1": 80.0, "teacher": "cifar_resnet20"}])
    (only,) = caught
    assert "teacher cifar_resnet8 reaches 12.5% top-1, within 5 points of chance (10.0%)" in str(only.message)


# ---- models with a fixed input size ------------------------------------------------------------------------------
def test_vit_takes_the_dataset_image_size():
    model = create_model("vit_tiny_patch16_224", 10, 1)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_model_that_cannot_take_other_sizes_is_one_line_error():
    with pytest.raises(KdbenchError) as caught:
        create_model("swin_tiny_patch4_window7_224", 10, 1)
    message = str(caught.value)
    assert "\n" not in message and "takes only 224x224 inputs" in message and "--student/--teacher" in message


# ---- folders: cache, data, results -------------------------------------------------------------------------------
def test_tests_use_a_temporary_cache():
    assert default_cache_dir() != Path.home() / ".cache" / "kdbench"
    assert catalog.default_root() != Path.home() / ".cache" / "kdbench" / "data"


def test_data_lives_under_the_cache_unless_told(tmp_path, monkeypatch):
    monkeypatch.delenv("KDBENCH_DATA", raising=False)
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "c"))
    assert catalog.default_root() == tmp_path / "c" / "data"
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path / "d"))
    assert catalog.default_root() == tmp_path / "d"


def test_data_root_option_sets_the_dataset_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("KDBENCH_DATA", "elsewhere")
    for command in ("run", "grid", "bench"):
        args = cli_parser.build_parser().parse_args(
            [
                command,
                "--data-root",
                str(tmp_path),
                *(["--method", "kd", "--student", "cifar_resnet8"] if command == "run" else []),
            ]
        )
        assert args.data_root == str(tmp_path)
    cli_options.use_data_root(str(tmp_path / "data"))
    assert catalog.default_root() == tmp_path / "data"


def test_yaml_grid_has_one_results_folder_from_every_entry_point(tmp_path, results, monkeypatch, run_all):
    path = tiny_grid(tmp_path, name="mine")
    seen = []
    monkeypatch.setattr(
        grid,
        "run_grid",
        lambda profile, results_dir, *a, **kw: (
            seen.append(Path(results_dir)) or {"ok": 0, "failed": 0, "busy": 0, "skipped": 1}
        ),
    )
    assert cli.main(["grid", "--grid", str(path), "--quiet"]) == 0
    monkeypatch.setattr(run_all, "run_notebooks", lambda *a, **kw: None)
    monkeypatch.setattr(run_all.results_index, "write_index", lambda *a, **kw: None)  # no records to index
    assert run_all.main(["--profile", str(path)]) == 0
    assert seen == [results / "mine", (results / "mine").resolve()]


def test_results_index_lists_committed_profiles_only(results, monkeypatch, run_all):
    monkeypatch.setattr(run_all, "run_job", lambda *a, **kw: {"ok": 0, "failed": 0, "busy": 0, "skipped": 0})
    monkeypatch.setattr(run_all, "run_notebooks", lambda *a, **kw: None)
    monkeypatch.setattr(profiles, "validate", lambda spec: None)
    monkeypatch.setattr(run_all.results_index, "write_index", lambda *a, **kw: None)  # no records to index
    assert run_all.main(["--profile", "smoke"]) == 0
    assert (results / "smoke" / "run.json").exists() and not (results / "README.md").exists()
    assert run_all.main(["--profile", "cpu"]) == 0
    index = (results / "README.md").read_text()
    assert "`cpu`" in index and "smoke" not in index


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_smoke_results_are_not_tracked():
    done = subprocess.run(["git", "check-ignore", "-q", "results/smoke/run.json"], cwd=ROOT)
    assert done.returncode == 0


# ---- progress, failures, Ctrl-C ----------------------------------------------------------------------------------
def _double(job: tuple) -> int:
    return job[0] * 2


def test_progress_bar_names_the_job_running(capsys):
    out = list(run_jobs(_double, [(1,), (2,)], desc="jobs", label=lambda job: f"job number {job[0]}"))
    err = capsys.readouterr().err
    assert out == [2, 4] and "job number 1" in err and "job number 2" in err and "2/2" in err


def test_failed_cells_exit_1_and_retry_failed_runs_them_again(tmp_path, results, monkeypatch, capsys):
    path = tiny_grid(tmp_path)
    calls = []

    def boom(cfg, **kw):
        calls.append(cfg.method)
        raise RuntimeError("diverged")

    monkeypatch.setattr(grid, "run", boom)
    monkeypatch.setattr(grid, "train_teachers", lambda *a, **kw: 0)
    assert cli.main(["grid", "--grid", str(path), "--quiet"]) == 1
    assert "1 of 1 grid cells failed" in capsys.readouterr().err and calls == ["baseline"]
    assert cli.main(["grid", "--grid", str(path), "--quiet"]) == 1  # skipped, still failed
    assert calls == ["baseline"]
    assert cli.main(["grid", "--grid", str(path), "--quiet", "--retry-failed"]) == 1
    assert calls == ["baseline", "baseline"]
    cfg = profiles.all_cells(profiles.get_profile(str(path)))[0]
    assert read_record(record_path(results / "tiny", cfg.cell_id()))["status"] == "failed"


def test_run_all_interrupted_prints_one_line(monkeypatch, results, capsys, run_all):
    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_all, "run_job", interrupted)
    assert run_all.main(["--profile", "smoke"]) == 130
    captured = capsys.readouterr()
    assert captured.err == "interrupted; run the same command again to resume\n" and not captured.out


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_run_all_sigint_during_the_grid(tmp_path, results):
    """A real Ctrl-C while the teachers train: one line, status 130, and a rerun could resume. The child starts
    with SIGINT at its default: a shell without job control starts background commands (a CI script's `&`, a
    `nohup ... &`) with SIGINT ignored, Python keeps it ignored, and the test's Ctrl-C would be lost."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "run_all.py", "--profile", str(tiny_grid(tmp_path, methods="kd"))],
        preexec_fn=_default_sigint,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    seen = ""
    while "teachers" not in seen and time.monotonic() < deadline:  # the bar appears when training starts
        chunk = os.read(proc.stderr.fileno(), 4096).decode()
        if not chunk:
            break
        seen += chunk
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    lines = [line for line in (seen + err).replace("\r", "\n").splitlines() if line.strip()]
    assert proc.returncode == 130, err
    assert "Traceback" not in seen + err
    assert [line for line in lines if "interrupted" in line] == [
        "interrupted; run the same command again to resume"
    ]


@pytest.mark.slow
def test_run_all_progress_and_portable_notebooks(tmp_path, results, monkeypatch, capfd, run_all):
    """A one-cell grid: its bar in the terminal, no kernel warnings, notebooks that name no folder of this
    machine's checkout, and a second run whose grid notebook says that nothing ran."""
    path = tiny_grid(tmp_path)
    monkeypatch.setattr(notebooks, "NOTEBOOKS", [notebooks.GRID_NOTEBOOK, "02_catalogue"])
    assert run_all.main(["--profile", str(path)]) == 0
    out, err = capfd.readouterr()
    assert "grid tiny" in err and "1/1" in err and "baseline no teacher -> cifar_resnet8 seed 0" in err
    assert "without encryption" not in err and "IProgress" not in err
    for name in notebooks.NOTEBOOKS:
        text = (results / "tiny" / "notebooks" / f"{name}.ipynb").read_text()
        assert str(ROOT) not in text and ".venv" not in text and "site-packages" not in text, name
    nb = nbformat.read(results / "tiny" / "notebooks" / f"{notebooks.GRID_NOTEBOOK}.ipynb", 4)
    assert nb.metadata.papermill.input_path == "notebooks/01_run_grid.ipynb"
    assert "This run: 1 cells run (1 ok, 0 failed), 0 skipped" in json.dumps(nb.cells[-1].outputs)

    monkeypatch.setattr(notebooks, "NOTEBOOKS", [notebooks.GRID_NOTEBOOK])
    assert run_all.main(["--profile", str(path)]) == 0
    nb = nbformat.read(results / "tiny" / "notebooks" / f"{notebooks.GRID_NOTEBOOK}.ipynb", 4)
    report = json.dumps(nb.cells[-1].outputs)
    assert (
        "Nothing to run: all 1 cells were finished by earlier runs" in report and "1 records: 1 ok" in report
    )


def test_portable_paths(run_all, tmp_path):
    assert notebooks.portable(ROOT / "results" / "cpu") == "results/cpu"
    assert notebooks.portable(tmp_path) == str(tmp_path)


def test_run_warns_on_one_line_about_its_pair_and_teacher(tmp_path, monkeypatch, capsys):
    """`kdbench run` with a reversed pair whose teacher learnt nothing: both said, one line each."""
    import kdbench.runner

    record = {
        "cell_id": "kd-0000000000000000",
        "method": "kd",
        "student": "cifar_resnet14",
        "teacher": "cifar_resnet8",
        "student_top1": 10.0,
        "teacher_top1": 11.0,
        "dataset": "fashion-mnist",
        "train_time_s": 1.0,
        "train_samples_per_s": 1.0,
        "path": str(tmp_path / "record.json"),
    }
    monkeypatch.setattr(kdbench.runner, "run", lambda cfg, **kw: record)
    assert (
        cli.main(
            [
                "run",
                "--method",
                "kd",
                "--student",
                "cifar_resnet14",
                "--teacher",
                "cifar_resnet8",
                "--results-dir",
                str(tmp_path),
                "--quiet",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("kdbench: warning: ") for line in err), err
    assert "student cifar_resnet14 has more parameters" in err[0] and "within 5 points of chance" in err[1]
