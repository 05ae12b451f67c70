"""The shared cache of teacher outputs: a stored output is served only for the very augmented view it was computed
on, equals a fresh forward pass bit for bit, and a run's record is the same with and without it."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from kdbench import teacher_outputs
from kdbench.cli_parser import build_parser
from kdbench.data import BatchStream
from kdbench.methods import get_method
from kdbench.models import create_model
from kdbench.results import comparable
from kdbench.runner import RunConfig, run
from kdbench.teacher_outputs import TeacherOutputCache, teacher_forward
from tests.conftest import TINY_TEACHER, make_setup


@pytest.fixture(autouse=True)
def empty_memory(monkeypatch):
    """Every test starts with nothing in the in-process LRU, so disk reads are really disk reads."""
    monkeypatch.setattr(teacher_outputs, "_MEMORY", teacher_outputs._Memory(teacher_outputs.MEMORY_BYTES))


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return create_model(TINY_TEACHER, 10, 1).eval()


def _counts(cache: TeacherOutputCache) -> dict[str, float]:
    return {k: cache.stats()[k] for k in ("hits", "misses")}


def first_batch(stream: BatchStream, epoch: int = 0):
    return next(iter(stream.epoch(epoch)))


def assert_same(a, b) -> None:
    assert torch.equal(a.logits, b.logits)
    assert len(a.stages) == len(b.stages) and all(
        torch.equal(s, t) for s, t in zip(a.stages, b.stages, strict=True)
    )
    assert (a.embedding is None) == (b.embedding is None)
    assert a.embedding is None or torch.equal(a.embedding, b.embedding)


@pytest.mark.parametrize("features", [False, True])
def test_cached_equals_fresh_from_memory_and_from_disk(teacher, tiny_stream, tmp_path, features):
    batch = first_batch(tiny_stream)
    fresh = teacher_forward(teacher, batch.x, features)
    cache = TeacherOutputCache(teacher, "t", tmp_path)
    assert_same(cache.outputs(batch, features), fresh)
    assert_same(cache.outputs(batch, features), fresh)
    assert _counts(cache) == {"hits": 1, "misses": 1}
    cache.flush()
    teacher_outputs._MEMORY.epochs.clear()
    other = TeacherOutputCache(teacher, "t", tmp_path)  # another cell, another process: from the file
    assert_same(other.outputs(batch, features), fresh)
    assert _counts(other) == {"hits": 1, "misses": 0}
    assert (tmp_path / "teacher_outputs" / "t" / cache.fingerprint / tiny_stream.digest / "e0.pt").exists()


def test_features_are_recomputed_for_an_entry_without_them(teacher, tiny_stream):
    batch = first_batch(tiny_stream)
    cache = TeacherOutputCache(teacher, "t")
    assert not cache.outputs(batch, False).stages
    assert_same(cache.outputs(batch, True), teacher_forward(teacher, batch.x, True))
    assert _counts(cache) == {"hits": 0, "misses": 2}
    assert_same(
        cache.outputs(batch, False), teacher_forward(teacher, batch.x, False)
    )  # logits only, as fresh
    assert cache.stats()["hits"] == 1


def test_other_epoch_seed_or_augmentation_is_another_view(teacher, fashion, tiny_stream):
    base = first_batch(tiny_stream)
    no_flip = dataclasses.replace(fashion.info, flip=False, crop_padding=0)
    others = [
        first_batch(tiny_stream, epoch=1),
        first_batch(BatchStream(fashion.x_train[:64], fashion.y_train[:64], fashion.info, 16, seed=1)),
        first_batch(BatchStream(fashion.x_train[:64], fashion.y_train[:64], no_flip, 16, seed=0)),
        first_batch(BatchStream(255 - fashion.x_train[:64], fashion.y_train[:64], fashion.info, 16, seed=0)),
        first_batch(tiny_stream.subset(torch.arange(64) < 48)),
    ]
    cache = TeacherOutputCache(teacher, "t")
    cached = cache.outputs(base, False)
    for batch in others:
        assert batch.view != base.view
        out = cache.outputs(batch, False)
        assert not torch.equal(out.logits, cached.logits)
        assert torch.equal(out.logits, teacher_forward(teacher, batch.x, False).logits)
    assert _counts(cache) == {"hits": 0, "misses": 1 + len(others)}


def test_same_stream_settings_give_the_same_views(fashion, tiny_stream):
    again = BatchStream(fashion.x_train[:64], fashion.y_train[:64], fashion.info, batch_size=16, seed=0)
    assert [b.view for b in again.epoch(2)] == [b.view for b in tiny_stream.epoch(2)]
    assert [b.view[1:] for b in tiny_stream.epoch(2)] == [(2, n) for n in range(len(tiny_stream))]


def test_a_batch_of_other_samples_under_a_stored_view_is_recomputed(teacher, fashion, tiny_stream):
    batch = first_batch(tiny_stream)
    other = BatchStream(
        fashion.x_train[64:128],
        fashion.y_train[64:128],
        fashion.info,
        16,
        seed=0,
        index=torch.arange(64, 128),
    )
    forged = dataclasses.replace(first_batch(other), view=batch.view)
    cache = TeacherOutputCache(teacher, "t")
    cache.outputs(batch, False)
    with pytest.warns(UserWarning, match="other samples"):
        out = cache.outputs(forged, False)
    assert torch.equal(out.logits, teacher_forward(teacher, forged.x, False).logits)
    assert _counts(cache) == {"hits": 0, "misses": 2}


def flip_a_byte(path, _folder) -> None:
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))


def put_other_epoch(path, folder) -> None:
    path.write_bytes((folder / "e1.pt").read_bytes())  # a valid file, under another epoch's name


@pytest.mark.parametrize("tamper", [flip_a_byte, put_other_epoch])
def test_corrupted_or_misplaced_files_are_ignored(teacher, tiny_stream, tmp_path, tamper):
    cache = TeacherOutputCache(teacher, "t", tmp_path)
    for epoch in (0, 1):
        cache.outputs(first_batch(tiny_stream, epoch), False)
    cache.flush()
    folder = tmp_path / "teacher_outputs" / "t" / cache.fingerprint / tiny_stream.digest
    tamper(folder / "e0.pt", folder)
    teacher_outputs._MEMORY.epochs.clear()
    batch = first_batch(tiny_stream, 0)
    again = TeacherOutputCache(teacher, "t", tmp_path)
    with pytest.warns(UserWarning, match="unusable"):
        assert torch.equal(
            again.outputs(batch, False).logits, teacher_forward(teacher, batch.x, False).logits
        )
    assert _counts(again) == {"hits": 0, "misses": 1}


def test_weights_other_than_the_stored_ones_are_a_miss(teacher, tiny_stream, tmp_path):
    batch = first_batch(tiny_stream)
    cache = TeacherOutputCache(teacher, "t", tmp_path)
    cache.outputs(batch, False)
    cache.flush()
    teacher_outputs._MEMORY.epochs.clear()
    torch.manual_seed(1)
    retrained = create_model(TINY_TEACHER, 10, 1).eval()
    other = TeacherOutputCache(retrained, "t", tmp_path)  # the same id, other weights: another file
    out = other.outputs(batch, False)
    assert torch.equal(out.logits, teacher_forward(retrained, batch.x, False).logits)
    assert _counts(other) == {"hits": 0, "misses": 1}
    other.flush()
    assert len(list((tmp_path / "teacher_outputs" / "t").iterdir())) == 2  # neither overwrote the other


def test_outputs_written_into_are_not_served_again(teacher, tiny_stream):
    batch = first_batch(tiny_stream)
    cache = TeacherOutputCache(teacher, "t")
    cache.outputs(batch, False).logits.mul_(0)
    with pytest.warns(UserWarning, match="wrote into"):
        out = cache.outputs(batch, False)
    assert torch.equal(out.logits, teacher_forward(teacher, batch.x, False).logits)


def test_stage_features_over_budget_are_computed_not_kept(teacher, tiny_stream):
    batches = list(tiny_stream.epoch(0))
    one_batch = sum(s.numel() * s.element_size() for s in teacher_forward(teacher, batches[0].x, True).stages)
    cache = TeacherOutputCache(teacher, "t", feature_budget_bytes=2 * one_batch)  # half an epoch of 4 batches
    for batch in batches * 2:
        assert_same(cache.outputs(batch, True), teacher_forward(teacher, batch.x, True))
    assert _counts(cache) == {"hits": 0, "misses": 8}
    for batch in batches:
        assert torch.equal(
            cache.outputs(batch, False).logits, teacher_forward(teacher, batch.x, False).logits
        )
    assert cache.stats()["hits"] == 4  # the logits were kept


def test_method_uses_the_cache_only_for_its_own_teacher_and_real_batches(fashion, tiny_stream):
    setup = make_setup(fashion, tiny_stream)
    cache = TeacherOutputCache(setup.teachers[0], "t")
    method = get_method("kd")(dataclasses.replace(setup, output_caches=[cache]))
    batch = first_batch(tiny_stream)
    for _ in range(2):
        method.teacher_outputs(batch)
    method.teacher_outputs(batch.x)  # raw inputs (synthetic images, for instance) are always computed
    assert _counts(cache) == {"hits": 1, "misses": 1}
    stranger = TeacherOutputCache(create_model(TINY_TEACHER, 10, 1).eval(), "t")
    method = get_method("kd")(dataclasses.replace(setup, output_caches=[stranger]))
    method.teacher_outputs(batch)
    assert _counts(stranger) == {"hits": 0, "misses": 0}


def test_cli_flag():
    args = build_parser().parse_args(["run", "--method", "kd", "--student", "s", "--no-output-cache"])
    assert args.share_outputs is False
    assert build_parser().parse_args(["grid"]).share_outputs is True


@pytest.mark.parametrize("method", ["kd", "fitnet"])
def test_records_are_the_same_with_and_without_shared_outputs(method, tmp_path):
    cfg = RunConfig(
        method=method,
        student="cifar_resnet8",
        teachers=("cifar_resnet14",),
        train_subset=128,
        test_subset=200,
        epochs=2,
        teacher_epochs=1,
    )

    def cell(name: str, share: bool) -> dict:
        teacher_outputs._MEMORY.epochs.clear()  # the next cell reads the files, as another process would
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # no unusable file, no mismatch along the way
            return run(
                cfg,
                device="cpu",
                results_dir=tmp_path / name,
                cache_dir=tmp_path / "cache",
                progress=False,
                latency_repeats=1,
                share_outputs=share,
            )

    fresh, first, second = cell("fresh", False), cell("first", True), cell("second", True)
    steps = 2  # 128 samples, batch 128, 2 epochs
    assert fresh["teacher_output_cache"] is None
    assert first["teacher_output_cache"] == {"hits": 0, "misses": steps, "saved_s": 0.0}
    hits, misses, saved = (second["teacher_output_cache"][k] for k in ("hits", "misses", "saved_s"))
    assert (hits, misses) == (steps, 0) and saved > 0  # the forward time the first cell measured, added back
    assert second["standalone_train_time_s"] == pytest.approx(second["train_time_s"] + saved)
    assert fresh["standalone_train_time_s"] == fresh["train_time_s"]
    assert comparable(first) == comparable(fresh) and comparable(second) == comparable(fresh)
    assert first["student_top1"] == fresh["student_top1"] and first["epoch_losses"] == fresh["epoch_losses"]
