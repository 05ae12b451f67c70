"""The claims' core: the verdict rule, the `Claim` type and its registry, the data budget every claim's cells are
built from (`Budget`), and the pipeline that runs the cells, analyses the records and writes the report."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import matplotlib.pyplot as plt
import pandas as pd

from kdbench import plots, stats, tables
from kdbench.claims.frames import measured
from kdbench.claims.steptime import Timing, measure_timings, timing_frame
from kdbench.errors import unknown
from kdbench.figure_style import empty_figure
from kdbench.frame import load_frame
from kdbench.grid import results_dir_for, run_grid
from kdbench.profiles import EXPERIMENTS, Profile, budget_cell, get_profile
from kdbench.results import atomic_write_text
from kdbench.runner import RunConfig

# ---- the verdict -------------------------------------------------------------------------------------------------
SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive at this scale"
VERDICT_RULE = (
    "Each claim's effect is signed so that a positive value is what the survey says. Its 95% confidence interval is "
    "the Student-t interval of the mean over independent replicates (seeds; timing rounds for claim 3). Verdict: "
    "supported if the whole interval lies above 0; not supported if the whole interval lies below 0 (the opposite "
    "was measured); inconclusive at this scale otherwise (the interval contains 0, or fewer than 2 replicates). "
    "A claim replicated by seeds that is inconclusive on the profile's seeds but promising (its interval would "
    "exclude 0 with two more seeds, were the mean and spread to stay as measured) gets those two seeds, once, and "
    "its verdict is read on all of them; a claim whose mean is small against its spread does not, as two seeds "
    "would not decide it."
)


def verdict(effect: float, half: float, n: int) -> str:
    """`VERDICT_RULE` applied to a mean effect and the half-width of its 95% interval over n replicates."""
    if n < 2 or math.isnan(effect) or math.isnan(half):
        return INCONCLUSIVE
    if effect - half > 0:
        return SUPPORTED
    if effect + half < 0:
        return NOT_SUPPORTED
    return INCONCLUSIVE


EXTRA_SEEDS = (3, 4)  # a promising claim's further seeds, on a full budget only


def promising(mean: float, half: float, n: int, more: int = len(EXTRA_SEEDS)) -> bool:
    """Whether an inconclusive effect would be decided by `more` replicates, were its mean and standard deviation
    to stay as measured over n (the "promising zone" of adaptive designs): the interval's half-width scales with
    the t critical value and 1/sqrt(n). A decided effect, or one measured fewer than twice, is not promising."""
    if verdict(mean, half, n) != INCONCLUSIVE or n < 2:
        return False
    projected = half * stats.t_critical(n + more - 1) / stats.t_critical(n - 1) * math.sqrt(n / (n + more))
    return abs(mean) > projected


@dataclass
class Finding:
    """What one claim's experiment measured: the effect per replicate, and a table per setting."""

    values: pd.Series  # the effect of each replicate (NaN where a cell is missing)
    table: pd.DataFrame

    @property
    def summary(self) -> tuple[float, float, int]:
        return tables.mean_ci(self.values)

    @property
    def verdict(self) -> str:
        return verdict(*self.summary)


# ---- the cells ---------------------------------------------------------------------------------------------------
Entry = tuple[dict[str, Any], RunConfig]  # the labels the analysis reads, and the cell


