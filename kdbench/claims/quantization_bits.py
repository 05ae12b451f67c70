"""Claim 9, Quantized KD: accuracy may decrease with reduced bit precision.

qkd (with KD) and qat (the same quantized student without it) at 8, 4, 3 and 2 bits.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from kdbench.claims.core import Budget, Claim, Entry, Finding, register_claim
from kdbench.claims.figures import figure, lines
from kdbench.claims.frames import minus, series, summarise

BITS = (8, 4, 3, 2)


@register_claim
class QuantizationBits(Claim):
    number = 9
    key = "quantization_bits"
    techniques = ("Quantized KD",)
    experiment = "qkd (with KD) and qat (without) at 8, 4, 3, 2 bits"
    effect = "qkd top-1 at 8 bits minus at 2 bits (pts): accuracy falls with the bits"

    def design(self, b: Budget) -> list[Entry]:
        out = []
        for seed in b.seeds:
            for bits in b.sweep(BITS):
                out.append(
                    (
                        {"method": "qkd", "bits": bits},
                        b.cfg("qkd", (b.teacher,), seed, hparams={"bits": bits}),
                    )
                )
                out.append(({"method": "qat", "bits": bits}, b.cfg("qat", (), seed, hparams={"bits": bits})))
        return out

    def analyse(self, frame: pd.DataFrame) -> Finding:
        qkd = frame[frame["method"] == "qkd"]
        values = series(qkd, bits=qkd["bits"].max()) - series(qkd, bits=qkd["bits"].min())
        frame = frame.assign(kd_gain=minus(frame, frame["method"] == "qat", ["seed", "bits"]))
        table = summarise(
            frame,
            ["bits", "method"],
            {"top-1 (%)": ("student_top1", False), "KD gain over qat (pts)": ("kd_gain", True)},
        )
        return Finding(values, table)

    def draw(self, frame: pd.DataFrame) -> plt.Figure:
        fig, (ax,) = figure(1, 6)
        lines(ax, frame, "bits", "student_top1", "method")
        ax.set_xlabel("weight and activation bits (first and last layer at 8)")
        ax.set_ylabel("student top-1 (%)")
        return fig
