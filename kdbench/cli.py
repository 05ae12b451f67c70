"""`kdbench ...`: list methods, run one cell, a grid, the bench; import released teachers. Exit status: 0; 1 when
grid cells failed; 2 for bad input, printed on one line; 130 when interrupted."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdbench import __version__
from kdbench.errors import KdbenchError, KdbenchWarning

if TYPE_CHECKING:  # hints only: the commands import these torch-heavy modules when they run
    from kdbench.profiles import Profile
    from kdbench.runner import RunConfig

WIDTH = 100  # `kdbench methods` fits a terminal this wide
INTERRUPTED = "interrupted; run the same command again to resume"


def _methods(args: argparse.Namespace) -> int:
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


def _run(args: argparse.Namespace) -> int:
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


CELL_OPTIONS = (
    "method",
    "student",
    "teacher",
    "dataset",
    "seed",
    "teacher_seed",
    "recipe",
    "epochs",
    "teacher_epochs",
    "train_subset",
    "teacher_train_subset",
    "val_size",
    "test_subset",
    "label_noise",
    "imbalance_ratio",
    "hp",
    "variant",
)


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
    if not (args.method and args.student):
        raise KdbenchError("give --method and --student, or --cell ID (see kdbench grid --list)")
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
    from kdbench.data import DATASETS
    from kdbench.errors import check_choice

    check_choice("dataset", name, DATASETS)


def _grid(args: argparse.Namespace) -> int:
    from kdbench.grid import results_dir_for, run_grid
    from kdbench.profiles import all_cells, get_profile, validate

    profile = get_profile(args.grid or args.profile)
    validate(profile)
    cells = [dataclasses.replace(cfg, precision=args.precision) for cfg in all_cells(profile)]
    if args.list:
        for cfg in cells:
            print(cfg.cell_id(), cfg.method, "/".join(cfg.teachers), cfg.student, f"seed={cfg.seed}")
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


def _bench(args: argparse.Namespace) -> int:
    from kdbench.bench import bench, runnable_configs, write_perf
    from kdbench.env import resolve_device
    from kdbench.grid import results_dir_for
    from kdbench.profiles import get_profile
    from kdbench.timing import Settings

    profile = get_profile(args.grid or args.profile)
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


def _teachers_import(args: argparse.Namespace) -> int:
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


def _teachers_ship(args: argparse.Namespace) -> int:
    from kdbench.profiles import get_profile
    from kdbench.teacher_ship import ship_profile

    written = ship_profile(get_profile(args.profile), args.cache_dir, args.dest)
    for path in written:
        print(f"shipped {path}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from kdbench.grid import results_dir_for
    from kdbench.notebooks import portable, report
    from kdbench.profiles import get_profile

    profile = args.grid or args.profile
    results_dir = results_dir_for(get_profile(profile).name, args.results_dir).resolve()
    path = report(profile, results_dir)
    print(f"tables, figures and {portable(path)} rebuilt from {portable(results_dir / 'records')}")
    return 0


def _readme(args: argparse.Namespace) -> int:
    from kdbench import readme

    changed = readme.update(args.root)
    print("README.md updated" if changed else "README.md already up to date")
    return 0


# ---- options shared by several commands (run_all.py uses them too) ----------------------------------------------
def add_data_root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-root",
        metavar="DIR",
        help="dataset folder (default: $KDBENCH_DATA, else $KDBENCH_CACHE/data, else ~/.cache/kdbench/data)",
    )


def use_data_root(path: str | None) -> None:
    """Make `path` the dataset folder of everything this command starts: this process, pool workers, notebook
    kernels and Ray tasks all read $KDBENCH_DATA (Ray gets every KDBENCH_* variable)."""
    if path:
        os.environ["KDBENCH_DATA"] = str(Path(path).expanduser().resolve())


def add_retrain_teachers(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--retrain-teachers",
        action="store_true",
        help="train the teachers that ship inside the "
        "package instead of loading them (to reproduce them; the result is cached)",
    )


def use_retrain_teachers(flag: bool) -> None:
    """Pass --retrain-teachers to everything this command starts, as use_data_root does the dataset folder."""
    from kdbench.teachers import RETRAIN_ENV

    if flag:
        os.environ[RETRAIN_ENV] = "1"


def _add_common(p: argparse.ArgumentParser, results_default: str) -> None:
    p.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA when present), cpu, cuda or cuda:N (default: %(default)s)",
    )
    p.add_argument("--results-dir", metavar="DIR", help=f"where records go (default: {results_default})")
    p.add_argument(
        "--cache-dir", metavar="DIR", help="teacher cache (default: $KDBENCH_CACHE, else ~/.cache/kdbench)"
    )
    add_data_root(p)
    add_retrain_teachers(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_profile(p: argparse.ArgumentParser, what: str) -> None:
    from kdbench.profiles import EXPERIMENTS, PROFILES

    p.add_argument(
        "--profile",
        default="cpu",
        help=f"{', '.join([*PROFILES, *EXPERIMENTS])}: {what} (default: %(default)s)",
    )
    p.add_argument(
        "--grid",
        metavar="FILE.yaml",
        help="a grid YAML file with the profile fields, instead of "
        "--profile; its records go to results/<its name>",
    )


def _no_output_cache(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-output-cache",
        dest="share_outputs",
        action="store_false",
        help="compute every teacher output afresh instead of sharing them across cells",
    )


def _add_fast_paths(p: argparse.ArgumentParser) -> None:
    """--precision and --memory-format of a run (kdbench.fastpaths)."""
    p.add_argument(
        "--precision",
        default="fp32",
        help="fp32, or bf16: loss terms under bf16 autocast (part of the cell id) (default: %(default)s)",
    )
    add_memory_format(p)


def add_memory_format(p: argparse.ArgumentParser) -> None:
    """--memory-format of a run or grid (kdbench.fastpaths); run_all.py shares it."""
    p.add_argument(
        "--memory-format",
        default="auto",
        help="auto (the faster one, measured once per machine and "
        "cached), channels_last or contiguous; recorded in each record, not part of the cell id "
        "(default: %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    from kdbench.data import DATASETS
    from kdbench.engine import RECIPES
    from kdbench.executor import EXECUTORS
    from kdbench.methods import METHODS
    from kdbench.models import KDBENCH_MODELS

    parser = argparse.ArgumentParser(prog="kdbench", description="Knowledge-distillation benchmark suite.")
    parser.add_argument("--version", action="version", version=f"kdbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    models = f"{', '.join(sorted(KDBENCH_MODELS))}, or any timm model name"

    p = sub.add_parser("methods", help="list every registered method with its metadata")
    p.add_argument(
        "--format",
        choices=["table", "json"],
        default="table",
        help="table (fits 100 columns) or json (everything) (default: %(default)s)",
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help="each method's knowledge, reference, summary and hyperparameters",
    )
    p.set_defaults(func=_methods)

    p = sub.add_parser(
        "run", help="train one student with one method (or one grid cell) and write its record"
    )
    p.add_argument("--method", help=f"one of: {', '.join(sorted(METHODS))} (kdbench methods)")
    p.add_argument("--student", help=f"student architecture: {models}")
    p.add_argument(
        "--cell",
        metavar="ID",
        help="instead of the options below: the grid cell of --profile (or "
        "--grid) with this id, or the only one whose id starts so (kdbench grid --list shows them)",
    )
    _add_profile(p, "the profile whose cell --cell names")
    p.add_argument(
        "--teacher",
        action="append",
        default=[],
        help="teacher architecture (repeat or comma-separate for methods with several), as --student",
    )
    p.add_argument("--dataset", default="fashion-mnist", help=f"{', '.join(DATASETS)} (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="the student's seed (default: %(default)s)")
    p.add_argument(
        "--teacher-seed",
        type=int,
        default=0,
        help="the teachers' seed, shared by every student seed as in the grids (default: %(default)s)",
    )
    p.add_argument(
        "--recipe", default="cpu", help=f"training recipe: {', '.join(RECIPES)} (default: %(default)s)"
    )
    p.add_argument("--epochs", type=int, help="student epochs (default: the recipe's)")
    p.add_argument("--teacher-epochs", type=int, help="teacher epochs (default: the student's)")
    p.add_argument("--train-subset", type=int, metavar="N", help="train on N images (default: all)")
    p.add_argument(
        "--teacher-train-subset",
        type=int,
        metavar="N",
        help="the teachers' training images (default: the student's)",
    )
    p.add_argument(
        "--val-size",
        type=int,
        default=0,
        metavar="N",
        help="images held out of training for validation (default: %(default)s)",
    )
    p.add_argument(
        "--test-subset", type=int, metavar="N", help="a stratified N of the test set (default: all)"
    )
    p.add_argument(
        "--label-noise",
        type=float,
        default=0.0,
        metavar="RATE",
        help="symmetric label noise on the training split, teachers' included (default: %(default)s)",
    )
    p.add_argument(
        "--imbalance-ratio",
        type=float,
        default=1.0,
        metavar="R",
        help="long-tailed training split, largest over smallest class (default: %(default)s)",
    )
    p.add_argument(
        "--hp",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="method hyperparameter (repeatable); names and defaults: kdbench methods --verbose",
    )
    p.add_argument(
        "--variant",
        default="",
        help="the name of a control run of the method, as a grid's "
        "variants name them (part of the cell id; default: none)",
    )
    # the options that describe a cell, which --cell replaces: given beside it, they would be silently unused
    p.set_defaults(cell_defaults={name: p.get_default(name) for name in CELL_OPTIONS})
    _add_common(p, "results/local")
    p.set_defaults(results_dir="results/local")
    _no_output_cache(p)
    _add_fast_paths(p)
    p.set_defaults(func=_run)

    p = sub.add_parser("grid", help="run (or resume) every cell of a profile")
    _add_profile(p, "the grid to run")
    p.add_argument(
        "--executor",
        help=f"{', '.join(EXECUTORS)}: one cell after another (default), a pool on this "
        "machine, or Ray tasks on $RAY_ADDRESS's cluster (else a local Ray)",
    )
    p.add_argument(
        "--workers",
        type=int,
        help="jobs at once: the processes pool (default one per core) or Ray "
        "tasks in flight (default no cap); N > 1 without --executor means processes",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads per job; with ray also the CPUs each task asks for (default 1)",
    )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="run the cells whose record says they failed "
        "again (by default a finished cell, failed or not, is skipped)",
    )
    p.add_argument(
        "--rerun-stale",
        action="store_true",
        help="run the cells whose record was written by other "
        "code than the current again (by default they are kept, and counted as 'stale')",
    )
    p.add_argument("--list", action="store_true", help="print the cells and exit")
    _add_common(p, "results/<profile name>")
    _no_output_cache(p)
    _add_fast_paths(p)
    p.set_defaults(func=_grid)

    p = sub.add_parser("bench", help="time each method's training step against baseline and its ideal step")
    _add_profile(p, "its first pair, batch size and data")
    p.add_argument(
        "--methods",
        action="append",
        default=[],
        help="methods to time (repeat or comma-separate; default all of the profile's)",
    )
    p.add_argument(
        "--warmup", type=int, default=3, help="untimed calls of each timed thing (default: %(default)s)"
    )
    p.add_argument(
        "--repeats", type=int, default=5, help="timed passes; the median is reported (default: %(default)s)"
    )
    p.add_argument("--steps", type=int, default=5, help="fixed batches in one pass (default: %(default)s)")
    p.add_argument(
        "--no-cached",
        dest="cached",
        action="store_false",
        help="skip the rows with teacher outputs served from the shared cache",
    )
    p.add_argument(
        "--precision", help="time only fp32 or only bf16 (default: both, bf16 where the device has it)"
    )
    p.add_argument(
        "--memory-format",
        help="time only channels_last or only contiguous (default: fp32 in both, bf16 in channels_last)",
    )
    _add_common(p, "results/<profile name>; perf.md and perf.csv")
    p.set_defaults(func=_bench)

    p = sub.add_parser(
        "teachers",
        help="put teachers released by others into the teacher cache, or ship cached ones inside the package",
    )
    actions = p.add_subparsers(
        dest="action",
        required=True,
        metavar="ACTION",
        help="import: a CIFAR-100 teacher "
        "checkpoint of RepDistiller or mdistiller, for the paper profile; ship: a profile's "
        "cached teachers into kdbench/shipped_teachers",
    )
    _add_teachers_import(actions)
    _add_teachers_ship(actions)

    p = sub.add_parser(
        "report",
        help="rebuild a results folder's tables, figures and report.html (its executed notebooks on one page) "
        "from its records, without training",
    )
    _add_profile(p, "whose results to report")
    p.add_argument("--results-dir", metavar="DIR", help="the results folder (default: the profile's)")
    p.set_defaults(func=_report)

    p = sub.add_parser("readme", help="regenerate README.md's method, profile and Table 4 sections")
    p.add_argument(
        "--root", default=".", help="the checkout holding README.md and results/ (default: %(default)s)"
    )
    p.set_defaults(func=_readme)
    return parser


def _add_teachers_import(actions: argparse._SubParsersAction) -> None:
    from kdbench.teacher_import import PROFILE, SOURCES, supported_archs

    p = actions.add_parser(
        "import",
        help=f"map a released CIFAR-100 teacher onto a kdbench architecture, measure "
        f"it on the test set and cache it under the key the {PROFILE} profile gives it, so its "
        "runs skip training that teacher",
    )
    p.add_argument(
        "path",
        metavar="PATH",
        help="the checkpoint, e.g. RepDistiller's "
        "save/models/resnet56_vanilla/ckpt_epoch_240.pth (a dict with 'model', or a state dict)",
    )
    p.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="PROJECT",
        help=f"the project that released it: {', '.join(SOURCES)}",
    )
    p.add_argument(
        "--arch", required=True, help=f"the kdbench architecture it is: {', '.join(supported_archs())}"
    )
    p.add_argument(
        "--force", action="store_true", help="replace a teacher the cache already holds under that key"
    )
    p.add_argument(
        "--device",
        default="auto",
        help="where to compute its test logits: auto (CUDA when present), "
        "cpu, cuda or cuda:N (default: %(default)s)",
    )
    p.add_argument(
        "--cache-dir", metavar="DIR", help="teacher cache (default: $KDBENCH_CACHE, else ~/.cache/kdbench)"
    )
    add_data_root(p)
    p.set_defaults(func=_teachers_import)


def _add_teachers_ship(actions: argparse._SubParsersAction) -> None:
    from kdbench.teachers import SHIPPED_DIR

    p = actions.add_parser(
        "ship",
        help="export every teacher a profile needs from the teacher cache as safetensors "
        "with a checksummed JSON sidecar (key, meta, the command, code and machine that trained "
        "it), so the profile's cold start loads them instead of training them",
    )
    p.add_argument(
        "--profile", default="cpu", help="the profile whose teachers to ship (default: %(default)s)"
    )
    p.add_argument(
        "--dest",
        default=str(SHIPPED_DIR),
        metavar="DIR",
        help="where (default: the package's shipped_teachers folder)",
    )
    p.add_argument(
        "--cache-dir", metavar="DIR", help="teacher cache (default: $KDBENCH_CACHE, else ~/.cache/kdbench)"
    )
    p.set_defaults(func=_teachers_ship)


def _one_line_warnings(show: Callable[..., None]) -> Callable[..., None]:
    """A `warnings.showwarning` that prints kdbench's own warnings on one line, like its errors, and hands
    every other warning to `show`."""

    def showwarning(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, KdbenchWarning):
            print(f"kdbench: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Inside: kdbench's warnings print on one line (run_all.py uses it too)."""
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warnings(warnings.showwarning)
        yield


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with one_line_warnings():
        try:
            return args.func(args)
        except KdbenchError as exc:
            print(
                f"kdbench: error: {' '.join(str(exc).split())}", file=sys.stderr
            )  # one line, whatever it wraps
            return 2
        except KeyboardInterrupt:
            print(INTERRUPTED, file=sys.stderr)
            return 130
        except (
            BrokenPipeError
        ):  # `kdbench methods | head`: the reader left; say nothing more (Python's advice)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
