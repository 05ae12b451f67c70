"""Do the working tree's code and the code at a git ref write the same records? Run by hand after a refactor:

    python scripts/code_equivalence.py --old main --out results/design/code-equivalence.md

A refactor that changes no number still changes the code digests every record carries (`code_version`), so every
record it touches turns stale. This runs one small cell of every method the two versions share (the zoo profile's
pair and extra teachers at a tiny budget, its variants, and the robustness profile's label noise and imbalance),
once with each version's code (the old one from a temporary git worktree), into separate results folders and
teacher caches, and compares the two records of each cell without their timings, environment and the fields the
old code did not write. Each method whose cells match gets its old digest mapped to the current one in
kdbench/code_equivalence.json, and the core digest too when every cell matches: records the old code wrote then
stay current (`kdbench.record.is_stale`). The report lists every cell and the first field that differs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from kdbench import results
from kdbench.profiles import PROFILES, all_cells
from kdbench.record import EQUIVALENCE_FILE, code_equivalences, package_root
from kdbench.results import atomic_write_text
from kdbench.runner import RunConfig

ROOT = Path(__file__).resolve().parents[1]
BUDGET = {
    "epochs": 2,
    "teacher_epochs": 2,
    "train_subset": 256,
    "teacher_train_subset": 512,
    "test_subset": 500,
}

# Runs in a subprocess with the version's code first on the path: builds each cell from its fields (the ones that
# version's RunConfig has) and checks it names the same cell before running it.
DRIVER = """
import dataclasses, json, sys
from kdbench.runner import RunConfig, run
cells, out, cache = json.loads(open(sys.argv[1]).read()), sys.argv[2], sys.argv[3]
known = {f.name for f in dataclasses.fields(RunConfig)}
for want in cells:
    fields = {k: tuple(v) if k == "teachers" else v for k, v in want["fields"].items() if k in known}
    cfg = RunConfig(**fields)
    if cfg.cell_id() != want["cell_id"]:
        sys.exit(f"this code names cell {want['cell_id']} {cfg.cell_id()}")
    run(cfg, device="cpu", results_dir=out, cache_dir=cache, progress=False, latency_repeats=1)
"""


def cells() -> list[RunConfig]:
    """One seed of every registered method (references and variants included) and of the robustness options, at
    `BUDGET`."""
    zoo = dataclasses.replace(PROFILES["zoo"], seeds=(0,), **BUDGET)
    rob = PROFILES["robustness"]
    rob = dataclasses.replace(rob, robustness=dataclasses.replace(rob.robustness, seeds=(0,)), **BUDGET)
    return list({c.cell_id(): c for c in all_cells(zoo) + all_cells(rob)}.values())


def run_version(root: Path, configs: list[RunConfig], work: Path) -> dict[str, dict[str, Any]]:
    """The records `configs` get from the code at `root`, by cell id."""
    spec = work / "cells.json"
    spec.write_text(json.dumps([{"cell_id": c.cell_id(), "fields": dataclasses.asdict(c)} for c in configs]))
    out = work / "results"
    subprocess.run(
        [sys.executable, "-c", DRIVER, str(spec), str(out), str(work / "cache")],
        check=True,
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
    )
    return {r["cell_id"]: r for r in map(results.read_record, (out / "records").glob("*.json"))}


def compare(configs: list[RunConfig], old: dict, new: dict) -> pd.DataFrame:
    rows = []
    for cfg in configs:
        a, b = old.get(cfg.cell_id()), new.get(cfg.cell_id())
        diff = "record missing" if a is None or b is None else results.first_difference(a, b)
        rows.append(
            {
                "method": cfg.method,
                "variant": cfg.variant,
                "label noise": cfg.label_noise,
                "imbalance": cfg.imbalance_ratio,
                "cell": cfg.cell_id(),
                "same record": diff is None,
                "first difference": diff or "",
                "old top-1": None if a is None else a.get("student_top1"),
                "new top-1": None if b is None else b.get("student_top1"),
                "old code": None if a is None else a["code_version"],
                "new code": None if b is None else b["code_version"],
            }
        )
    return pd.DataFrame(rows)


def equivalences(table: pd.DataFrame, every_method: bool) -> dict[str, dict[str, str]]:
    """The verified old-to-new digests: per method where all its cells match; the core where every cell of every
    method does (`every_method`: the table holds them all)."""
    known = {name: dict(digests) for name, digests in code_equivalences().items()}  # a copy: it is cached
    for method, rows in table.groupby("method"):
        if rows["same record"].all():
            old, new = rows.iloc[0]["old code"], rows.iloc[0]["new code"]
            if old["method"] != new["method"]:
                known.setdefault(method, {})[old["method"]] = new["method"]
    if every_method and table["same record"].all():
        old, new = table.iloc[0]["old code"], table.iloc[0]["new code"]
        if old["core"] != new["core"]:
            known.setdefault("core", {})[old["core"]] = new["core"]
    return known


def report(table: pd.DataFrame, ref: str, sha: str) -> str:
    shown = table.drop(columns=["old code", "new code"])
    same = int(table["same record"].sum())
    return "\n".join(
        [
            "# code-equivalence: measured with scripts/code_equivalence.py",
            "",
            f"The code at `{ref}` ({sha[:10]}) against the working tree's: one cell of every method, reference, "
            f"variant and robustness option at a tiny budget ({', '.join(f'{k} {v}' for k, v in BUDGET.items())}; "
            "fashion-mnist, the zoo profile's pair, seed 0, CPU), each version into its own results folder and "
            f"teacher cache. **{same} of {len(table)} records are the same** (timings, environment and the fields "
            "the old code did not write aside).",
            "",
            shown.to_markdown(index=False),
            "",
        ]
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", required=True, help="the git ref whose code wrote the records")
    p.add_argument("--out", type=Path, required=True, help="the report (markdown)")
    p.add_argument("--methods", nargs="+", help="only these methods (default: all)")
    args = p.parse_args()
    configs = [c for c in cells() if not args.methods or c.method in args.methods]
    sha = subprocess.run(["git", "rev-parse", args.old], cwd=ROOT, check=True, capture_output=True, text=True)
    with tempfile.TemporaryDirectory() as tmp:
        old_root = Path(tmp) / "old-code"
        subprocess.run(["git", "worktree", "add", "--detach", str(old_root), args.old], cwd=ROOT, check=True)
        try:
            (Path(tmp) / "old").mkdir()
            (Path(tmp) / "new").mkdir()
            old = run_version(old_root, configs, Path(tmp) / "old")
            new = run_version(ROOT, configs, Path(tmp) / "new")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old_root)], cwd=ROOT, check=True)
    table = compare(configs, old, new)
    atomic_write_text(args.out, report(table, args.old, sha.stdout.strip()))
    atomic_write_text(
        package_root() / EQUIVALENCE_FILE, json.dumps(equivalences(table, not args.methods), indent=1) + "\n"
    )
    print(args.out.read_text())


if __name__ == "__main__":
    main()
