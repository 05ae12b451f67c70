"""Keep README.md's generated sections (method table, profiles, measured Table 4, claims) in sync with the
code and the committed results: the text between `<!-- NAME:start -->` and `<!-- NAME:end -->` is replaced."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from kdbench import profiles, tables
from kdbench.frame import load_frame
from kdbench.methods import catalogue
from kdbench.results import atomic_write_text
from kdbench.results_index import provenance_lines


def methods_section() -> str:
    rows = [
        {
            "method": f"`{r['name']}`",
            "technique": r["technique"],
            "scheme": r["scheme"],
            "knowledge": r["knowledge"],
            "reference": r["reference"],
        }
        for r in catalogue()
    ]
    return tables.to_markdown(pd.DataFrame(rows))


def _epochs(p: profiles.Profile) -> str:
    """The profile's student epochs, and each pair's own where it differs."""
    own = [f"{x.epochs} on {x.teacher}→{x.student}" for x in p.pairs if x.epochs not in (None, p.epochs)]
    return f"{p.epochs} ({'; '.join(own)})" if own else str(p.epochs)


def profiles_section() -> str:
    rows = []
    for p in profiles.PROFILES.values():
        rows.append(
            {
                "profile": f"`{p.name}`",
                "dataset": p.dataset,
                "pairs (teacher→student)": "; ".join(f"{x.teacher}→{x.student}" for x in p.pairs),
                "seeds": len(p.seeds),
                "student epochs": _epochs(p),
                "teacher epochs": p.teacher_epochs,
                "train images": p.train_subset or "all",
                "test images": p.test_subset or "all",
                "cells": len(profiles.all_cells(p)),
                "what for": p.description,
            }
        )
    return tables.to_markdown(pd.DataFrame(rows))


def _no_results(results_dir: Path) -> str:
    return f"_No results yet: run `python run_all.py --profile {results_dir.name}`._"


def table4_section(results_dir: Path) -> str:
    """The measured Table 4 as the Table 4 notebook wrote it (tables/table4.csv): how many of the survey's 45
    labelled cells the measurements agree with, then per technique each label as 'survey → measured ✔/✘'."""
    path = results_dir / "tables" / "table4.csv"
    if not path.exists():
        return _no_results(results_dir)
    table = pd.read_csv(path).astype(object).fillna("—")
    source = [f"- {line}" for line in provenance_lines(results_dir, load_frame(results_dir))]
    cite = tables.survey_source()
    link = f"results/{results_dir.name}/tables/table4.md"
    return "\n".join(
        [
            *source,
            "",
            f"Survey: {cite['authors']} ({cite['year']}), *{cite['title']}*, {cite['journal']}, "
            f"doi:{cite['doi']}, {cite['table']}.",
            "",
            f"**{tables.agreement_line(table)}** Measured labels are ranks among the measured techniques "
            "(terciles; Very High for an outlier), as `kdbench.tables.LABEL_RULES` says; n in every interval "
            "counts distinct seeds (`kdbench.tables.POOLING`). All columns, the pooling rule and what was left "
            f"out: [{link}]({link}).",
            "",
            tables.to_markdown(_table4_summary(table)),
        ]
    )


def _table4_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Table 4 in a README's width: the pooled boost and cost ratios, and each survey label next to its
    measured one."""
    rows = []
    for _, r in table.iterrows():
        row = {"technique": r["technique"]}
        for column in ("seeds", "boost pooled (pts, 95% CI)", "footprint ×", "train time ×"):
            row[column] = r.get(column, "—")
        for kind in tables.KINDS:
            short = kind.split("_")[0]
            said, got, mark = (r.get(f"{short}: {part}", "—") for part in ("survey", "measured", "agree"))
            mark = mark if mark in tables.MARKS.values() else ""
            row[kind.replace("_", " ")] = f"{said} → {got} {mark}".strip()
        rows.append(row)
    return pd.DataFrame(rows)


def claims_section(results_dir: Path) -> str:
    """The claims' verdicts, from the summary the claims notebook wrote (claims.csv); details and figures stay
    in claims.md, which this links."""
    path = results_dir / "claims.csv"
    if not path.exists():
        return _no_results(results_dir)
    summary = pd.read_csv(path)
    link = f"results/{results_dir.name}/claims.md"
    rows = summary[["#", "technique", "the survey says", "measured (95% CI)", "replicates", "verdict"]]
    return "\n".join(
        [
            f"Effects are signed so that positive means what the survey says; experiments, per-claim tables "
            f"and figures: [{link}]({link}).",
            "",
            tables.to_markdown(rows),
        ]
    )


def render(readme: str, root: Path) -> str:
    sections = {
        "methods": methods_section(),
        "profiles": profiles_section(),
        "table4": table4_section(root / "results" / "cpu"),
        "claims": claims_section(root / "results" / "claims"),
    }
    for name, body in sections.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n)(?:.*?\n)?(<!-- {name}:end -->)", re.S)
        readme = pattern.sub(lambda m, body=body: f"{m.group(1)}{body}\n{m.group(2)}", readme)
    return readme


def update(root: str | Path = ".") -> bool:
    """Rewrite README.md's generated sections; returns whether anything changed."""
    path = Path(root) / "README.md"
    old = path.read_text()
    new = render(old, Path(root))
    if new != old:
        atomic_write_text(path, new)
    return new != old
