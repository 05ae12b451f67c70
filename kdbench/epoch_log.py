"""Where a run's per-epoch numbers can go while it trains, besides its record: a sink takes (epoch, {name: value})
after each epoch, untimed. `TensorBoardSink` writes them as TensorBoard scalars (pip install -e ".[tensorboard]");
any object with the same `scalars` and `close` methods works (a test collects them in a list)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from kdbench.errors import KdbenchError


class EpochSink(Protocol):
    def scalars(self, epoch: int, values: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class TensorBoardSink:
    """One TensorBoard run folder per cell: losses under `loss/<term>`, accuracies under `top1/<split>`."""

    def __init__(self, log_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch's writer needs the tensorboard package
            raise KdbenchError(
                'logging to TensorBoard needs the tensorboard package: pip install -e ".[tensorboard]"'
            ) from None
        self.writer = SummaryWriter(str(log_dir))

    def scalars(self, epoch: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
