"""The measurements behind the cpu profile's design, run by hand (not by CI): which short-schedule recipe, and
whether a teacher trained on the full training set gives the student something to learn at the profile's budget.

    python benchmarks/cpu_profile_design.py recipes  --out results/design/recipes.jsonl
    python benchmarks/cpu_profile_design.py kd       --out results/design/kd.jsonl --seeds 0 1 2 3 4
    python benchmarks/cpu_profile_design.py bf16     --out results/design/bf16.jsonl --seeds 0 1 2
    python benchmarks/cpu_profile_design.py deepinversion --out results/design/deepinversion.jsonl --epochs 10 \
        --seeds 0 1 --synthesis-steps 20 200
    python benchmarks/cpu_profile_design.py longer --out results/design/kd-mobilenetv2-30-epochs.jsonl \
        --teacher cifar_mobilenetv2 --epochs 30 --seeds 0 1
    python benchmarks/cpu_profile_design.py longer --out results/design/zoo-30-epochs.jsonl --method ab \
        --epochs 30 --seeds 0
    python benchmarks/cpu_profile_design.py longer --out results/design/crd-nce-k.jsonl --method crd \
        --epochs 10 --hp nce_k=1638 --seeds 0 1 2
    python benchmarks/cpu_profile_design.py report   --out results/design/kd.jsonl   # -> results/design/kd.md

Each run is an ordinary kdbench cell (kdbench.runner.run) whose record lands in a scratch results folder; one JSON
line per run is appended to --out, so a killed run resumes by skipping the lines already there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pandas as pd

from kdbench import engine, env, runner
from kdbench.methods import parse_hparams
from kdbench.results import atomic_write_text
from kdbench.stats import fmt, mean_ci

STUDENT, TEACHER = "cifar_resnet8", "cifar_resnet20"


def recipe_variants() -> dict[str, engine.Recipe]:
    """The short recipe with each augmentation, and the old step recipe, under names of their own."""
    short = engine.RECIPES["short"]
    return {
        f"short-{aug}": dataclasses.replace(short, name=f"short-{aug}", augment=aug)
        for aug in engine.AUGMENTATIONS
    } | {"cpu": engine.RECIPES["cpu"]}


def plan(study: str, args: argparse.Namespace) -> list[runner.RunConfig]:
    base = runner.RunConfig(
        method="baseline", student=STUDENT, train_subset=args.train_subset, epochs=args.epochs
    )
    if study == "recipes":
        return [
            dataclasses.replace(base, recipe=name, seed=s) for name in recipe_variants() for s in args.seeds
        ]
    kd = dataclasses.replace(
        base,
        method=args.method,
        hparams=parse_hparams(args.hp),
        teachers=(args.teacher,),
        teacher_seed=0,
        recipe=args.recipe,
        teacher_epochs=args.teacher_epochs,
        teacher_train_subset=args.teacher_train_subset,
    )
    cells = []
    for s in args.seeds:
        cells += [dataclasses.replace(base, recipe=args.recipe, seed=s), dataclasses.replace(kd, seed=s)]
    if study == "longer":  # is a method's shortfall against baseline at this budget the budget or the method?
        return cells
    if study == "deepinversion":  # is the data-free student's collapse the synthesis budget or the method?
        return [
            dataclasses.replace(kd, method="deepinversion", seed=s, hparams={"synthesis_steps": steps})
            for steps in args.synthesis_steps
            for s in args.seeds
        ]
    if study == "bf16":  # the same cells trained under bf16 autocast: does it hold accuracy and kd's boost?
        return cells + [dataclasses.replace(c, precision="bf16") for c in cells]
    # how close to convergence the budget leaves the student: baseline with 3x the epochs, on up to three seeds
    cells += [
        dataclasses.replace(base, recipe=args.recipe, seed=s, epochs=3 * args.epochs) for s in args.seeds[:3]
    ]
    return cells


def _teacher(g: pd.DataFrame) -> str:
    """The runs' teacher: its architecture, training images and top-1 (one teacher, shared by every seed)."""
    if g["teacher_top1"].isna().all():
        return "—"
    images = g["teacher_train_subset"].iloc[0]
    teacher = g["teacher"].iloc[0] if "teacher" in g else TEACHER
    return f"{teacher}, {int(images):,} images, {g['teacher_top1'].mean():.2f}%"


def _settings(hparams: dict | float | None) -> str:
    """A run's hyperparameters off their defaults, as `name=value` (empty for the defaults)."""
    return " ".join(f"{k}={v}" for k, v in sorted(hparams.items())) if isinstance(hparams, dict) else ""


