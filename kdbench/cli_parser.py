"""The `kdbench` command line's argparse parser (`build_parser`): every subcommand with its options, each bound to
the function in `kdbench.cli_commands` that carries it out. The options several commands share are built by
one function each (those run_all.py shares too are `kdbench.cli_options`').
"""

from __future__ import annotations

import argparse

from kdbench import __version__
from kdbench.cli_commands import (
    bench_command,
    grid_command,
    methods_command,
    readme_command,
    report_command,
    run_command,
    teachers_import_command,
    teachers_ship_command,
)
from kdbench.cli_options import add_data_root, add_executor_options, add_memory_format, add_retrain_teachers

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


def _add_dataset_override(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset",
        metavar="NAME",
        help="run the profile on this dataset instead of its own (e.g. synthetic:cifar100: no files needed); "
        "its records go to results/<profile>-<dataset>",
    )


def _no_output_cache(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-output-cache",
        dest="share_outputs",
        action="store_false",
        help="compute every teacher output afresh instead of sharing them across cells",
    )


def _add_fast_paths(p: argparse.ArgumentParser) -> None:
    """--precision, --memory-format and the speed options of a run (kdbench.fastpaths)."""
    p.add_argument(
        "--precision",
        default="fp32",
        help="fp32; bf16: loss terms under bf16 autocast; fp16 (CUDA): under fp16 autocast with a gradient "
        "scaler (part of the cell id) (default: %(default)s)",
    )
    add_memory_format(p)
    p.add_argument(
        "--compile",
        dest="compile_models",
        action="store_true",
        help="torch.compile the student and the teachers (recorded, not in the cell id)",
    )
    p.add_argument(
        "--cudnn-benchmark",
        action="store_true",
        help="let cuDNN autotune its convolutions on a GPU (recorded, not in the cell id)",
    )
    p.add_argument(
        "--tensorboard",
        metavar="DIR",
        help='also log each epoch\'s losses and top-1 as TensorBoard scalars under DIR/<cell id> (pip install -e ".[tensorboard]")',
    )


def build_parser() -> argparse.ArgumentParser:
    from kdbench.data import DATASETS
    from kdbench.engine import RECIPES
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
    p.set_defaults(func=methods_command)

    p = sub.add_parser(
        "run", help="train one student with one method (or one grid cell) and write its record"
    )
    p.add_argument(
        "--method",
        default="kd",
        help=f"one of: {', '.join(sorted(METHODS))} (kdbench methods; default: kd, Hinton et al.'s)",
    )
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
    p.add_argument(
        "--dataset",
        default="fashion-mnist",
        help=f"{', '.join(DATASETS)}, or synthetic:<one of them> (its shape, images made from a seed: no files "
        "needed) (default: %(default)s)",
    )
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
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        metavar="N",
        help="save the training state every N epochs; run the same command again after a kill to resume from it "
        "(default: none; a profile's cells use the profile's checkpoint_every)",
    )
    _add_fast_paths(p)
    p.set_defaults(func=run_command)

    p = sub.add_parser("grid", help="run (or resume) every cell of a profile")
    _add_profile(p, "the grid to run")
    _add_dataset_override(p)
    add_executor_options(p)
    p.add_argument("--list", action="store_true", help="print the cells and exit")
    _add_common(p, "results/<profile name>")
    _no_output_cache(p)
    _add_fast_paths(p)
    p.set_defaults(func=grid_command)

    p = sub.add_parser("bench", help="time each method's training step against baseline and its ideal step")
    _add_profile(p, "its first pair, batch size and data")
    _add_dataset_override(p)
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
    p.set_defaults(func=bench_command)

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
    p.set_defaults(func=report_command)

    p = sub.add_parser("readme", help="regenerate README.md's method, profile and Table 4 sections")
    p.add_argument(
        "--root", default=".", help="the checkout holding README.md and results/ (default: %(default)s)"
    )
    p.set_defaults(func=readme_command)
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
    p.set_defaults(func=teachers_import_command)


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
    p.set_defaults(func=teachers_ship_command)