@dataclass(frozen=True)
class Budget:
    """What the profile fixes for every claim cell; `full` is False for a plumbing check (smallest sweeps)."""

    profile: Profile
    extra_seeds: tuple[int, ...] = ()  # a promising claim's (`Claim.budget`)

    @property
    def seeds(self) -> tuple[int, ...]:
        return (*self.profile.seeds, *self.extra_seeds)

    @property
    def full(self) -> bool:
        return self.profile.meaningful

    @property
    def student(self) -> str:
        return self.profile.pairs[0].student

    @property
    def teacher(self) -> str:
        """The main teacher: the profile's first (same-family) pair's."""
        return self.profile.pairs[0].teacher

    def cfg(self, method: str, teachers: Sequence[str] = (), seed: int = 0, **fields: Any) -> RunConfig:
        return budget_cell(self.profile, method, self.student, teachers, seed, **fields)

    def baseline(self, seed: int, **fields: Any) -> Entry:
        return {"method": "baseline"}, self.cfg("baseline", seed=seed, **fields)

    def sweep(self, values: Sequence[Any], *keep: Any) -> tuple[Any, ...]:
        """All `values`, or for a plumbing check only the ends and those the effect needs (`keep`)."""
        if self.full:
            return tuple(values)
        return tuple(v for v in values if v in (values[0], values[-1], *keep))


# ---- the claims --------------------------------------------------------------------------------------------------
class Claim:
    """One of the survey's trade-off claims and the experiment that tests it. A claim is a subclass that sets the
    fields below and defines `design` (the cells it runs, each with the labels the analysis reads) or, for a
    timing experiment, `timings`; `analyse` (one signed effect per replicate, and a table per setting) and `draw`
    (its figure), both from the frame of its measured cells. Decorated with `@register_claim`, it is run, tested
    and reported with the others."""

    number: ClassVar[int]
    key: ClassVar[str]
    techniques: ClassVar[tuple[str, ...]]  # the survey's Table 4 row(s); the first gives the wording
    experiment: ClassVar[str]
    effect: ClassVar[str]  # the measured effect, signed so that positive = what the survey says

    def design(self, b: Budget) -> list[Entry]:
        return []

    def timings(self, b: Budget) -> list[Timing]:
        return []

    def analyse(self, frame: pd.DataFrame) -> Finding:
        raise NotImplementedError

    def draw(self, frame: pd.DataFrame) -> plt.Figure:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<claim {self.number} {self.key}>"

    @property
    def survey(self) -> str:
        return tables.survey_labels()[self.techniques[0]]["key_trade_off"]

    @property
    def figure_name(self) -> str:
        return f"claim_{self.number:02d}_{self.key}.png"

    def cells(self, b: Budget) -> list[RunConfig]:
        return [cfg for _, cfg in self.design(b)]

    def frame(self, df: pd.DataFrame, b: Budget) -> pd.DataFrame:
        if self.timings(b):
            return timing_frame(df, self.timings(b))
        return measured(df, self.design(b))

    def find(self, df: pd.DataFrame, b: Budget) -> tuple[pd.DataFrame, Finding | None]:
        """The claim's measured cells and what they show; no finding while none is recorded."""
        frame = self.frame(df, b)
        if frame.empty or not frame["recorded"].any():
            return frame, None
        return frame, self.analyse(frame)

    def budget(self, df: pd.DataFrame, b: Budget) -> Budget:
        """`b`, with `EXTRA_SEEDS` added when the claim is promising on b's seeds (`promising`). Only a full
        budget's claims replicated by seeds are extended, and only once: the decision is read from the records
        of the profile's own seeds, so the run and every later report make the same one."""
        if not b.full or b.extra_seeds or self.timings(b):
            return b
        _, finding = self.find(df, b)
        if finding is None or not promising(*finding.summary):
            return b
        return dataclasses.replace(b, extra_seeds=EXTRA_SEEDS)

    def evaluate(self, df: pd.DataFrame, b: Budget) -> tuple[Finding, plt.Figure]:
        """What the claim's cells under `b` show, and its figure; `report` passes the claim's own budget
        (`budget`), so a promising claim is read on its extra seeds too."""
        frame, finding = self.find(df, b)
        if finding is None:
            return Finding(pd.Series(dtype=float), pd.DataFrame()), empty_figure(f"claim {self.number}")
        fig = self.draw(frame)
        fig.suptitle(f"{self.number}. {' / '.join(self.techniques)}: {self.survey}", fontsize=9)
        fig.tight_layout()
        return finding, fig


