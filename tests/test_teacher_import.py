"""Community teachers (`kdbench.teacher_import`): a RepDistiller or mdistiller CIFAR-100 checkpoint, converted
onto kdbench's architecture, gives the logits the reference network gives; it lands in the teacher cache under the
key a `paper` cell asks for; bad input is one line.

The released checkpoints cannot be downloaded here, so each reference family is re-implemented below, minimally:
the layers under the names and in the registration order of RepDistiller's models/resnet.py, wrn.py, vgg.py,
mobilenetv2.py, ShuffleNetv1.py and ShuffleNetv2.py (mdistiller's models/cifar/ copies hold the same parameters
under the same names), and their forward passes. Their state dicts, saved as those projects save them, are what
the import reads."""

from __future__ import annotations

import argparse
import hashlib

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench import prepare
from kdbench.cli import main
from kdbench.cli_parser import build_parser
from kdbench.data import DATASETS, TensorData
from kdbench.errors import KdbenchError
from kdbench.teacher_import import (
    load_teacher,
    module_mapping,
    paper_cells,
    paper_teacher_key,
    read_checkpoint,
    supported_archs,
)
from kdbench.teacher_training import get_teacher, teacher_key
from kdbench.teachers import TeacherCache

CLASSES = 100


# ---- the reference layouts ----------------------------------------------------------------------------------------
def conv3(cin: int, cout: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=bias)


class ResBlock(nn.Module):  # RepDistiller resnet.py BasicBlock: conv1 bn1 conv2 bn2 downsample
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = conv3(cin, cout, stride), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = conv3(cout, cout), nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class RefResNet(nn.Module):  # conv1 bn1 layer1..3 fc; AvgPool2d(8)
    def __init__(self, depth, widths=(16, 16, 32, 64)):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1, self.bn1 = conv3(3, widths[0]), nn.BatchNorm2d(widths[0])
        cin = widths[0]
        for i, w in enumerate(widths[1:]):
            blocks = [
                ResBlock(cin if j == 0 else w, w, (1 if i == 0 else 2) if j == 0 else 1) for j in range(n)
            ]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = w
        self.fc = nn.Linear(widths[3], CLASSES)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(F.relu(self.bn1(self.conv1(x))))))
        return self.fc(F.avg_pool2d(x, 8).flatten(1))


class WrnBlock(nn.Module):  # wrn.py BasicBlock: bn1 conv1 bn2 conv2 convShortcut (when the width changes)
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), conv3(cin, cout, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), conv3(cout, cout)
        self.equal = cin == cout
        self.convShortcut = None if self.equal else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        pre = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(pre))))
        return out + (x if self.equal else self.convShortcut(pre))


class WrnStage(nn.Module):  # NetworkBlock: its blocks under .layer
    def __init__(self, n, cin, cout, stride):
        super().__init__()
        self.layer = nn.Sequential(
            *[WrnBlock(cin if j == 0 else cout, cout, stride if j == 0 else 1) for j in range(n)]
        )

    def forward(self, x):
        return self.layer(x)


class RefWRN(nn.Module):  # conv1 block1..3 bn1 fc
    def __init__(self, depth, widen):
        super().__init__()
        n, w = (depth - 4) // 6, (16, 16 * widen, 32 * widen, 64 * widen)
        self.conv1 = conv3(3, 16)
        self.block1, self.block2, self.block3 = (
            WrnStage(n, w[i], w[i + 1], 1 if i == 0 else 2) for i in range(3)
        )
        self.bn1 = nn.BatchNorm2d(w[3])
        self.fc = nn.Linear(w[3], CLASSES)

    def forward(self, x):
        x = F.relu(self.bn1(self.block3(self.block2(self.block1(self.conv1(x))))))
        return self.fc(F.avg_pool2d(x, 8).flatten(1))


class RefVGG(nn.Module):  # vgg.py: block0..4 (conv-bn-relu, the last relu dropped), pools, classifier
    def __init__(self, cfg):
        super().__init__()
        cin = 3
        for i, widths in enumerate(cfg):
            layers = []
            for w in widths:
                layers += [conv3(cin, w, bias=True), nn.BatchNorm2d(w), nn.ReLU()]
                cin = w
            setattr(self, f"block{i}", nn.Sequential(*layers[:-1]))
        self.classifier = nn.Linear(512, CLASSES)

    def forward(self, x):
        for i in range(5):
            x = F.relu(getattr(self, f"block{i}")(x))
            x = F.max_pool2d(x, 2) if i < 3 else x  # pool3 only for 64x64 inputs
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


