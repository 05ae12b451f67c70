"""`kdbench run` can express any grid cell: by its options (with the grid's conventions) or by its id."""

import json

import pytest

from kdbench.cli import main
from kdbench.cli_commands import run_config
from kdbench.cli_parser import build_parser
from kdbench.profiles import all_cells, get_profile
from kdbench.results import read_record, record_path
from tests.helpers import grid_yaml

TINY = grid_yaml(seeds=(0, 1))


def _options(cfg) -> list[str]:
    """The `kdbench run` options that describe a cell."""
    argv = [
        "run",
        "--method",
        cfg.method,
        "--student",
        cfg.student,
        "--seed",
        str(cfg.seed),
        "--recipe",
        cfg.recipe,
        "--epochs",
        str(cfg.epochs),
        "--teacher-epochs",
        str(cfg.teacher_epochs),
        "--train-subset",
        str(cfg.train_subset),
        "--label-noise",
        str(cfg.label_noise),
        "--imbalance-ratio",
        str(cfg.imbalance_ratio),
    ]
    if cfg.teacher_train_subset is not None:
        argv += ["--teacher-train-subset", str(cfg.teacher_train_subset)]
    for teacher in cfg.teachers:
        argv += ["--teacher", teacher]
    return argv


def test_options_give_the_grid_cell_id():
    """Teacher seed, teachers' data, label noise and imbalance: the same options name the grid's cell, for a
    distillation cell of seed >= 1 (whose teacher the grid shares across seeds), a teacher-free one and a noisy one."""
    cells = all_cells(get_profile("cpu")) + all_cells(get_profile("robustness"))
    picks = [
        next(c for c in cells if c.method == "kd" and c.seed == 2),
        next(c for c in cells if c.method == "baseline" and c.seed == 3),
        next(c for c in cells if c.method == "kd" and c.label_noise > 0),
        next(c for c in cells if c.method == "baseline" and c.imbalance_ratio > 1),
    ]
    for cfg in picks:
        assert run_config(build_parser().parse_args(_options(cfg))).cell_id() == cfg.cell_id(), cfg


def test_cell_by_id_or_unique_prefix():
    cfg = all_cells(get_profile("cpu"))[7]
    for given in (cfg.cell_id(), cfg.cell_id()[:12]):
        assert run_config(build_parser().parse_args(["run", "--cell", given])) == cfg


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["run", "--cell", "kd-nope"],
            "no cell of profile 'cpu' has the id 'kd-nope'; list them with kdbench grid",
        ),
        (["run", "--cell", "kd-"], "cells of profile 'cpu' has the id 'kd-'"),
        (
            ["run", "--cell", "kd-1", "--method", "dkd"],
            "--cell names a whole grid cell: give it without --method",
        ),
        (
            ["run", "--cell", "kd-1", "--epochs", "3", "--hp", "temperature=2"],
            "--cell names a whole grid cell: give it without --epochs, --hp",
        ),
        (["run", "--teacher", "cifar_resnet20"], "give --student (and --method, default kd), or --cell ID"),
    ],
)
def test_bad_cell_requests_fail_on_one_line(argv, message, tmp_path, capsys):
    assert main([*argv, "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_run_cell_writes_the_grid_record(tmp_path, capsys):
    grid = tmp_path / "tiny.yaml"
    grid.write_text(TINY)
    cfg = all_cells(get_profile(str(grid)))[1]
    results = tmp_path / "results"
    assert (
        main(
            [
                "run",
                "--cell",
                cfg.cell_id(),
                "--grid",
                str(grid),
                "--results-dir",
                str(results),
                "--quiet",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out.splitlines()[0])["cell_id"] == cfg.cell_id()
    assert read_record(record_path(results, cfg.cell_id()))["seed"] == 1
