"""Profiles, user grids, the README's generated sections, and the whole smoke pipeline through papermill."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest

import run_all
from kdbench import grid, notebooks, profiles, readme, results, results_index, tables
from kdbench.errors import KdbenchError
from kdbench.frame import load_frame
from kdbench.methods import METHODS, TECHNIQUES
from tests.helpers import grid_yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(profiles.PROFILES))
def test_builtin_profiles_resolve(name):
    profile = profiles.PROFILES[name]
    profiles.validate(profile)
    chosen = METHODS if profile.methods is None else profile.methods
    assert set(chosen) <= set(profile.method_names()) <= set(METHODS)


def test_every_method_runs_in_the_plumbing_check_and_the_zoo():
    for name in ("smoke", "zoo"):
        assert set(profiles.PROFILES[name].method_names()) == set(METHODS), name


def test_cpu_profile_meets_its_brief():
    cpu = profiles.PROFILES["cpu"]
    assert len(cpu.seeds) >= 3 and len(cpu.pairs) >= 2 and cpu.test_subset is None
    assert {p.kind for p in cpu.pairs} == {"same-family", "different-family"}
    covered = {t for m in cpu.method_names() for t in METHODS[m].info.techniques}
    assert set(TECHNIQUES) <= covered


@pytest.mark.parametrize("name", ["cpu", "robustness"])
def test_cells_are_distinct(name):
    ids = [c.cell_id() for c in profiles.all_cells(profiles.PROFILES[name])]
    assert len(ids) == len(set(ids))


def test_the_robustness_sweep_adds_to_the_cpu_records_only_its_corrupted_cells():
    sweep = profiles.PROFILES["robustness"]
    cells = profiles.all_cells(sweep)
    assert sweep.results == "cpu" and {c.method for c in cells} == {"baseline", "kd"}
    assert {c.label_noise for c in cells} == {0.0, 0.2, 0.4} and {c.imbalance_ratio for c in cells} == {
        1,
        10,
        100,
    }
    assert all(c.label_noise > 0 or c.imbalance_ratio > 1 for c in cells)
    assert not {c.cell_id() for c in cells} & {
        c.cell_id() for c in profiles.all_cells(profiles.PROFILES["cpu"])
    }


def _write(tmp_path, text: str) -> str:
    path = tmp_path / "g.yaml"
    path.write_text(text)
    return str(path)


GOOD = grid_yaml(("kd",), test_subset=None)


def test_user_grid_yaml(tmp_path):
    profile = profiles.load_profile(_write(tmp_path, GOOD))
    assert profile.name == "g" and profile.method_names() == ["kd", "baseline"]


def test_the_zoo_adds_its_methods_to_the_cpu_records():
    """The zoo's cells on the cpu profile's pair are the cpu profile's own, so sharing its folder runs them once."""
    assert grid.results_dir_for("zoo") == grid.results_dir_for("cpu") == grid.results_root() / "cpu"
    assert grid.results_dir_for("zoo", "elsewhere") == Path("elsewhere")
    cpu = {c.cell_id() for c in profiles.all_cells(profiles.get_profile("cpu"))}
    zoo = {c.cell_id() for c in profiles.all_cells(profiles.get_profile("zoo"))}
    shared = {
        c.cell_id()
        for c in profiles.all_cells(profiles.get_profile("cpu"))
        if not c.teachers or c.teachers[0] == profiles.get_profile("zoo").pairs[0].teacher
    }
    assert cpu & zoo == shared & zoo and len(cpu & zoo) > 50


def test_a_pair_may_run_fewer_methods(tmp_path):
    """A pair's own `methods` replace the profile's on that pair; its references still run, once a student."""
    text = GOOD.replace("methods: [kd]", "methods: [kd, at]").replace(
        "pairs: [{teacher: cifar_resnet14, student: cifar_resnet8}]",
        "pairs: [{teacher: cifar_resnet14, student: cifar_resnet8},\n"
        "        {teacher: cifar_resnet20, student: cifar_resnet8, methods: [at]}]",
    )
    cells = profiles.all_cells(profiles.load_profile(_write(tmp_path, text)))
    ran = {(c.method, c.teachers[0] if c.teachers else None) for c in cells}
    assert ran == {
        ("kd", "cifar_resnet14"),
        ("at", "cifar_resnet14"),
        ("at", "cifar_resnet20"),
        ("baseline", None),
    }
    assert len(cells) == len(ran)


def test_a_pair_may_train_its_students_longer(tmp_path):
    """A pair's own `epochs` apply to its cells and its references (a reference of another length is another
    cell), while the other pairs keep the profile's."""
    text = GOOD.replace(
        "pairs: [{teacher: cifar_resnet14, student: cifar_resnet8}]",
        "pairs: [{teacher: cifar_resnet14, student: cifar_resnet8},\n"
        "        {teacher: cifar_resnet20, student: cifar_resnet8, epochs: 3}]",
    )
    cells = profiles.all_cells(profiles.load_profile(_write(tmp_path, text)))
    ran = {(c.method, c.teachers[0] if c.teachers else None, c.epochs) for c in cells}
    assert ran == {
        ("kd", "cifar_resnet14", 1),
        ("baseline", None, 1),
        ("kd", "cifar_resnet20", 3),
        ("baseline", None, 3),
    }
    assert (
        readme._epochs(profiles.load_profile(_write(tmp_path, text)))
        == "1 (3 on cifar_resnet20→cifar_resnet8)"
    )