def _collapses(g: pd.DataFrame) -> dict[str, str]:
    """For runs that record it: how many seeds ended collapsed (the record's chance-level flag, kdbench.stats.is_collapsed)."""
    if "collapsed" not in g or g["collapsed"].isna().all():
        return {}
    return {"collapsed": f"{int(g['collapsed'].fillna(False).sum())} of {len(g)}"}


def report(lines: Path) -> str:
    """The runs of a study as a markdown table: top-1 per recipe/method and epochs over seeds, and each method's
    boost over baseline of the same length, paired by seed."""
    df = pd.DataFrame([json.loads(line) for line in lines.read_text().splitlines()])
    out = [
        f"# {lines.stem}: measured with benchmarks/cpu_profile_design.py",
        "",
        f"Student {STUDENT}, bundled Fashion-MNIST, full 10,000-image test set, {env.cpu_model()}; "
        "top-1 of the last epoch, mean ± 95% CI over seeds (n = seeds).",
        "",
    ]
    rows = []
    df["precision"] = df["precision"].fillna("fp32") if "precision" in df else "fp32"
    df["settings"] = df["hparams"].map(_settings) if "hparams" in df else ""
    df["teacher"] = df["teacher"].fillna(TEACHER) if "teacher" in df else TEACHER
    keys = ["recipe", "precision", "method", "teacher", "settings", "epochs"]
    for (recipe, precision, method, _, settings, epochs), g in df.groupby(keys):
        rows.append(
            {
                "recipe": recipe,
                "precision": precision,
                "method": method,
                "settings": settings or "defaults",
                "train images": int(g["train_subset"].iloc[0]),
                "epochs": epochs,
                "teacher": _teacher(g),
                "top-1": fmt(*mean_ci(g["student_top1"])[:2]).lstrip("+"),
                "seeds": " ".join(map(str, g["seed"])),
                **_collapses(g),
            }
        )
    out.append(pd.DataFrame(rows).to_markdown(index=False))
    for (precision, method, settings), g in df[df["method"] != "baseline"].groupby(
        ["precision", "method", "settings"]
    ):
        ref = df[(df["method"] == "baseline") & (df["precision"] == precision)]
        for e in sorted(set(g["epochs"]) & set(ref["epochs"])):
            ours = g[g["epochs"] == e].set_index("seed")["student_top1"]
            boost = (ours - ref[ref["epochs"] == e].set_index("seed")["student_top1"]).dropna()
            if boost.empty:
                continue
            mean, half, n = mean_ci(boost)
            name = f"{method} ({settings})" if settings else method
            out += [
                "",
                f"{name} − baseline, paired by seed, {e} epochs, {precision}: **{fmt(mean, half)} points** "
                f"(n = {n}; per seed: " + ", ".join(f"{s}: {v:+.2f}" for s, v in boost.items()) + ")",
            ]
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study", choices=["recipes", "kd", "bf16", "deepinversion", "longer", "report"])
    p.add_argument("--teacher", default=TEACHER, help="the teacher of kd and deepinversion")
    p.add_argument("--method", default="kd", help="the distillation method of the kd and longer studies")
    p.add_argument(
        "--hp", action="append", default=[], help="its hyperparameters off their defaults: name=value"
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--train-subset", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--recipe", default="short")
    p.add_argument("--teacher-epochs", type=int, default=3)
    p.add_argument("--teacher-train-subset", type=int, default=60000)
    p.add_argument("--synthesis-steps", type=int, nargs="+", default=[20, 200])
    p.add_argument("--scratch", default="/tmp/kdbench-design")
    args = p.parse_args()
    if args.study == "report":
        atomic_write_text(args.out.with_suffix(".md"), report(args.out))
        return
    engine.RECIPES.update(recipe_variants())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = (
        {json.loads(line)["cell_id"] for line in args.out.read_text().splitlines()}
        if args.out.exists()
        else set()
    )
    for cfg in plan(args.study, args):
        if cfg.cell_id() in done:
            continue
        rec = runner.run(cfg, device="cpu", results_dir=args.scratch, progress=False)
        row = {
            k: rec.get(k)
            for k in (
                "cell_id",
                "method",
                "seed",
                "epochs",
                "student_top1",
                "teacher_top1",
                "curve_top1",
                "train_time_s",
                "collapsed",
            )
        }
        row.update(
            recipe=cfg.recipe,
            train_subset=cfg.train_subset,
            teacher_train_subset=cfg.teacher_train_subset,
            precision=cfg.precision,
            hparams=cfg.hparams,
            teacher=cfg.teachers[0] if cfg.teachers else None,
            synthesis=rec.get("extras", {}).get("final_synthesis_terms"),
        )
        with args.out.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