def conv_bn_relu(cin, cout, kernel, stride=1, groups=1):
    return [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    ]


class InvRes(nn.Module):  # mobilenetv2.py InvertedResidual: .conv, 8 layers
    def __init__(self, cin, cout, stride, t):
        super().__init__()
        h = cin * t
        self.res = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            *conv_bn_relu(cin, h, 1),
            *conv_bn_relu(h, h, 3, stride, h),
            nn.Conv2d(h, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x):
        return x + self.conv(x) if self.res else self.conv(x)


class RefMobileNetV2(nn.Module):  # mobile_half: conv1, blocks (ModuleList), conv2, classifier (Sequential)
    def __init__(self, t=6, width=0.5):
        super().__init__()
        cin = int(32 * width)
        self.conv1 = nn.Sequential(*conv_bn_relu(3, cin, 3, 2))
        self.blocks = nn.ModuleList()
        for tt, c, n, s in (
            (1, 16, 1, 1),
            (t, 24, 2, 1),
            (t, 32, 3, 2),
            (t, 64, 4, 2),
            (t, 96, 3, 1),
            (t, 160, 3, 2),
            (t, 320, 1, 1),
        ):
            stage = []
            for j in range(n):
                stage.append(InvRes(cin, int(c * width), s if j == 0 else 1, tt))
                cin = int(c * width)
            self.blocks.append(nn.Sequential(*stage))
        self.conv2 = nn.Sequential(*conv_bn_relu(cin, 1280, 1))
        self.classifier = nn.Sequential(nn.Linear(1280, CLASSES))

    def forward(self, x):
        x = self.conv1(x)
        for stage in self.blocks:
            x = stage(x)
        return self.classifier(F.avg_pool2d(self.conv2(x), 2, ceil_mode=True).flatten(1))


def shuffle(x, g):
    n, c, h, w = x.shape
    return x.reshape(n, g, c // g, h, w).permute(0, 2, 1, 3, 4).reshape(n, c, h, w)


class V1Bottleneck(nn.Module):  # ShuffleNetv1.py Bottleneck: conv1 bn1 conv2 bn2 conv3 bn3
    def __init__(self, cin, cout, stride, groups):
        super().__init__()
        mid, self.g, self.stride = cout // 4, 1 if cin == 24 else groups, stride
        self.conv1, self.bn1 = nn.Conv2d(cin, mid, 1, groups=self.g, bias=False), nn.BatchNorm2d(mid)
        self.conv2, self.bn2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = nn.Conv2d(mid, cout, 1, groups=groups, bias=False), nn.BatchNorm2d(cout)

    def forward(self, x):
        out = shuffle(F.relu(self.bn1(self.conv1(x))), self.g)
        out = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(out)))))
        return F.relu(torch.cat([out, F.avg_pool2d(x, 3, 2, 1)], 1) if self.stride == 2 else out + x)


class RefShuffleV1(nn.Module):  # conv1 bn1 layer1..3 linear
    def __init__(self, widths=(240, 480, 960), depths=(4, 8, 4), groups=3):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 24, 1, bias=False), nn.BatchNorm2d(24)
        cin = 24
        for i, (w, d) in enumerate(zip(widths, depths, strict=True)):
            units = []
            for j in range(d):
                units.append(V1Bottleneck(cin, w - (cin if j == 0 else 0), 2 if j == 0 else 1, groups))
                cin = w
            setattr(self, f"layer{i + 1}", nn.Sequential(*units))
        self.linear = nn.Linear(widths[-1], CLASSES)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(F.relu(self.bn1(self.conv1(x))))))
        return self.linear(F.avg_pool2d(x, 4).flatten(1))


class V2Basic(nn.Module):  # ShuffleNetv2.py BasicBlock: conv1 bn1 conv2 bn2 conv3 bn3 on the second half
    def __init__(self, c):
        super().__init__()
        c //= 2
        self.conv1, self.bn1 = nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False), nn.BatchNorm2d(c)
        self.conv3, self.bn3 = nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        x1, x2 = x[:, : x.shape[1] // 2], x[:, x.shape[1] // 2 :]
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x2)))))
        return shuffle(torch.cat([x1, F.relu(self.bn3(self.conv3(out)))], 1), 2)