REGISTRY: dict[str, Claim] = {}  # by key


def register_claim(cls: type[Claim]) -> type[Claim]:
    """Class decorator: add a claim (an instance of `cls`) to the registry under `cls.key`."""
    claim = cls()
    for other in REGISTRY.values():
        if type(other) is not cls and (other.key == claim.key or other.number == claim.number):
            raise ValueError(f"claim {claim.number} {claim.key!r}: its number or key is {other!r}'s")
    REGISTRY[claim.key] = claim
    return cls


def get_claims(keys: Sequence[str] | None = None) -> list[Claim]:
    """The claims of `keys`, in that order; every registered claim, by number, without."""
    for key in keys or ():
        if key not in REGISTRY:
            raise unknown("claim", key, REGISTRY)
    return [REGISTRY[k] for k in keys] if keys else sorted(REGISTRY.values(), key=lambda c: c.number)


def _unique(cells: list[RunConfig]) -> list[RunConfig]:
    return list({cfg.cell_id(): cfg for cfg in cells}.values())


def all_cells(profile: Profile, keys: Sequence[str] | None = None) -> list[RunConfig]:
    """Every training cell of the claims (each shared cell once); profiles.all_cells calls this for the profile."""
    b = Budget(profile)
    return _unique([cfg for claim in get_claims(keys) for cfg in claim.cells(b)])


def extra_cells(df: pd.DataFrame, profile: Profile, keys: Sequence[str] | None = None) -> list[RunConfig]:
    """The cells the promising claims' extra seeds add, given the records in `df`."""
    b = Budget(profile)
    base = {cfg.cell_id() for cfg in all_cells(profile, keys)}
    cells = [cfg for claim in get_claims(keys) for cfg in claim.cells(claim.budget(df, b))]
    return [cfg for cfg in _unique(cells) if cfg.cell_id() not in base]


def smoke_profile() -> Profile:
    """The claims on a plumbing budget: one seed, one epoch, tiny subsets, the smallest sweeps."""
    return dataclasses.replace(
        EXPERIMENTS["claims"],
        name="claims-smoke",
        seeds=(0,),
        epochs=1,
        teacher_epochs=1,
        train_subset=128,
        teacher_train_subset=None,
        test_subset=200,
        meaningful=False,
        description="The claims' plumbing check; numbers mean nothing.",
    )


def plan(profile: Profile) -> pd.DataFrame:
    """Cells per claim, and how many are new (not run by an earlier claim), plus the timing measurements."""
    b, seen, rows = Budget(profile), set(), []
    for claim in get_claims():
        ids = {cfg.cell_id() for cfg in claim.cells(b)}
        rows.append(
            {
                "claim": claim.number,
                "key": claim.key,
                "cells": len(ids),
                "new cells": len(ids - seen),
                "timed steps": len(claim.timings(b)),
            }
        )
        seen |= ids
    return pd.DataFrame(rows)


def run(
    profile: Profile | str = "claims",
    results_dir: str | Path | None = None,
    device: str = "auto",
    workers: int | None = None,
    executor: str | None = None,
    cache_dir: str | Path | None = None,
    keys: Sequence[str] | None = None,
    progress: bool = True,
    threads: int | None = None,
    retry_failed: bool = False,
    rerun_stale: bool = False,
) -> dict[str, int]:
    """Run the claims' unfinished cells, then the extra seeds of the claims they show promising (`Claim.budget`),
    then their unrecorded timings (alone, after the cells, so no training shares the machine with them). Teacher
    outputs are not shared between cells: each cell's time is its cost. `threads`, `retry_failed`,
    `rerun_stale`: as `kdbench.grid.run_grid`."""
    profile = get_profile(profile) if isinstance(profile, str) else profile
    results_dir = results_dir_for(profile.name, results_dir)

    def grid(cells: list[RunConfig]) -> dict[str, int]:
        return run_grid(
            profile,
            results_dir,
            device=device,
            cache_dir=cache_dir,
            workers=workers,
            progress=progress,
            cells=cells,
            executor=executor,
            threads=threads,
            share_outputs=False,
            retry_failed=retry_failed,
            rerun_stale=rerun_stale,
        )

    counts = grid(all_cells(profile, keys))
    extra = extra_cells(load_frame(results_dir), profile, keys)
    if extra:
        counts = {k: counts.get(k, 0) + v for k, v in grid(extra).items()}
    timings = [t for claim in get_claims(keys) for t in claim.timings(Budget(profile))]
    counts["timed"] = measure_timings(timings, results_dir, device, cache_dir)
    return counts


