"""Community teachers: the CIFAR-100 teachers that RepDistiller (HobbitLong/RepDistiller) and mdistiller
(megvii-research/mdistiller) released, mapped onto kdbench's architectures and put into the teacher cache under
the key the `paper` profile gives that teacher, so `paper` runs load it instead of training it
(`kdbench teachers import --from repdistiller|mdistiller PATH --arch ARCH`).

**The mapping is built from structure, not from a table of names.** Both projects define the CIFAR families
(`models/resnet.py`, `wrn.py`, `vgg.py`, `mobilenetv2.py`, `ShuffleNetv1.py`, `ShuffleNetv2.py`; mdistiller's
copies under `mdistiller/models/cifar/` hold the same parameters under the same names) with the same layers, in
the same order, as kdbench's, under other names (`downsample` / `shortcut`, `block1.layer.0` / `block1.0`,
`convShortcut` / `shortcut`, `classifier` or `linear` / `fc`, ShuffleNetV2's `conv1`...`bn5` / `left.*` and
`right.*`). A state dict lists its tensors in the order the modules were registered, so the checkpoint's
modules (the names before a tensor's last dot) are paired one to one, in order, with the kdbench model's, and
each pair must hold the same tensors (`weight`, `bias`, `running_mean`, ...) with the same shapes. The few
modules registered at another position are paired by explicit rename first (`ANCHORS`): every classifier
(kdbench's `fc` is registered before the body, theirs after it) and ShuffleNetV2's final 1x1 conv and its batch
norm (`conv2`, `bn2` / `conv_head.0`, `conv_head.1`). The pairing relies on the file keeping the registration
order, as a saved `state_dict()` does. Another architecture's checkpoint (a wrong `--arch`) or a CIFAR-10 one fails
with a one-line error; the converted state dict must load strictly.
`tests/test_teacher_import.py` re-implements each reference family's forward pass in its own naming and checks
that the converted kdbench model gives the same logits.

**Where the result goes.** `TeacherCache` (`--cache-dir`, default `$KDBENCH_CACHE` or `~/.cache/kdbench`), under
the key `kdbench.teacher_training.teacher_key` gives the architecture as the first teacher of a `paper` cell (CIFAR-100, the
`cifar` recipe, 240 teacher epochs, the whole training set, teacher seed 0), which is how the released teachers
were made: RepDistiller's `train_teacher.py` trains for 240 epochs on the whole training set with the `cifar`
recipe's settings (batch 64, lr 0.05 decayed x0.1 at epochs 150/180/210, momentum 0.9, weight decay 5e-4; lr 0.01
for MobileNetV2 and the ShuffleNets, none of which is a `paper` teacher). Cells that use the architecture as a
*second* teacher (`multiteacher`'s extra `cifar_wrn_40_2`, seed 100) have another key and still train their own:
giving it the same weights would make the two teachers of its `cifar_wrn_40_2` pair identical. An entry already
in the cache is replaced only with `--force`.

**The meta, and the data.** The runner reads a cached teacher's `meta["top1"]` (the records' `teacher_top1`),
`meta["test_logits"]` (the student-teacher `agreement`) and `meta["train_time_s"]` (`teacher_train_time_s`), and has
no way to compute them afterwards: an entry without them would break every cell that uses it. So the import
computes them, as the runner does for a teacher it trains (`prepare_data` and `kdbench.metrics` on the cell's
test set), and **fails with a one-line error, writing nothing, when CIFAR-100 cannot be loaded** (it is read
from the data root, `--data-root` or `$KDBENCH_DATA`, and downloaded by torchvision where a network allows, like
every kdbench run; a `paper` run needs it anyway). `train_time_s` is 0.0: kdbench spent no time training it.
`meta["imported_from"]` records where the weights came from: the project, its repository, the file's absolute
path and SHA-256, the reference architecture's name, the checkpoint's epoch and the accuracy it reports (when it
has them). (Not `meta["source"]`: the teacher cache uses that for teachers shipped inside the package.)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import io
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from kdbench import __version__, env, metrics
from kdbench.engine import get_recipe
from kdbench.errors import KdbenchError, KdbenchWarning, check_choice
from kdbench.models import KDBENCH_MODELS, create_model
from kdbench.prepare import prepare_data
from kdbench.results import ensure_writable
from kdbench.run_config import RunConfig, default_cache_dir
from kdbench.teacher_training import teacher_key
from kdbench.teachers import CachedTeacher, TeacherCache, TeacherKey

SOURCES = {"repdistiller": "HobbitLong/RepDistiller", "mdistiller": "megvii-research/mdistiller"}
PROFILE = "paper"  # whose teacher key the import uses
DATASET = "cifar100"  # what the released teachers were trained on
# Modules registered at another position than kdbench's, paired by name before the rest are paired in order:
# reference module -> kdbench module, per kdbench family (or architecture, which takes precedence).
ANCHORS: dict[str, dict[str, str]] = {
    "resnet": {"fc": "fc"},
    "wrn": {"fc": "fc"},
    "vgg": {"classifier": "fc"},
    "mobilenetv2": {"classifier.0": "fc"},
    "cifar_shufflenetv1": {"linear": "fc"},
    "cifar_shufflenetv2": {"linear": "fc", "conv2": "conv_head.0", "bn2": "conv_head.1"},
}
BN_COUNTER = "num_batches_tracked"  # absent from checkpoints saved by torch < 0.4.1; not used in eval mode
REPORTED_GAP = 1.0  # points of top-1 between the checkpoint's own accuracy and kdbench's that warn


def supported_archs() -> list[str]:
    return sorted(a for a, family in KDBENCH_MODELS.items() if a in ANCHORS or family in ANCHORS)


def reference_name(arch: str) -> str:
    """The architecture's name in the reference code (`resnet56`, `wrn_40_2`, `vgg13`, `MobileNetV2`, ...)."""
    special = {
        "cifar_mobilenetv2": "MobileNetV2",
        "cifar_shufflenetv1": "ShuffleV1",
        "cifar_shufflenetv2": "ShuffleV2",
    }
    return special.get(arch, arch.removeprefix("cifar_"))