class V2Down(nn.Module):  # DownBlock: conv1 bn1 conv2 bn2 (left), conv3 bn3 conv4 bn4 conv5 bn5 (right)
    def __init__(self, cin, cout):
        super().__init__()
        mid = cout // 2
        self.conv1, self.bn1 = nn.Conv2d(cin, cin, 3, 2, 1, groups=cin, bias=False), nn.BatchNorm2d(cin)
        self.conv2, self.bn2 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv4, self.bn4 = nn.Conv2d(mid, mid, 3, 2, 1, groups=mid, bias=False), nn.BatchNorm2d(mid)
        self.conv5, self.bn5 = nn.Conv2d(mid, mid, 1, bias=False), nn.BatchNorm2d(mid)

    def forward(self, x):
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = self.bn4(self.conv4(F.relu(self.bn3(self.conv3(x)))))
        return shuffle(torch.cat([left, F.relu(self.bn5(self.conv5(right)))], 1), 2)


class RefShuffleV2(nn.Module):  # conv1 bn1 layer1..3 conv2 bn2 linear
    def __init__(self, widths=(116, 232, 464, 1024), depths=(3, 7, 3)):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 24, 1, bias=False), nn.BatchNorm2d(24)
        cin = 24
        for i, (w, d) in enumerate(zip(widths, depths, strict=False)):
            setattr(self, f"layer{i + 1}", nn.Sequential(V2Down(cin, w), *[V2Basic(w) for _ in range(d)]))
            cin = w
        self.conv2, self.bn2 = nn.Conv2d(cin, widths[3], 1, bias=False), nn.BatchNorm2d(widths[3])
        self.linear = nn.Linear(widths[3], CLASSES)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(F.relu(self.bn1(self.conv1(x))))))
        return self.linear(F.avg_pool2d(F.relu(self.bn2(self.conv2(x))), 4).flatten(1))


REFERENCES = {
    "cifar_resnet20": lambda: RefResNet(20),
    "cifar_resnet8x4": lambda: RefResNet(8, (32, 64, 128, 256)),
    "cifar_wrn_16_2": lambda: RefWRN(16, 2),
    "cifar_wrn_40_2": lambda: RefWRN(40, 2),
    "cifar_vgg8": lambda: RefVGG(((64,), (128,), (256,), (512,), (512,))),
    "cifar_vgg13": lambda: RefVGG(((64, 64), (128, 128), (256, 256), (512, 512), (512, 512))),
    "cifar_mobilenetv2": RefMobileNetV2,
    "cifar_shufflenetv1": RefShuffleV1,
    "cifar_shufflenetv2": RefShuffleV2,
}


def reference(arch: str, seed: int = 0) -> nn.Module:
    """A reference-layout network with random weights, random batch-norm affines and running statistics taken on
    random images, so that activations keep their scale through the depth and a tensor mapped onto the wrong
    layer shows in the logits; in eval mode."""
    torch.manual_seed(seed)
    model = REFERENCES[arch]()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        for m in bns:
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0, 0.2)
            m.reset_running_stats()
            m.momentum = None  # a plain average over the calibration batch
        model.train()(torch.randn(8, 3, 32, 32))
    for m in bns:
        m.momentum = 0.1
    return model.eval()


def save_repdistiller(model: nn.Module, path, **extra) -> None:
    """As RepDistiller's train_teacher.py saves ckpt_epoch_240.pth (mdistiller's cifar_teachers are these files)."""
    sgd = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    state = {
        "epoch": 240,
        "model": model.state_dict(),
        "accuracy": torch.tensor(72.34),
        "optimizer": sgd.state_dict(),
    }
    torch.save({**state, **extra}, path)


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


# ---- the mapping --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", list(REFERENCES))
def test_converted_teacher_gives_the_reference_logits(arch, tmp_path):
    ref = reference(arch)
    path = tmp_path / "ckpt_epoch_240.pth"
    save_repdistiller(ref, path)
    model, ckpt = load_teacher(path, arch, "repdistiller")  # loads strictly
    assert ckpt.epoch == 240 and ckpt.reported_top1 == pytest.approx(72.34, abs=1e-4)
    assert ckpt.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    expected = logits(ref, x)
    assert expected.std() > 0.1  # the comparison below means something
    torch.testing.assert_close(logits(model, x), expected, atol=1e-5, rtol=0)


