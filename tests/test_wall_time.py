"""A grid's computation time read back from its records' finish times, across resumed invocations."""

from __future__ import annotations

import pandas as pd
import pytest

from kdbench.wall_time import compute_time


def test_pauses_between_invocations_are_left_out():
    stamps = ["2026-01-01T10:00:00+0000", "2026-01-01T10:01:00+0000", "2026-01-01T10:03:00+0000"]
    stamps += ["2026-01-01T15:00:00+0000", "2026-01-01T15:01:30+0000"]  # resumed five hours later
    t = compute_time(pd.Series(stamps[::-1]))  # any order
    # gaps 60, 120, 90 s inside the invocations; each invocation's first cell counts as their median, 90 s
    assert (t.cells, t.invocations) == (5, 2) and t.seconds == pytest.approx(60 + 120 + 90 + 2 * 90)
    assert "7.5 min of cell computation for 5 cells in 2 invocation(s)" in t.describe()


def test_no_records_no_time():
    assert compute_time(pd.Series([], dtype=object)).seconds == 0
