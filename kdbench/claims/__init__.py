"""The survey's "key trade-off" claims (its Table 4), each tested by a targeted experiment on the bundled data.

A claim is a `Claim` subclass in a module of its own here, named by its key and decorated with `@register_claim`:
the survey's wording (from survey_table4.yaml), the experiment, its design (the cells it runs, each with the labels
the analysis reads), an effect signed so that a positive value is what the survey says, and a figure. Every module
of this package is imported below, so adding a claim is adding its module: `CLAIMS`, the `claims` profile's cells,
the report and the tests pick it up. Every claim is judged by the same rule (`VERDICT_RULE`, `verdict`), applied
to the effect's 95% t-interval over independent replicates: seeds for training runs, timing rounds for a timing
experiment (`kdbench.claims.steptime`). A claim inconclusive on the profile's seeds whose interval two more seeds
would likely decide (`promising`) gets `EXTRA_SEEDS`, once (`Claim.budget`).

- `core`: the verdict, `Claim` and its registry, `Budget` (what the profile fixes for every cell), the pipeline
  (`all_cells`, `plan`, `run`, `report`, `write_report`);
- `frames`, `figures`: reading records into one row per designed cell, the per-setting tables, the plots;
- `steptime`: measuring and reading a timing experiment's training steps;
- one module per claim (`capacity_gap`, `feature_alignment`, ... `multiteacher_cost`).

The `claims` profile (`kdbench.profiles.EXPERIMENTS`) fixes the data budget: the cpu profile's (dataset, recipe,
training subset, student and teacher epochs, teacher seed and training set, the full test set) with seeds 0-2, so
every teacher whose key matches one of the cpu profile's (resnet20, mobilenetv2, wrn_16_2, the noisy-label
resnet20s) comes from the same teacher cache. The student is resnet8 throughout. Cells shared by claims (baseline,
kd on resnet20→resnet8) run once; `plan(profile)` counts each claim's cells and how many are new. Cells run
without shared teacher outputs (`share_outputs=False`), so every cell's training time is its own method's cost; a
record whose teacher outputs came from the cache has its time ignored by the cost claims.
"""

import importlib
import pkgutil

from kdbench.claims.core import (
    EXTRA_SEEDS,
    INCONCLUSIVE,
    NOT_SUPPORTED,
    REGISTRY,
    SUPPORTED,
    VERDICT_RULE,
    Budget,
    Claim,
    Entry,
    Finding,
    all_cells,
    get_claims,
    plan,
    promising,
    register_claim,
    report,
    run,
    smoke_profile,
    verdict,
    write_report,
)
from kdbench.claims.frames import ci_text

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

CLAIMS: tuple[Claim, ...] = tuple(get_claims())  # every registered claim, by number

__all__ = [
    "CLAIMS",
    "EXTRA_SEEDS",
    "INCONCLUSIVE",
    "NOT_SUPPORTED",
    "REGISTRY",
    "SUPPORTED",
    "VERDICT_RULE",
    "Budget",
    "Claim",
    "Entry",
    "Finding",
    "all_cells",
    "ci_text",
    "get_claims",
    "plan",
    "promising",
    "register_claim",
    "report",
    "run",
    "smoke_profile",
    "verdict",
    "write_report",
]
