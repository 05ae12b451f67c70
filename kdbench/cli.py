"""`kdbench ...`: list methods, run one cell. User errors print one line and exit with status 2."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable, Sequence

from kdbench.errors import KdbenchError, KdbenchWarning


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
                 data_root=args.data_root, progress=not args.quiet, share_outputs=args.share_outputs)
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
    counts = run_grid(profile, args.results_dir, args.device, args.cache_dir, args.workers, not args.quiet,
                      executor=args.executor, threads=args.threads, share_outputs=args.share_outputs)
    print(json.dumps(counts))


def _bench(args: argparse.Namespace) -> None:
    from kdbench.bench import Settings, bench, write_perf
    from kdbench.grid import get_profile, results_dir_for

    profile = get_profile(args.grid or args.profile)
    methods = [m for arg in args.methods for m in arg.split(",") if m]
    frame = bench(profile, methods or None, args.device, Settings(args.warmup, args.repeats, args.steps),
                  args.cache_dir, progress=not args.quiet, cached=args.cached)
    path = write_perf(results_dir_for(profile.name, args.results_dir), frame)
    print(path.read_text())
    print(f"written to {path}")


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
    p.add_argument("--no-output-cache", dest="share_outputs", action="store_false",
                   help="compute every teacher output afresh instead of sharing them across cells")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)

    p = sub.add_parser("grid", help="run (or resume) every cell of a profile")
    p.add_argument("--profile", default="cpu", help="smoke, cpu or paper")
    p.add_argument("--grid", help="a grid YAML file with the profile fields (instead of --profile)")
    p.add_argument("--device", default="auto")
    p.add_argument("--executor", help="local (default: one cell after another), processes (a pool on this "
                   "machine) or ray (Ray tasks on $RAY_ADDRESS's cluster, else a local Ray)")
    p.add_argument("--workers", type=int, help="jobs at once: the processes pool (default one per core) or Ray "
                   "tasks in flight (default no cap); N > 1 without --executor means processes")
    p.add_argument("--threads", type=int, help="torch threads per job; with ray also the CPUs each task asks for "
                   "(default 1)")
    p.add_argument("--results-dir", help="default results/<profile>")
    p.add_argument("--cache-dir", help="teacher cache (default $KDBENCH_CACHE or ~/.cache/kdbench)")
    p.add_argument("--list", action="store_true", help="print the cells and exit")
    p.add_argument("--no-output-cache", dest="share_outputs", action="store_false",
                   help="compute every teacher output afresh instead of sharing them across cells")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_grid)

    p = sub.add_parser("bench", help="time each method's training step against baseline and its ideal step")
    p.add_argument("--profile", default="cpu", help="smoke, cpu or paper: its first pair, batch size and data")
    p.add_argument("--grid", help="a grid YAML file with the profile fields (instead of --profile)")
    p.add_argument("--methods", action="append", default=[], help="methods to time (repeat or comma-separate; "
                   "default all of the profile's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls of each timed thing")
    p.add_argument("--repeats", type=int, default=5, help="timed passes; the median is reported")
    p.add_argument("--steps", type=int, default=5, help="fixed batches in one pass")
    p.add_argument("--no-cached", dest="cached", action="store_false",
                   help="skip the rows with teacher outputs served from the shared cache")
    p.add_argument("--results-dir", help="where perf.md and perf.csv go (default results/<profile>)")
    p.add_argument("--cache-dir", help="teacher cache (default $KDBENCH_CACHE or ~/.cache/kdbench)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_bench)

    p = sub.add_parser("readme", help="regenerate README.md's method, profile and Table 4 sections")
    p.add_argument("--root", default=".", help="the checkout holding README.md and results/")
    p.set_defaults(func=_readme)
    return parser




def _one_line_warnings(show: Callable[..., None]) -> Callable[..., None]:
    """A `warnings.showwarning` that prints kdbench's own warnings on one line, like its errors, and hands
    every other warning to `show`."""

    def showwarning(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, KdbenchWarning):
            print(f"kdbench: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warnings(warnings.showwarning)
        try:
            args.func(args)
        except KdbenchError as exc:
            print(f"kdbench: error: {' '.join(str(exc).split())}", file=sys.stderr)  # one line, whatever it wraps
            return 2
    return 0