def test_the_mapping_pairs_the_renamed_layers():
    pairs = dict(module_mapping(reference("cifar_resnet20").state_dict(), "cifar_resnet20"))
    assert pairs["layer2.0.downsample.0"] == "layer2.0.shortcut.0" and pairs["fc"] == "fc"
    pairs = dict(module_mapping(reference("cifar_wrn_16_2").state_dict(), "cifar_wrn_16_2"))
    assert pairs["block2.layer.0.convShortcut"] == "block2.0.shortcut" and pairs["bn1"] == "bn_out"
    pairs = dict(module_mapping(reference("cifar_shufflenetv2").state_dict(), "cifar_shufflenetv2"))
    assert pairs["layer1.0.conv4"] == "layer1.0.right.3" and pairs["layer2.1.bn3"] == "layer2.1.branch.6"
    assert pairs["conv2"] == "conv_head.0" and pairs["linear"] == "fc"
    assert set(supported_archs()) >= set(REFERENCES) | {"cifar_resnet56", "cifar_resnet110", "cifar_wrn_40_2"}


def test_mdistiller_raw_state_dict_legacy_format_and_prefixes(tmp_path):
    """mdistiller also loads raw state dicts; an old torch's (non-zip) file, a DataParallel `module.` prefix, a
    checkpoint from before batch norms counted batches, and RepDistiller's `*_last.pth` (which pickles its
    argparse options) all load."""
    ref = reference("cifar_resnet20")
    state = {f"module.{k}": v for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}
    raw = tmp_path / "raw.pth"
    torch.save(state, raw, _use_new_zipfile_serialization=False)
    model, ckpt = load_teacher(raw, "cifar_resnet20", "mdistiller")
    assert ckpt.container == "state dict" and ckpt.epoch is None and ckpt.reported_top1 is None
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(logits(model, x), logits(ref, x), atol=1e-5, rtol=0)

    last = tmp_path / "resnet20_last.pth"
    torch.save({"opt": argparse.Namespace(model="resnet20", epochs=240), "model": ref.state_dict()}, last)
    assert read_checkpoint(last).container == "dict['model']"


@pytest.mark.parametrize(
    "arch, build, message",
    [
        ("cifar_resnet32", lambda: RefResNet(20), "layers with weights where cifar_resnet32 has"),
        ("cifar_wrn_16_1", lambda: RefWRN(16, 2), "layers with weights where cifar_wrn_16_1 has"),
        (
            "cifar_resnet20",
            lambda: RefResNet(20, (32, 32, 64, 128)),
            "layer 'conv1' (weight 32x3x3x3) does not fit cifar_resnet20's 'conv1' (weight 16x3x3x3)",
        ),
        (
            "cifar_vgg13",
            lambda: RefResNet(20),
            "the checkpoint has no 'classifier' layer, which a repdistiller vgg13 has",
        ),
    ],
)
def test_another_architecture_is_a_one_line_error(arch, build, message, tmp_path):
    path = tmp_path / "ckpt.pth"
    save_repdistiller(build(), path)
    with pytest.raises(KdbenchError, match="check --arch") as caught:
        load_teacher(path, arch)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_cifar10_checkpoint_names_the_classes(tmp_path):
    ref = RefResNet(20)
    ref.fc = nn.Linear(64, 10)
    path = tmp_path / "ckpt.pth"
    save_repdistiller(ref, path)
    with pytest.raises(KdbenchError, match="'fc' has 10 classes where cifar100 has 100"):
        load_teacher(path, "cifar_resnet20")


# ---- the cache, through the CLI -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cells():
    return paper_cells()


def test_the_key_is_the_one_paper_cells_ask_for(cells):
    for arch in ("cifar_resnet56", "cifar_wrn_40_2", "cifar_vgg13", "cifar_resnet32x4"):
        key = paper_teacher_key(arch, cells)
        asked = {teacher_key(c, 0) for c in cells if c.teachers and c.teachers[0] == arch}
        assert asked == {key}
        assert (key.dataset, key.epochs, key.train_subset, key.seed) == ("cifar100", 240, None, 0)


@pytest.fixture
def fake_cifar100(monkeypatch):
    """A tiny CIFAR-100 stand-in where the runner loads its data (the real one is not downloaded in tests)."""
    gen = torch.Generator().manual_seed(0)
    data = TensorData(
        DATASETS["cifar100"],
        torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=gen),
        torch.arange(64) % 100,
        torch.randint(0, 256, (50, 3, 32, 32), dtype=torch.uint8, generator=gen),
        torch.arange(50) % 100,
    )
    monkeypatch.setattr(prepare, "_dataset", lambda name, root: data)
    return data


