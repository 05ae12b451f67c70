"""What each `kdbench` subcommand does with its parsed arguments (`kdbench.cli_parser` builds the parser that
dispatches to them): list the methods, run one cell, a grid, the bench, import or ship teachers, rebuild a
report or the README. Each returns the command's exit status and imports the modules it needs (most of them
torch-heavy) when it runs. run_all.py shares `grid_outcome`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdbench.cli_options import use_data_root, use_retrain_teachers
from kdbench.errors import KdbenchError

if TYPE_CHECKING:  # hints only: the commands import these torch-heavy modules when they run
    from kdbench.profiles import Profile
    from kdbench.runner import RunConfig

WIDTH = 100  # `kdbench methods` fits a terminal this wide


def methods_command(args: argparse.Namespace) -> int:
    from kdbench.methods import catalogue

    rows = catalogue()
    if args.format == "json":
        print(json.dumps(rows, indent=1))
    elif args.verbose:
        print("\n\n".join(_method_details(row) for row in rows))
    else:
        print("\n".join(_method_table(rows)))
    return 0


def _method_table(rows: list[dict[str, Any]]) -> list[str]:
    """One line per method, at most WIDTH characters: name, technique, scheme, teachers, reference's authors."""
    cells = [["name", "technique", "scheme", "teachers", "reference"]] + [
        [r["name"], r["technique"], r["scheme"], str(r["teachers"]), r["reference"].split(",")[0]]
        for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]) - 1)]
    lines = ["  ".join([*(c[i].ljust(w) for i, w in enumerate(widths)), c[-1]]) for c in cells]
    lines.append("(kdbench methods --verbose: knowledge, reference, summary and hyperparameters of each)")
    return [line if len(line) <= WIDTH else line[: WIDTH - 1] + "…" for line in lines]


def _method_details(row: dict[str, Any]) -> str:
    teachers = {0: "no teacher", 1: "1 teacher"}.get(row["teachers"], f"{row['teachers']}+ teachers")
    head = (
        f"{row['name']}: {row['technique']}, {row['scheme']}, {teachers}, compared with {row['compare_to']}"
    )
    hparams = ", ".join(f"{k}={v}" for k, v in row["defaults"].items()) or "none"
    body = [f"knowledge: {row['knowledge']}", f"reference: {row['reference']}", f"hyperparameters: {hparams}"]
    if row["summary"]:
        body.append(row["summary"])
    wrap = textwrap.TextWrapper(width=WIDTH, initial_indent="  ", subsequent_indent="    ")
    return "\n".join([head, *(wrap.fill(line) for line in body)])


def run_command(args: argparse.Namespace) -> int:
    from kdbench.runner import run
    from kdbench.sanity import check_pairs, check_teachers

    cfg = run_config(args)
    _check_dataset(cfg.dataset)
    check_pairs([(t, cfg.student) for t in cfg.teachers], cfg.dataset)
    use_retrain_teachers(args.retrain_teachers)
    record = run(
        cfg,
        device=args.device,
        results_dir=args.results_dir,
        cache_dir=args.cache_dir,
        data_root=args.data_root,
        progress=not args.quiet,
        share_outputs=args.share_outputs,
        memory_format=args.memory_format,
        checkpoint_every=args.checkpoint_every,
        compile_models=args.compile_models,
        cudnn_benchmark=args.cudnn_benchmark,
        tensorboard=args.tensorboard,
    )
    check_teachers([record])
    summary = {
        k: record[k]
        for k in (
            "cell_id",
            "method",
            "student",
            "teacher",
            "student_top1",
            "teacher_top1",
            "train_time_s",
            "train_samples_per_s",
        )
    }
    print(json.dumps(summary))
    print(f"record written to {record['path']}")
    return 0