@pytest.mark.parametrize(
    "text, message",
    [
        (GOOD.replace("seeds: [0]\n", ""), "missing required field 'seeds'"),
        (GOOD.replace("epochs: 1\n", "epocs: 1\n"), "unknown field 'epocs'"),
        (GOOD.replace("methods: [kd]", "methods: [kdd]"), "unknown method 'kdd'"),
        (GOOD.replace("cifar_resnet14", "cifar_resnet15"), "unknown model 'cifar_resnet15'"),
        (GOOD.replace("fashion-mnist", "svhn"), "unknown dataset 'svhn'"),
        (GOOD.replace("{teacher:", "{teachr:"), "unknown field 'teachr'"),
        (GOOD.replace("epochs: 1\n", "epochs: 0\n"), "at least 1"),
        ("- just\n- a list\n", "must hold a mapping"),
        ("pairs: [\n", "not valid YAML"),
    ],
)
def test_bad_user_grid_is_one_clear_error(tmp_path, text, message):
    with pytest.raises(KdbenchError, match=message):
        profiles.load_profile(_write(tmp_path, text))


def test_readme_generated_sections_are_current():
    text = (ROOT / "README.md").read_text()
    assert readme.render(text, ROOT) == text, "run `kdbench readme` and commit README.md"


def test_mean_ci_by_hand():
    mean, half, n = tables.mean_ci([1.0, 2.0, 3.0])
    assert (mean, n) == (2.0, 3) and half == pytest.approx(4.302653 * 1.0 / 3**0.5, rel=1e-6)


def test_run_all_smoke_end_to_end(tmp_path):
    """The real notebooks, executed by papermill, on the smoke profile: records, tables, figures, index."""
    out = tmp_path / "smoke"
    assert run_all.main(["--profile", "smoke", "--device", "cpu", "--results-dir", str(out)]) == 0
    df = results.load(out)
    assert set(df["method"]) == set(METHODS) and (df["status"] == "ok").all(), df[df["status"] != "ok"]
    for name in notebooks.NOTEBOOKS:
        nb = nbformat.read(out / "notebooks" / f"{name}.ipynb", as_version=4)
        assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    robust = tables.robustness_table(load_frame(out))
    assert set(robust["label noise"]) == {0.0, 0.2} and set(robust["imbalance ratio"]) == {1.0, 10.0}
    # one seed per setting: in a one-epoch plumbing check it may have collapsed to chance, counted apart
    assert (robust["seeds"] + robust["collapsed"] == 1).all()
    assert "nan" not in (out / "tables" / "robustness.md").read_text()
    table4 = (out / "tables" / "table4.md").read_text()
    assert all(t in table4 for t in TECHNIQUES)
    for fig in results_index.INDEX_TEXT:
        assert (out / fig).exists(), fig
    assert json.loads((out / "run.json").read_text())["profile"] == "smoke"
    assert not [p for p in out.rglob("*") if ".partial." in p.name or p.name.endswith(".tmp")]
    # a second run skips every finished cell
    counts = grid.run_grid("smoke", out, device="cpu", progress=False)
    assert (
        counts["ok"] == 0
        and counts["failed"] == 0
        and counts["skipped"] == len(profiles.all_cells(profiles.PROFILES["smoke"]))
    )


def test_companion_profiles_describe_their_runs_beside_the_main_one():
    cpu, sweep = profiles.PROFILES["cpu"], profiles.PROFILES["robustness"]
    assert cpu.own_file("run", ".json") == "run.json"
    assert sweep.own_file("run", ".json") == "run-robustness.json"
    assert sweep.own_file(notebooks.GRID_NOTEBOOK, ".ipynb") == "01_run_grid-robustness.ipynb"
    ids = [c.cell_id() for c in profiles.all_cells(cpu)[:3]] + [profiles.all_cells(sweep)[0].cell_id()]
    stamps = ["2026-01-01T10:00:00+0000", "2026-01-01T10:01:00+0000", "2026-01-01T10:02:00+0000"]
    df = pd.DataFrame({"cell_id": ids, "finished_at": [*stamps, "2026-01-01T10:03:00+0000"]})
    cpu_line, sweep_line = results_index.compute_lines(Path("results") / "cpu", df)
    assert cpu_line.startswith("`cpu` profile: 3.0 min of cell computation for 3 cells")
    assert sweep_line.startswith("`robustness` profile's own cells: 0.0 min of cell computation for 1 cells")


def test_the_claims_computation_time_leaves_out_records_copied_from_the_cpu_grid(tmp_path):
    claims = profiles.EXPERIMENTS["claims"]
    copied, *own = [c.cell_id() for c in profiles.all_cells(claims)[:3]]
    results.write_record({"cell_id": copied, "finished_at": "2026-01-01T08:00:00+0000"}, tmp_path / "cpu")
    df = pd.DataFrame(
        {
            "cell_id": [copied, *own],
            "finished_at": [
                "2026-01-01T08:00:00+0000",
                "2026-01-01T10:00:00+0000",
                "2026-01-01T10:01:00+0000",
            ],
        }
    )
    (line,) = results_index.compute_lines(tmp_path / "claims", df)
    assert line.startswith("`claims` profile: 2.0 min of cell computation for 2 cells in 1 invocation(s)")
