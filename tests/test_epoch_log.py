"""Per-epoch logging while a cell trains: the engine hands each epoch's mean loss terms to the log hook, the
runner's curve adds top-1, and the TensorBoard sink writes them (where the tensorboard package is installed)."""

from __future__ import annotations

import pytest

from kdbench.engine import RECIPES, fit
from kdbench.errors import KdbenchError
from kdbench.methods import get_method
from tests.conftest import make_setup


def test_log_hook_gets_each_epochs_mean_losses(fashion, tiny_stream):
    method = get_method("kd")(make_setup(fashion, tiny_stream, epochs=2))
    logged: list[tuple[int, dict[str, float]]] = []
    stats = fit(
        method, tiny_stream, RECIPES["cpu"], 2, progress=False, log_epoch=lambda e, m: logged.append((e, m))
    )
    assert logged == list(enumerate(stats.epoch_losses)) and set(logged[0][1]) == {"ce", "kd"}


def test_tensorboard_sink_writes_scalars_or_says_what_to_install(tmp_path, monkeypatch):
    from kdbench.epoch_log import TensorBoardSink

    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(KdbenchError, match=r'pip install -e "\.\[tensorboard\]"'):
            TensorBoardSink(tmp_path)
        return
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sink = TensorBoardSink(tmp_path)
    sink.scalars(0, {"loss/ce": 2.0, "top1/test_curve": 40.0})
    sink.scalars(1, {"loss/ce": 1.0, "top1/test_curve": 60.0})
    sink.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [e.value for e in events.Scalars("top1/test_curve")] == [40.0, 60.0]