# ---- the report --------------------------------------------------------------------------------------------------
def report(
    df: pd.DataFrame, profile: Profile
) -> tuple[pd.DataFrame, dict[int, Finding], dict[int, plt.Figure]]:
    """One row per claim (wording, experiment, effect ± 95% CI, verdict), with each claim's finding and figure."""
    b = Budget(profile)
    rows, findings, figures = [], {}, {}
    for claim in get_claims():
        own = claim.budget(df, b)  # with the extra seeds where the claim is promising
        finding, fig = claim.evaluate(df, own)
        findings[claim.number], figures[claim.number] = finding, fig
        mean, half, n = finding.summary
        rows.append(
            {
                "#": claim.number,
                "technique": " / ".join(claim.techniques),
                "the survey says": claim.survey,
                "experiment": claim.experiment,
                "effect (positive = as the survey says)": claim.effect,
                "measured (95% CI)": tables.fmt(mean, half),
                "replicates": n,
                "seeds": "timing rounds" if claim.timings(own) else ", ".join(map(str, own.seeds)),
                "verdict": finding.verdict,
                "figure": f"[figure](figures/{claim.figure_name})",
            }
        )
    return pd.DataFrame(rows), findings, figures


def write_report(results_dir: str | Path, profile: Profile | str = "claims") -> Path:
    """results_dir/claims.md (and claims.csv) and one figure per claim under results_dir/figures/, all from the
    records in results_dir and written atomically. Returns the Markdown path."""
    profile = get_profile(profile) if isinstance(profile, str) else profile
    results_dir = Path(results_dir)
    df = load_frame(results_dir)
    summary, findings, figures = report(df, profile)
    for claim in get_claims():
        plots.save(figures[claim.number], results_dir / "figures" / claim.figure_name)
    lines = [
        f"# The survey's key trade-offs, tested ({profile.name} profile)",
        "",
        "Generated by `kdbench.claims.write_report` from the records in `records/`; do not edit.",
        "",
        f"Data: {profile.dataset}, {profile.train_subset or 'all'} training images, {profile.epochs} student "
        f"epochs, {profile.teacher_epochs} teacher epochs, seeds {', '.join(map(str, profile.seeds))} (and "
        f"{', '.join(map(str, EXTRA_SEEDS))} for a promising claim: see the verdict rule), student "
        f"{Budget(profile).student}.",
        "",
        f"**Verdict rule.** {VERDICT_RULE}",
        "",
        tables.to_markdown(summary),
        "",
    ]
    for claim in get_claims():
        finding = findings[claim.number]
        lines += [
            f"## {claim.number}. {' / '.join(claim.techniques)}: {claim.survey}",
            "",
            f"- experiment: {claim.experiment}",
            f"- effect: {claim.effect}",
            f"- measured: {tables.fmt(*finding.summary[:2])} over {finding.summary[2]} replicates → "
            f"**{finding.verdict}**",
            "",
            tables.to_markdown(finding.table),
            "",
            f"![claim {claim.number}](figures/{claim.figure_name})",
            "",
        ]
    atomic_write_text(results_dir / "claims.csv", summary.to_csv(index=False))
    return atomic_write_text(results_dir / "claims.md", "\n".join(lines))
