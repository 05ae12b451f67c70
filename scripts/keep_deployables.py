"""Give a rerun's records the inference costs the results folder measured first, so that one folder holds one
measurement per deployable:

    python scripts/keep_deployables.py --old-ref 5a65bf0 --folder results/cpu

A deployable's size, FLOPs and latency are measured once per results folder and shared by every cell that ships
it (`kdbench.deployables`: the first writer wins). A rerun from an emptied folder measures them again, and
latencies measured on another day differ; when only part of a folder is run again, its records would then hold
two measurements of one deployable. This puts back the deployable measurements the folder held at `--old-ref`
and, for every record of a cell that also has a record there, its student's and teacher's inference-cost fields,
after checking that both records describe the same deployables (parameters, bytes, FLOPs). Nothing else in a
record changes; the report says how many records changed and by how much their latencies moved.
"""

from __future__ import annotations

import argparse

import pandas as pd
from compare_records import ROOT, git, new_records, old_records  # this folder's: records at a git ref and now

from kdbench import results
from kdbench.deployables import FOLDER, SUFFIX

LATENCIES = ("latency_ms_b1", "latency_ms_b1_iqr", "latency_ms_b256", "latency_ms_b256_iqr")
SIZES = {
    "student": ("student_params", "deployable_bytes", "flops_per_image"),
    "teacher": ("teacher_params", "teacher_bytes", "teacher_flops_per_image"),
}
COST_FIELDS = (*LATENCIES, *(f"teacher_{name}" for name in LATENCIES))


def restore_measurements(ref: str, folder: str) -> int:
    """Write back every deployable measurement `folder` held at `ref`; returns how many."""
    names = [
        n for n in git("ls-tree", "--name-only", f"{ref}:{folder}/{FOLDER}").split() if n.endswith(SUFFIX)
    ]
    for name in names:
        results.atomic_write_text(
            ROOT / folder / FOLDER / name, git("show", f"{ref}:{folder}/{FOLDER}/{name}")
        )
    return len(names)


def records_to_change(ref: str, folder: str) -> list[tuple[dict, dict]]:
    """(working-tree record, `ref`'s record of the same cell) for every record whose inference costs differ,
    after checking that every pair describes the same deployables: all are checked before anything is written."""
    kept = old_records(ref, folder)
    pairs = []
    for cell, new in sorted(new_records(folder).items()):
        old = kept.get(cell)
        if old is None or all(new.get(k) == old.get(k) for k in COST_FIELDS):
            continue
        for part, sizes in SIZES.items():
            if [new.get(k) for k in sizes] != [old.get(k) for k in sizes]:
                raise SystemExit(f"{cell}: the {part}'s deployable differs at {ref}; nothing changed")
        pairs.append((new, old))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--old-ref", required=True, help="the git commit holding the folder's first measurements"
    )
    parser.add_argument(
        "--folder", default="results/cpu", help="the results folder, relative to the repository"
    )
    args = parser.parse_args()
    pairs = records_to_change(args.old_ref, args.folder)
    measurements = restore_measurements(args.old_ref, args.folder)
    for new, old in pairs:
        results.write_record({**new, **{k: old.get(k) for k in COST_FIELDS}}, ROOT / args.folder)
    print(
        f"{measurements} deployable measurements put back from {args.old_ref}; {len(pairs)} records changed"
    )
    if pairs:
        moved = pd.Series([new["latency_ms_b1"] / old["latency_ms_b1"] for new, old in pairs])
        print(
            f"their batch-1 latency, rerun / kept: median {moved.median():.2f} (from {moved.min():.2f} to "
            f"{moved.max():.2f})"
        )


if __name__ == "__main__":
    main()
