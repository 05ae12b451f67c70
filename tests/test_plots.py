"""Figures read at a glance: every one titled, a method one colour everywhere, references marked as such (and
off the Pareto front), error bars inside the metric's range, and no text printed over the data."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from matplotlib.colors import to_rgba
from matplotlib.lines import Line2D

from kdbench import plots, run_figures
from kdbench.figure_style import (
    REFERENCE_COLOUR,
    REFERENCE_GID,
    ci_errors,
    ci_text,
    method_colour,
    references,
)
from kdbench.frame import _prepare, load_frame
from tests.test_tables import fake_records, record, write_results


def noise_sweep() -> list[dict]:
    """kd and the baseline at 20% label noise on the first pair, for the robustness figure."""
    out = []
    for seed in (0, 1):
        for method, teacher in (("baseline", None), ("kd", "cifar_resnet20")):
            r = record(method, seed, teacher, 55.0 + seed, copy=7)
            r["config"]["label_noise"] = 0.2
            out.append(r)
    return out


@pytest.fixture(scope="module")
def frame(tmp_path_factory):
    return load_frame(write_results(tmp_path_factory.mktemp("fake"), fake_records() + noise_sweep()))


@pytest.fixture(scope="module")
def figures(frame):
    made = {name: make(frame) for name, make in plots.FIGURES.items()}
    yield made
    for fig in made.values():
        plt.close(fig)


def title(fig: plt.Figure) -> str:
    return (fig._suptitle.get_text() if fig._suptitle else "") or " ".join(ax.get_title() for ax in fig.axes)


def with_gid(fig: plt.Figure, gid: str) -> list:
    return fig.findobj(lambda a: a.get_gid() == gid)


def test_every_figure_has_a_title_with_records_and_without(figures, tmp_path):
    empty = load_frame(tmp_path / "nothing")
    for name, make in plots.FIGURES.items():
        assert title(figures[name]).strip(), name
        fig = make(empty)
        assert title(fig).strip() and "no records yet" in fig.axes[0].texts[0].get_text(), name
        plt.close(fig)


def test_a_method_has_one_colour_in_every_figure(figures):
    colours = {
        name: {to_rgba(a.get_color()) for a in with_gid(fig, "kd") if isinstance(a, Line2D)}
        for name, fig in figures.items()
    }
    drawn = {name: c for name, c in colours.items() if c}
    assert {"accuracy_vs_size", "boost_vs_overhead", "epoch_curves", "robustness"} <= set(drawn)
    assert all(c == {to_rgba(method_colour("kd"))} for c in drawn.values()), drawn
    assert method_colour("kd") != method_colour("dkd") != REFERENCE_COLOUR


def test_references_are_drawn_as_references_and_not_on_the_front(figures, frame):
    for name in ("accuracy_vs_size", "boost_vs_overhead", "epoch_curves", "robustness"):
        refs = with_gid(figures[name], REFERENCE_GID)
        assert refs and all(
            to_rgba(a.get_color()) == to_rgba(REFERENCE_COLOUR) for a in refs if isinstance(a, Line2D)
        ), name
        labels = [
            t.get_text() for ax in figures[name].axes if ax.get_legend() for t in ax.get_legend().get_texts()
        ]
        assert any("reference" in label for label in labels), name
    points = plots._method_points(frame, "deployable_bytes")
    front = plots._pareto(points[~references(points["method"])], "cost", "mean")
    assert len(front) and not references(front["method"]).any()
    assert {"baseline", "qat"} <= set(points["method"])  # drawn, as references


def test_error_bars_stay_in_range_and_say_what_they_are(frame):
    errors = ci_errors(pd.Series([99.0, 1.0, 50.0]), pd.Series([5.0, 5.0, float("nan")]), 0, 100)
    assert errors.tolist() == [[5.0, 1.0, 0.0], [1.0, 5.0, 0.0]]
    assert ci_text(pd.Series([1, 1])) == "single seed, no CI"
    assert "95% CI" in ci_text(pd.Series([3, 3]))
    one = frame[frame["seed"] == 0]
    fig = plots.accuracy_vs_cost(one, "deployable_bytes", "size", "t")
    assert "single seed" in fig.axes[0].get_ylabel() and "95%" not in fig.axes[0].get_ylabel()
    plt.close(fig)


def test_no_text_over_the_data(figures):
    drawn = {n: f for n, f in figures.items() if n not in ("lifelong", "nas_search")}  # no such records here
    for name, fig in drawn.items():
        assert not [t for ax in fig.axes for t in ax.texts], name  # labels live in legends


def test_boost_axes_are_symlog(figures):
    assert figures["boost_per_technique"].axes[0].get_xscale() == "symlog"
    assert figures["boost_vs_overhead"].axes[0].get_yscale() == "symlog"


def test_epoch_curves_show_baseline_and_one_method_per_technique(figures, frame):
    fig = figures["epoch_curves"]
    assert len(fig.axes) == 2  # one per pair with a teacher
    labels = {line.get_label() for line in fig.axes[0].lines}
    # kd stands for response-based KD, fitnet for feature-based, dml (teacher-free) for online distillation
    assert {"baseline (reference)", "kd", "fitnet", "dml"} <= labels and "dkd" not in labels
    renamed = _prepare(
        frame.drop(columns="epoch_top1").assign(curve_top1=frame["epoch_top1"], curve_test_images=1000)
    )
    again = run_figures.epoch_curves(renamed)  # the runner's field name for the same curve
    assert len(again.axes) == 2 and "on 1000 test images" in again.axes[0].get_ylabel()
    plt.close(again)
    without = run_figures.epoch_curves(frame.drop(columns="epoch_top1"))
    assert "no per-epoch accuracy" in without.axes[0].texts[0].get_text()
    plt.close(without)


def test_epoch_curves_leave_out_runs_in_phases(tmp_path):
    """A lifelong run's curve has a point per epoch of every task: it has its own figure, and here it would
    stretch the epoch axis of every other curve."""
    phased = [record("lwf", seed, None, 30.0) | {"epoch_top1": [30.0] * 12} for seed in (0, 1)]
    frame = load_frame(write_results(tmp_path, fake_records() + phased))
    fig = run_figures.epoch_curves(frame)
    labels = {line.get_label() for ax in fig.axes for line in ax.lines}
    assert "kd" in labels and "lwf" not in labels
    assert all(ax.get_xlim()[1] < 12 for ax in fig.axes)
    plt.close(fig)


def test_epoch_curves_without_a_usable_run_say_so(tmp_path):
    """Every run collapsed (a one-epoch plumbing grid, say): an empty figure that says why, not an error."""
    collapsed = [record(m, 0, t, 10.5) for m, t in (("baseline", None), ("kd", "cifar_resnet20"))]
    fig = run_figures.epoch_curves(load_frame(write_results(tmp_path, collapsed)))
    assert "no per-epoch accuracy" in fig.axes[0].texts[0].get_text()
    plt.close(fig)
