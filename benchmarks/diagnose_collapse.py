"""Why does a cell's student end at chance? Trains profile cells again (by hand, not by CI) and looks inside:

    python benchmarks/diagnose_collapse.py --profile zoo --methods baseline mlkd ab --seed 0 \
        --out results/design/collapse.md

For each method's cell (the profile's own config, first pair) it reports the training loss of the last epoch, the
test top-1 with batch norm in evaluation mode (its running statistics, as every record measures it) and in
training mode (each test batch's own statistics), the largest running variance and the count of non-finite values
in the batch-norm buffers, and the norm of the student's weights. A student whose batch-statistics top-1 is high
while its running-statistics top-1 is at chance learnt the task but carries unusable running statistics.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import pandas as pd
import torch
import torch.nn as nn

from kdbench import env, metrics
from kdbench.engine import fit, get_recipe
from kdbench.profiles import all_cells, get_profile
from kdbench.results import atomic_write_text
from kdbench.runner import build_method, default_cache_dir
from kdbench.teachers import TeacherCache


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def top1(model: nn.Module, stream, batch_statistics: bool) -> float:
    """Test top-1; with `batch_statistics`, each batch normalised by its own statistics (BN in training mode,
    running statistics left as they were)."""
    if not batch_statistics:
        return metrics.accuracy(*metrics.predict(model, stream))
    probe = copy.deepcopy(
        model
    ).train()  # a copy's running statistics absorb the test batches, not the model's
    with torch.no_grad():
        hits = sum(int((probe(b.x).argmax(1) == b.y).sum()) for b in stream.epoch(0))
    return 100.0 * hits / stream.num_samples


def diagnose(cfg, device: torch.device) -> dict:
    method, prepared, _ = build_method(cfg, device, TeacherCache(default_cache_dir()), progress=False)
    stats = fit(method, prepared.train, get_recipe(cfg.recipe), cfg.resolve()["epochs"], progress=False)
    student = method.deployable()
    bns = batch_norms(student)
    buffers = [t for bn in bns for t in (bn.running_mean, bn.running_var)]
    return {
        "method": cfg.method,
        "seed": cfg.seed,
        "last-epoch loss terms": ", ".join(f"{k} {v:.3g}" for k, v in stats.epoch_losses[-1].items()),
        "top-1, running statistics (%)": round(top1(student, prepared.test, False), 2),
        "top-1, batch statistics (%)": round(top1(student, prepared.test, True), 2),
        "largest running variance": f"{max(float(bn.running_var.max()) for bn in bns):.3g}",
        "non-finite BN values": int(sum((~torch.isfinite(t)).sum() for t in buffers)),
        "weight norm": round(
            float(torch.sqrt(sum(p.detach().pow(2).sum() for p in student.parameters()))), 1
        ),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="zoo")
    p.add_argument("--methods", nargs="+", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    profile = get_profile(args.profile)
    first = profile.pairs[0]
    cells = {
        c.method: c
        for c in all_cells(profile)
        if c.seed == args.seed
        and c.student == first.student
        and not c.variant
        and c.label_noise == 0
        and c.imbalance_ratio == 1
        and (not c.teachers or c.teachers[0] == first.teacher)
    }
    device = env.resolve_device("cpu")
    rows = [diagnose(cells[m], device) for m in args.methods]
    text = "\n".join(
        [
            f"# {args.out.stem}: measured with benchmarks/diagnose_collapse.py",
            "",
            f"The `{profile.name}` profile's cells on {first.teacher}→{first.student}, seed {args.seed}, trained "
            f"again on {env.cpu_model()} (fp32, contiguous). Top-1 on the full test set with batch norm in "
            "evaluation mode (its running statistics, as every record measures it) and in training mode (each "
            "test batch's own statistics); the batch-norm buffers' largest running variance and non-finite values; "
            "the norm of all the student's weights.",
            "",
            pd.DataFrame(rows).to_markdown(index=False),
        ]
    )
    atomic_write_text(args.out, text + "\n")
    print(text)


if __name__ == "__main__":
    main()