def import_cli(path, arch, cache, *more):
    return main(
        [
            "teachers",
            "import",
            "--from",
            "repdistiller",
            str(path),
            "--arch",
            arch,
            "--cache-dir",
            str(cache),
            "--device",
            "cpu",
            *more,
        ]
    )


def test_import_then_paper_runs_load_it(cells, fake_cifar100, tmp_path, capsys):
    arch = "cifar_wrn_40_2"
    ref = reference(arch)
    path, cache = tmp_path / "wrn_40_2_vanilla" / "ckpt_epoch_240.pth", tmp_path / "cache"
    path.parent.mkdir()
    save_repdistiller(ref, path)
    assert import_cli(path, arch, cache) == 0
    out, err = capsys.readouterr()
    assert "teacher stored at" in out and "as a further teacher (seed 100) still train their own" in out
    assert "but its checkpoint reports 72.34%: check --arch and the data" in err  # random weights, fake data

    cell = next(c for c in cells if c.teachers and c.teachers[0] == arch)
    teacher = get_teacher(cell, 0, torch.device("cpu"), TeacherCache(cache), progress=False)
    assert teacher.from_cache  # the run trains nothing
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(logits(teacher.model, x), logits(ref, x), atol=1e-5, rtol=0)
    meta = teacher.meta
    assert (
        meta["test_logits"].shape == (50, 100) and meta["train_time_s"] == 0.0 and meta["train_images"] == 64
    )
    assert 0 <= meta["top1"] <= 100
    source = meta["imported_from"]
    assert source["project"] == "repdistiller" and source["repository"] == "HobbitLong/RepDistiller"
    assert source["file"] == str(path.resolve()) and source["reference_arch"] == "wrn_40_2"
    assert source["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and source["epoch"] == 240

    assert import_cli(path, arch, cache) == 2  # already there
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("kdbench: error: the teacher cache already holds cifar_wrn_40_2") and "--force" in err
    )
    assert import_cli(path, arch, cache, "--force") == 0


def test_without_the_data_nothing_is_written(cells, monkeypatch, tmp_path, capsys):
    def missing(name, root):
        raise KdbenchError(f"dataset {name!r} is not in /nowhere and could not be downloaded (URLError)")

    monkeypatch.setattr(prepare, "_dataset", missing)
    path, cache = tmp_path / "ckpt.pth", tmp_path / "cache"
    save_repdistiller(reference("cifar_vgg8"), path)
    assert import_cli(path, "cifar_vgg8", cache) == 2
    err = capsys.readouterr().err.splitlines()
    assert (
        len(err) == 1
        and "paper runs read from the cache, need cifar100: dataset 'cifar100' is not in" in err[0]
    )
    assert not cache.exists() or not any(p.is_file() for p in cache.rglob("*"))


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--from", "torchdistill", "x.pth", "--arch", "cifar_resnet56"],
            "unknown source 'torchdistill'; valid choices: mdistiller, repdistiller",
        ),
        (
            ["--from", "repdistiller", "x.pth", "--arch", "resnet18"],
            "unknown architecture to import 'resnet18'; valid choices: cifar_mobilenetv2, cifar_resnet110, ",
        ),
        (
            ["--from", "mdistiller", "missing.pth", "--arch", "cifar_resnet56"],
            "cannot read checkpoint missing.pth",
        ),
    ],
)
def test_bad_input_is_one_line(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["teachers", "import", *argv, "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "cache").exists()


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(KdbenchError, match="cannot load .* as a PyTorch checkpoint of weights"):
        read_checkpoint(path)
    torch.save({"epoch": 3, "weights": [1, 2]}, path)
    with pytest.raises(
        KdbenchError,
        match=r"holds neither a state dict nor a dict with one under 'model' \(it holds: "
        r"epoch, weights\)",
    ):
        read_checkpoint(path)


def test_every_option_has_help_with_its_choices():
    top = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    teachers = top.choices["teachers"]
    actions = next(a for a in teachers._actions if isinstance(a, argparse._SubParsersAction))
    parser = actions.choices["import"]
    assert all(a.help for p in (teachers, parser) for a in p._actions)
    helps = {o: a.help for a in parser._actions for o in a.option_strings}
    assert "repdistiller" in helps["--from"] and "mdistiller" in helps["--from"]
    assert all(arch in helps["--arch"] for arch in supported_archs())
