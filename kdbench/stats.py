"""The one place kdbench turns replicates into a mean ± 95% confidence interval, and decides whether a run
collapsed to chance. Tables, figures and claims all call these, so a number means the same thing
everywhere."""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import cache

import pandas as pd

CONFIDENCE = 0.95
COLLAPSE_MARGIN_PTS = 5.0  # top-1 points above chance under which a run counts as collapsed


def _t_two_sided_mass(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with integer `df`, by the closed-form finite series (Abramowitz & Stegun
    26.7.3/26.7.4): exact for every integer df, which is all a count of replicates can give, and needs no
    scipy."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2 == 0:
        term, total = 1.0, 1.0
        for k in range(2, df, 2):  # 1 + 1/2 c² + 1·3/(2·4) c⁴ + ... up to c^(df-2)
            term *= c2 * (k - 1) / k
            total += term
        return math.sin(theta) * total
    if df == 1:
        return 2 * theta / math.pi
    term, total = 1.0, 1.0
    for k in range(3, df - 1, 2):  # 1 + 2/3 c² + 2·4/(3·5) c⁴ + ... up to c^(df-3)
        term *= c2 * (k - 1) / k
        total += term
    return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)


@cache
def t_critical(df: int, confidence: float = CONFIDENCE) -> float:
    """Two-sided Student-t critical value (e.g. 12.706 for df=1, 2.228 for df=10 at 95%), found by bisection
    on the exact CDF above; NaN for df <= 0 (no spread can be estimated from one value)."""
    if df <= 0:
        return math.nan
    lo, hi = 0.0, 1.0
    while _t_two_sided_mass(hi, df) < confidence:
        hi *= 2
    for _ in range(100):  # far below float precision on [0, hi]
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_two_sided_mass(mid, df) < confidence else (lo, mid)
    return (lo + hi) / 2


def mean_ci(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, half-width of the 95% t confidence interval and n; the half-width is NaN for a single value.

    The caller passes one value per independent replicate: n is taken to be len(values) after dropping NaN."""
    v = pd.Series(list(values) if not isinstance(values, pd.Series) else values, dtype=float).dropna()
    n = len(v)
    if n == 0:
        return math.nan, math.nan, 0
    half = t_critical(n - 1) * v.std(ddof=1) / math.sqrt(n) if n > 1 else math.nan
    return float(v.mean()), float(half), n


def fmt(mean: float, half: float, digits: int = 2) -> str:
    """'+1.23 ± 0.45' (signed: these are differences), '+1.23' without an interval, '—' without a value."""
    if math.isnan(mean):
        return "—"
    return f"{mean:+.{digits}f} ± {half:.{digits}f}" if not math.isnan(half) else f"{mean:+.{digits}f}"


def ci_label(n: int) -> str:
    """What an error bar or '±' stands for: a 95% CI only exists with more than one replicate."""
    return f"mean ± 95% CI, n={n}" if n > 1 else "single seed, no CI"


def chance_top1(num_classes: int) -> float:
    """Top-1 (%) of a uniform guess."""
    return 100.0 / num_classes


def is_collapsed(top1: float | None, num_classes: int, margin_pts: float = COLLAPSE_MARGIN_PTS) -> bool:
    """Whether a run's top-1 (%) is within `margin_pts` of chance (or below it): training that diverged or
    never learned. Such runs are counted and left out of means, because averaging a 1% run with 70% runs gives
    a meaningless mean and an interval that spans everything. A missing top-1 (failed run) is not
    'collapsed'."""
    if top1 is None or (isinstance(top1, float) and math.isnan(top1)):
        return False
    return float(top1) <= chance_top1(num_classes) + margin_pts