def run_config(args: argparse.Namespace) -> RunConfig:
    """The cell `kdbench run` trains: a grid cell by its id (`--cell`), or the one its options describe, with the
    grid's conventions (one teacher per architecture, seed 0, shared by every student seed), so that the same
    options give the grid's cell id."""
    from kdbench.methods import get_method, parse_hparams
    from kdbench.runner import RunConfig

    if args.cell:
        given = [name for name, default in args.cell_defaults.items() if getattr(args, name) != default]
        if given:
            options = ", ".join("--" + name.replace("_", "-") for name in given)
            raise KdbenchError(f"--cell names a whole grid cell: give it without {options}")
        return _grid_cell(args.cell, args.grid or args.profile, args.precision)
    if not args.student:
        raise KdbenchError(
            "give --student (and --method, default kd), or --cell ID (see kdbench grid --list)"
        )
    teachers = tuple(t for arg in args.teacher for t in arg.split(",") if t)
    needs_teacher = get_method(args.method).info.teachers > 0
    cfg = RunConfig(
        method=args.method,
        student=args.student,
        teachers=teachers,
        dataset=args.dataset,
        seed=args.seed,
        recipe=args.recipe,
        epochs=args.epochs,
        teacher_epochs=args.teacher_epochs,
        train_subset=args.train_subset,
        teacher_train_subset=args.teacher_train_subset if needs_teacher else None,
        val_size=args.val_size,
        teacher_seed=args.teacher_seed if needs_teacher else None,
        label_noise=args.label_noise,
        imbalance_ratio=args.imbalance_ratio,
        test_subset=args.test_subset,
        hparams=parse_hparams(args.hp),
        variant=args.variant,
        precision=args.precision,
    )
    cfg.resolve()
    return cfg


def _grid_cell(cell_id: str, profile_name: str, precision: str) -> RunConfig:
    """The cell of the profile whose id is `cell_id` (or starts with it, when only one does)."""
    from kdbench.profiles import all_cells, get_profile

    profile = get_profile(profile_name)
    cells = [dataclasses.replace(c, precision=precision) for c in all_cells(profile)]
    found = [c for c in cells if c.cell_id() == cell_id] or [
        c for c in cells if c.cell_id().startswith(cell_id)
    ]
    if len(found) != 1:
        what = "no cell" if not found else f"{len(found)} cells"
        raise KdbenchError(
            f"{what} of profile {profile.name!r} has the id {cell_id!r}; list them with "
            f"kdbench grid --profile {profile.name} --list"
        )
    return found[0]


def _check_dataset(name: str) -> None:
    from kdbench.data import dataset_info

    dataset_info(name)


def grid_command(args: argparse.Namespace) -> int:
    from kdbench.grid import results_dir_for, run_grid
    from kdbench.profiles import all_cells, get_profile, left_out, on_dataset, validate

    profile = on_dataset(get_profile(args.grid or args.profile), args.dataset)
    validate(profile)
    cells = [dataclasses.replace(cfg, precision=args.precision) for cfg in all_cells(profile)]
    if args.list:
        for cfg in cells:
            print(cfg.cell_id(), cfg.method, "/".join(cfg.teachers), cfg.student, f"seed={cfg.seed}")
        for method, pair, why in left_out(profile):
            print(f"# left out: {method} on {pair.teacher} -> {pair.student} ({why})")
        return 0
    use_data_root(args.data_root)
    use_retrain_teachers(args.retrain_teachers)
    results_dir = results_dir_for(profile.name, args.results_dir)
    counts = run_grid(
        profile,
        results_dir,
        args.device,
        args.cache_dir,
        args.workers,
        not args.quiet,
        executor=args.executor,
        threads=args.threads,
        share_outputs=args.share_outputs,
        retry_failed=args.retry_failed,
        rerun_stale=args.rerun_stale,
        cells=cells,
        memory_format=args.memory_format,
        compile_models=args.compile_models,
        cudnn_benchmark=args.cudnn_benchmark,
        tensorboard=args.tensorboard,
    )
    print(json.dumps(counts))
    return grid_outcome(profile, results_dir, "kdbench", cells)


