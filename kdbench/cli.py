"""`kdbench ...`: list methods, run one cell. User errors print one line and exit with status 2."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from kdbench.errors import KdbenchError


def _methods(args: argparse.Namespace) -> None:
    from kdbench.methods import catalogue

    rows = catalogue()
    if args.format == "json":
        print(json.dumps(rows, indent=1))
        return
    import pandas as pd

    table = pd.DataFrame(rows)[["name", "technique", "scheme", "knowledge", "reference"]]
    print(table.to_string(index=False))


def _run(args: argparse.Namespace) -> None:
    from kdbench.methods import parse_hparams
    from kdbench.runner import RunConfig, run

    teachers = tuple(t for arg in args.teacher for t in arg.split(",") if t)
    cfg = RunConfig(
        method=args.method, student=args.student, teachers=teachers, dataset=args.dataset, seed=args.seed,
        recipe=args.recipe, epochs=args.epochs, teacher_epochs=args.teacher_epochs, train_subset=args.train_subset,
        val_size=args.val_size, hparams=parse_hparams(args.hp),
    )
    record = run(cfg, device=args.device, results_dir=args.results_dir, cache_dir=args.cache_dir,
                 data_root=args.data_root, progress=not args.quiet)
    summary = {k: record[k] for k in ("method", "student", "teacher", "student_top1", "teacher_top1",
                                      "train_time_s", "train_samples_per_s")}
    print(json.dumps(summary))
    print(f"record written to {record['path']}")


def _grid(args: argparse.Namespace) -> None:
    from kdbench.grid import all_cells, get_profile, run_grid, validate

    profile = get_profile(args.grid or args.profile)
    validate(profile)
    if args.list:
        for cfg in all_cells(profile):
            print(cfg.cell_id(), cfg.method, "/".join(cfg.teachers), cfg.student, f"seed={cfg.seed}")
        return
    counts = run_grid(profile, args.results_dir, args.device, args.cache_dir, args.workers, not args.quiet)
    print(json.dumps(counts))


def _readme(args: argparse.Namespace) -> None:
    from kdbench import readme

    changed = readme.update(args.root)
    print("README.md updated" if changed else "README.md already up to date")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdbench", description="Knowledge-distillation benchmark suite.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("methods", help="list every registered method with its metadata")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=_methods)

    p = sub.add_parser("run", help="train one student with one method and write its record")
    p.add_argument("--method", required=True)
    p.add_argument("--student", required=True)
    p.add_argument("--teacher", action="append", default=[], help="teacher architecture (repeat or comma-separate)")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--recipe", default="cpu")
    p.add_argument("--epochs", type=int)
    p.add_argument("--teacher-epochs", type=int)
    p.add_argument("--train-subset", type=int)
    p.add_argument("--val-size", type=int, default=0)
    p.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE", help="method hyperparameter")
    p.add_argument("--device", default="auto")
    p.add_argument("--results-dir", default="results/local")
    p.add_argument("--cache-dir", help="teacher cache (default $KDBENCH_CACHE or ~/.cache/kdbench)")
    p.add_argument("--data-root", help="dataset folder (default $KDBENCH_DATA or ~/.cache/kdbench/data)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)

    p = sub.add_parser("grid", help="run (or resume) every cell of a profile")
    p.add_argument("--profile", default="cpu", help="smoke, cpu or paper")
    p.add_argument("--grid", help="a grid YAML file with the profile fields (instead of --profile)")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=1, help="cells run in parallel processes")
    p.add_argument("--results-dir", help="default results/<profile>")
    p.add_argument("--cache-dir", help="teacher cache (default $KDBENCH_CACHE or ~/.cache/kdbench)")
    p.add_argument("--list", action="store_true", help="print the cells and exit")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_grid)

    p = sub.add_parser("readme", help="regenerate README.md's method, profile and Table 4 sections")
    p.add_argument("--root", default=".", help="the checkout holding README.md and results/")
    p.set_defaults(func=_readme)
    return parser




def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except KdbenchError as exc:
        print(f"kdbench: error: {exc}", file=sys.stderr)
        return 2
    return 0
