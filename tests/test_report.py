"""`kdbench report` rebuilds a results folder's tables, figures and one HTML page from its records, training
nothing."""

from pathlib import Path

import pytest

from kdbench import cli, notebooks, results_index, runner
from tests.helpers import grid_yaml

GRID = grid_yaml(teacher="cifar_resnet8", name="reported")


@pytest.fixture
def finished(tmp_path) -> tuple[Path, Path]:
    """A grid file and the results folder of its finished one-cell run."""
    grid = tmp_path / "reported.yaml"
    grid.write_text(GRID)
    results = tmp_path / "results"
    assert (
        cli.main(["grid", "--grid", str(grid), "--results-dir", str(results), "--quiet", "--device", "cpu"])
        == 0
    )
    return grid, results


def test_report_rebuilds_tables_and_one_page_without_training(finished, monkeypatch, capsys):
    grid, results = finished
    monkeypatch.setattr(notebooks, "NOTEBOOKS", [notebooks.GRID_NOTEBOOK, "02_catalogue"])
    monkeypatch.setattr(runner, "run", lambda *a, **kw: pytest.fail("the report trained a cell"))
    assert cli.main(["report", "--grid", str(grid), "--results-dir", str(results)]) == 0
    page = (results / "report.html").read_text()
    assert "notebooks/02_catalogue.ipynb" in page and "<html" in page
    assert (results / "notebooks" / "02_catalogue.ipynb").exists()
    assert not (results / "notebooks" / f"{notebooks.GRID_NOTEBOOK}.ipynb").exists()  # the grid's is not run
    assert "report.html rebuilt from" in capsys.readouterr().out


def test_report_needs_records(tmp_path, capsys):
    assert cli.main(["report", "--profile", "cpu", "--results-dir", str(tmp_path / "empty")]) == 2
    assert "no records in" in capsys.readouterr().err


def test_report_of_claims_refuses_to_train(tmp_path, capsys):
    (tmp_path / "records").mkdir()
    assert cli.main(["report", "--profile", "claims", "--results-dir", str(tmp_path)]) == 2
    assert "cells of claims are not finished" in capsys.readouterr().err


def test_the_index_lists_executed_notebooks_not_ones_being_executed(finished):
    _, results = finished
    (results / "notebooks").mkdir(exist_ok=True)
    (results / "notebooks" / "02_catalogue.ipynb").write_text("{}")
    (results / "notebooks" / ".05_figures.partial.ipynb").write_text("{}")  # as papermill leaves it mid-run
    index = results_index.write_index(results).read_text()
    assert "notebooks/02_catalogue.ipynb" in index and ".partial" not in index
