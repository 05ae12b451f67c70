"""Trainable adapters that map student features onto the teacher's. They belong to the method that uses them,
so they are trained with it and counted as training-time extra parameters, never deployed."""

from __future__ import annotations

import torch
import torch.nn as nn

from kdbench.errors import KdbenchError

ALIGNABLE = "equal to, half of, double or larger than the teacher's"


def alignment(student_shape: torch.Size, teacher_shape: torch.Size) -> str | None:
    """How `ConvRegressor` maps a student feature map onto the teacher's size: "equal", "halve", "double" or
    "shrink" (a valid convolution); None when it cannot (a smaller map that is not exactly half the teacher's,
    or features that are not (N, C, H, W) maps)."""
    if len(student_shape) != 4 or len(teacher_shape) != 4:
        return None
    (_, _, hs, ws), (_, _, ht, wt) = student_shape, teacher_shape
    if hs == ht:
        return "equal"
    if hs == 2 * ht:
        return "halve"
    if 2 * hs == ht:
        return "double"
    if hs > ht and ws - wt == hs - ht:
        return "shrink"
    return None


class ConvRegressor(nn.Module):
    """FitNet's regressor as in RepDistiller's `ConvReg`: a convolution chosen by the spatial sizes
    (1x1 when equal, strided 3x3 to halve, transposed 4x4 to double, a valid conv to shrink), then BN + ReLU."""

    def __init__(self, student_shape: torch.Size, teacher_shape: torch.Size) -> None:
        super().__init__()
        kind = alignment(student_shape, teacher_shape)
        if kind is None:
            raise KdbenchError(
                f"cannot align student features {tuple(student_shape[1:])} to teacher features "
                f"{tuple(teacher_shape[1:])}: the regressor needs a student map {ALIGNABLE}"
            )
        (_, cs, hs, ws), (_, ct, ht, wt) = student_shape, teacher_shape
        if kind == "equal":
            self.conv = nn.Conv2d(cs, ct, 1)
        elif kind == "halve":
            self.conv = nn.Conv2d(cs, ct, 3, stride=2, padding=1)
        elif kind == "double":
            self.conv = nn.ConvTranspose2d(cs, ct, 4, stride=2, padding=1)
        else:
            self.conv = nn.Conv2d(cs, ct, (1 + hs - ht, 1 + ws - wt))
        self.bn = nn.BatchNorm2d(ct)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))