def grid_outcome(
    profile: Profile, results_dir: str | Path, prog: str, cells: list[RunConfig] | None = None
) -> int:
    """After a grid: warn about teachers at chance (in a meaningful profile), and return 1, after one line saying
    so, when any of its cells (default: the profile's) failed (in this run or an earlier one), else 0."""
    from kdbench.profiles import all_cells
    from kdbench.results import read_record, record_path
    from kdbench.sanity import check_teachers

    records = []
    for cfg in all_cells(profile) if cells is None else cells:
        path = record_path(results_dir, cfg.cell_id())
        if path.exists():
            records.append(read_record(path))
    if profile.meaningful:
        check_teachers(records)
    failed = sum(r.get("status") == "failed" for r in records)
    if failed:
        print(
            f"{prog}: {failed} of {len(records)} grid cells failed (each record's 'error' says why; run_all.py "
            "lists them in tables/failed.md); run them again with --retry-failed",
            file=sys.stderr,
        )
        return 1
    return 0


def bench_command(args: argparse.Namespace) -> int:
    from kdbench.bench import bench, runnable_configs
    from kdbench.env import resolve_device
    from kdbench.grid import results_dir_for
    from kdbench.perf_report import write_perf
    from kdbench.profiles import get_profile, on_dataset, validate
    from kdbench.timing import Settings

    profile = on_dataset(get_profile(args.grid or args.profile), args.dataset)
    validate(profile)
    methods = [m for arg in args.methods for m in arg.split(",") if m]
    configs = runnable_configs(resolve_device(args.device), args.precision, args.memory_format)
    frame = bench(
        profile,
        methods or None,
        args.device,
        Settings(args.warmup, args.repeats, args.steps),
        args.cache_dir,
        data_root=args.data_root,
        progress=not args.quiet,
        cached=args.cached,
        configs=configs,
    )
    path = write_perf(results_dir_for(profile.name, args.results_dir), frame)
    print(path.read_text())
    print(f"written to {path}")
    return 0


def teachers_import_command(args: argparse.Namespace) -> int:
    from kdbench.teacher_import import PROFILE, import_teacher

    result = import_teacher(
        args.source, args.path, args.arch, args.cache_dir, args.data_root, args.device, args.force
    )
    source = result.meta["imported_from"]
    print(
        json.dumps(
            {
                "arch": args.arch,
                "from": args.source,
                "sha256": source["sha256"],
                "top1": result.meta["top1"],
                "reported_top1": source["reported_top1"],
                "test_images": len(result.meta["test_logits"]),
                "key": result.key.digest(),
            }
        )
    )
    print(f"teacher stored at {result.path}; {PROFILE} runs load it instead of training it")
    for key in result.other_keys:
        print(
            f"note: {PROFILE} cells that use {args.arch} as a further teacher (seed {key.seed}) still train their own"
        )
    return 0


def teachers_ship_command(args: argparse.Namespace) -> int:
    from kdbench.profiles import get_profile
    from kdbench.teacher_ship import ship_profile

    written = ship_profile(get_profile(args.profile), args.cache_dir, args.dest)
    for path in written:
        print(f"shipped {path}")
    return 0


def report_command(args: argparse.Namespace) -> int:
    from kdbench.grid import results_dir_for
    from kdbench.notebooks import portable, report
    from kdbench.profiles import get_profile

    profile = args.grid or args.profile
    results_dir = results_dir_for(get_profile(profile).name, args.results_dir).resolve()
    path = report(profile, results_dir)
    print(f"tables, figures and {portable(path)} rebuilt from {portable(results_dir / 'records')}")
    return 0


def readme_command(args: argparse.Namespace) -> int:
    from kdbench import readme

    changed = readme.update(args.root)
    print("README.md updated" if changed else "README.md already up to date")
    return 0