def _anchors(arch: str) -> dict[str, str]:
    return ANCHORS.get(arch) or ANCHORS[KDBENCH_MODELS[arch]]


# ---- reading a checkpoint ---------------------------------------------------------------------------------------
@dataclass
class Checkpoint:
    """A released checkpoint: its state dict (in the reference naming) and what it says about itself."""

    state: dict[str, torch.Tensor]
    sha256: str
    container: str  # "dict['model']", "dict['state_dict']" or "state dict"
    epoch: int | None = None
    reported_top1: float | None = None


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Load `path` with `weights_only` (no code from the file runs; RepDistiller's `*_last.pth` also pickles its
    argparse options, which are allowed) and find its state dict: under 'model' (both projects' checkpoints),
    under 'state_dict', or the file itself (a raw state dict). A `module.` prefix (DataParallel) is dropped."""
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KdbenchError(f"cannot read checkpoint {path} ({exc.strerror or exc})") from None
    safe = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5; else the global allow-list
    try:
        if safe is not None:
            with safe([argparse.Namespace]):
                obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        else:
            torch.serialization.add_safe_globals([argparse.Namespace])
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, truncated, or pickled objects beyond tensors and plain data
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise KdbenchError(f"cannot load {path} as a PyTorch checkpoint of weights ({reason})") from None
    sha = hashlib.sha256(data).hexdigest()
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state, container, info = obj, "state dict", {}
    else:
        inner = next(
            (
                k
                for k in ("model", "state_dict")
                if isinstance(obj, Mapping) and isinstance(obj.get(k), Mapping)
            ),
            None,
        )
        if inner is None:
            keys = ", ".join(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
            raise KdbenchError(
                f"{path} holds neither a state dict nor a dict with one under 'model' (it holds: {keys})"
            )
        state, container, info = obj[inner], f"dict[{inner!r}]", obj
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise KdbenchError(f"{path}: its {container} is not a state dict (names to tensors)")
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return Checkpoint(
        dict(state),
        sha,
        container,
        epoch=_number(info.get("epoch"), int),
        reported_top1=_number(info.get("accuracy", info.get("best_acc")), float),
    )


def _number(value: Any, kind: type) -> Any:
    """`value` (a number or a one-element tensor, as RepDistiller stores its accuracy) as `kind`, else None."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    return kind(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# ---- the mapping --------------------------------------------------------------------------------------------------
def _modules(state: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """module name -> {tensor name: tensor}, modules in the order of their first tensor."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in state.items():
        module, _, leaf = name.rpartition(".")
        groups.setdefault(module, {})[leaf] = tensor
    return groups


def _shapes(tensors: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {leaf: tuple(t.shape) for leaf, t in tensors.items() if leaf != BN_COUNTER}


def module_mapping(
    state: Mapping[str, torch.Tensor],
    arch: str,
    target: nn.Module | None = None,
    source: str = "repdistiller",
) -> list[tuple[str, str]]:
    """(reference module, kdbench module) pairs that carry `state` (a `source` checkpoint's state dict for
    `arch`) onto kdbench's `arch` (`target`, or a fresh CIFAR-100 one): the anchors by name, the rest in order.
    Raises a one-line `KdbenchError` when the two do not have the same layers with the same shapes."""
    check_choice("architecture to import", arch, supported_archs())
    if target is None:
        target = create_model(arch, 100, 3)
    ref = f"{source} {reference_name(arch)}"
    hint = f"is it a {ref} checkpoint? (check --arch and --from)"
    src, dst = _modules(state), _modules(target.state_dict())
    pairs = []
    for a, b in _anchors(arch).items():
        if a not in src:
            raise KdbenchError(f"the checkpoint has no {a!r} layer, which a {ref} has; {hint}")
        pairs.append((a, b))
    anchored_src, anchored_dst = {a for a, _ in pairs}, {b for _, b in pairs}
    rest_src = [m for m in src if m not in anchored_src]
    rest_dst = [m for m in dst if m not in anchored_dst]
    if len(rest_src) != len(rest_dst):
        raise KdbenchError(
            f"the checkpoint has {len(rest_src) + len(pairs)} layers with weights where {arch} has "
            f"{len(rest_dst) + len(pairs)}; {hint}"
        )
    pairs += list(zip(rest_src, rest_dst, strict=True))
    order = {m: i for i, m in enumerate(src)}
    pairs.sort(
        key=lambda pair: order[pair[0]]
    )  # the checkpoint's order: the first misfit is the one reported
    for a, b in pairs:
        got, want = _shapes(src[a]), _shapes(dst[b])
        if got == want:
            continue
        if b == target_classifier(target) and got.get("weight", (0,))[1:] == want.get("weight", (0,))[1:]:
            raise KdbenchError(
                f"the checkpoint's classifier {a!r} has {got['weight'][0]} classes where {DATASET} has "
                f"{want['weight'][0]}: kdbench imports {DATASET} teachers only"
            )
        raise KdbenchError(
            f"the checkpoint's layer {a!r} ({_describe(got)}) does not fit {arch}'s {b!r} "
            f"({_describe(want)}); {hint}"
        )
    return pairs


def target_classifier(model: nn.Module) -> str:
    head = model.get_classifier()
    return next(name for name, module in model.named_modules() if module is head)


def _describe(shapes: Mapping[str, tuple[int, ...]]) -> str:
    return (
        ", ".join(f"{leaf} {'x'.join(map(str, s)) or 'scalar'}" for leaf, s in shapes.items()) or "no tensors"
    )


def convert(
    state: Mapping[str, torch.Tensor],
    arch: str,
    target: nn.Module | None = None,
    source: str = "repdistiller",
) -> dict[str, torch.Tensor]:
    """`state` (a reference state dict) renamed into kdbench's `arch`: every tensor of the kdbench model, none
    else. A batch norm's `num_batches_tracked` missing from an old checkpoint is taken as 0."""
    if target is None:
        target = create_model(arch, 100, 3)
    src, dst = _modules(state), _modules(target.state_dict())
    out: dict[str, torch.Tensor] = {}
    for a, b in module_mapping(state, arch, target, source):
        for leaf, like in dst[b].items():
            prefix = f"{b}." if b else ""
            out[prefix + leaf] = src[a][leaf] if leaf in src[a] else torch.zeros_like(like)
    return out


def load_teacher(path: str | Path, arch: str, source: str = "repdistiller") -> tuple[nn.Module, Checkpoint]:
    """kdbench's CIFAR-100 `arch` with the weights of the `source` checkpoint at `path`, loaded strictly, in eval
    mode; and the checkpoint."""
    check_choice("source", source, SOURCES)
    check_choice("architecture to import", arch, supported_archs())
    ckpt = read_checkpoint(path)
    model = create_model(arch, 100, 3)
    model.load_state_dict(convert(ckpt.state, arch, model, source), strict=True)
    return model.eval(), ckpt


# ---- the teacher cache ---------------------------------------------------------------------------------------------
def paper_cells() -> list[RunConfig]:
    from kdbench.profiles import all_cells, get_profile

    return all_cells(get_profile(PROFILE))


def _paper_cell(arch: str, cells: list[RunConfig]) -> RunConfig:
    """A paper cell with a teacher, `arch` in its teacher's place: what the runner's `teacher_key` and
    `prepare_data` read of it are the teacher's settings and data, the same in every such cell."""
    return dataclasses.replace(next(c for c in cells if c.teachers), teachers=(arch,))


def paper_teacher_key(arch: str, cells: list[RunConfig] | None = None) -> TeacherKey:
    """The key a `paper` cell gives `arch` as its first teacher (the runner's `teacher_key`)."""
    return teacher_key(_paper_cell(arch, paper_cells() if cells is None else cells), 0)


def other_keys(arch: str, key: TeacherKey, cells: list[RunConfig]) -> list[TeacherKey]:
    """Keys under which paper cells use `arch` as a teacher other than `key` (as a second teacher: seed + 100)."""
    found = {teacher_key(c, i) for c in cells for i, t in enumerate(c.teachers) if t == arch}
    return sorted(found - {key}, key=lambda k: k.seed)


@dataclass
class ImportResult:
    key: TeacherKey
    path: Path
    meta: dict[str, Any]
    other_keys: list[TeacherKey]


def import_teacher(
    source: str,
    path: str | Path,
    arch: str,
    cache_dir: str | Path | None = None,
    data_root: str | Path | None = None,
    device: str = "auto",
    force: bool = False,
) -> ImportResult:
    """Convert the `source` checkpoint at `path` onto `arch`, measure it on CIFAR-100's test set and store it in
    the teacher cache under its `paper` key (see the module docstring). Nothing is written when any step fails."""
    check_choice("source", source, SOURCES)
    check_choice("architecture to import", arch, supported_archs())
    dev = env.resolve_device(device)
    model, ckpt = load_teacher(path, arch, source)
    cells = paper_cells()
    key = paper_teacher_key(arch, cells)
    cache = TeacherCache(cache_dir or default_cache_dir())
    target, sidecar = cache.files(key)
    if not force and (target.exists() or sidecar.exists()):
        raise KdbenchError(
            f"the teacher cache already holds {arch} for the {PROFILE} profile ({target}); pass --force "
            "to replace it"
        )
    meta = {
        **_measure(model, arch, key, cells, dev, data_root),
        "imported_from": _provenance(source, path, arch, ckpt),
    }
    if ckpt.reported_top1 is not None and abs(ckpt.reported_top1 - meta["top1"]) > REPORTED_GAP:
        warnings.warn(
            f"{arch} from {path} reaches {meta['top1']:.2f}% top-1 on {DATASET}'s test set here but its "
            f"checkpoint reports {ckpt.reported_top1:.2f}%: check --arch and the data",
            KdbenchWarning,
            stacklevel=2,
        )
    ensure_writable(cache.root, "choose another teacher cache with --cache-dir or $KDBENCH_CACHE")
    if force:
        sidecar.unlink(missing_ok=True)  # the commit marker first: never a stale pair
        target.unlink(missing_ok=True)
    stored = _store(cache, key, model.cpu(), meta)
    if stored.from_cache:  # stored by a run while this import measured it (or found elsewhere by the cache)
        raise KdbenchError(
            f"the teacher cache already holds {arch} for the {PROFILE} profile ({target}, source: "
            f"{stored.meta.get('source', 'trained')}); pass --force to replace it"
        )
    return ImportResult(key, target, meta, other_keys(arch, key, cells))


def _store(cache: TeacherCache, key: TeacherKey, model: nn.Module, meta: dict[str, Any]) -> CachedTeacher:
    """Through the cache's own claim and atomic writes: as a teacher trained in no time."""
    return cache.get(key, build=lambda: model, train=lambda _model: meta)


def _measure(
    model: nn.Module,
    arch: str,
    key: TeacherKey,
    cells: list[RunConfig],
    dev: torch.device,
    data_root: str | Path | None,
) -> dict[str, Any]:
    """What the runner stores for a teacher it trains, measured as it measures it: top-1 and logits on the cell's
    test set, the number of training images; no training time."""
    cell = _paper_cell(arch, cells)
    try:
        prepared = prepare_data(cell, get_recipe(cell.recipe), dev, data_root, key.seed, for_teacher=True)
    except KdbenchError as exc:
        raise KdbenchError(
            f"the imported teacher's test accuracy and logits, which paper runs read from the cache, "
            f"need {DATASET}: {exc}"
        ) from None
    logits, labels = metrics.predict(model.to(dev), prepared.test)
    return {
        "top1": metrics.accuracy(logits, labels),
        "test_logits": logits,
        "train_time_s": 0.0,
        "train_images": prepared.train.num_samples,
    }


def _provenance(source: str, path: str | Path, arch: str, ckpt: Checkpoint) -> dict[str, Any]:
    return {
        "project": source,
        "repository": SOURCES[source],
        "file": str(Path(path).expanduser().resolve()),
        "sha256": ckpt.sha256,
        "container": ckpt.container,
        "reference_arch": reference_name(arch),
        "epoch": ckpt.epoch,
        "reported_top1": ckpt.reported_top1,
        "imported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "kdbench_version": __version__,
    }
