"""How long a grid took to compute, read back from its records: a run resumed over several invocations has no
single wall clock, but each record says when its cell finished, and cells run one after another."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

PAUSE_S = 600.0  # a gap between two finishes longer than any cell: the run was stopped and resumed later


@dataclass(frozen=True)
class ComputeTime:
    """`seconds` of cell computation over `cells` cells, run in `invocations` stretches."""

    seconds: float
    cells: int
    invocations: int

    def describe(self) -> str:
        return (
            f"{self.seconds / 60:.1f} min of cell computation for {self.cells} cells in {self.invocations} "
            f"invocation(s): the sum of the gaps between consecutive finishes; gaps over {PAUSE_S / 60:.0f} min "
            "(a stopped and resumed run) are left out and each invocation's first cell counts as the median gap"
        )


def compute_time(finished_at: pd.Series) -> ComputeTime:
    """The cells' computation time, from their finish times (one cell at a time, as the local executor runs
    them). Teacher loading and the notebooks come on top."""
    done = pd.to_datetime(finished_at.dropna()).sort_values()
    gaps = done.diff().dt.total_seconds().dropna()
    within = gaps[gaps <= PAUSE_S]
    invocations = 1 + int((gaps > PAUSE_S).sum()) if len(done) else 0
    median = float(within.median()) if len(within) else 0.0
    return ComputeTime(float(within.sum()) + invocations * median, len(done), invocations)
