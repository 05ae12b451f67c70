"""Trainable adapters that map student features onto the teacher's. They belong to the method that uses them,
so they are trained with it and counted as training-time extra parameters, never deployed."""

from __future__ import annotations

import torch
import torch.nn as nn

from kdbench.errors import KdbenchError


class ConvRegressor(nn.Module):
    """FitNet's regressor as in RepDistiller's `ConvReg`: a convolution chosen by the spatial sizes
    (1x1 when equal, strided 3x3 to halve, transposed 4x4 to double, a valid conv to shrink), then BN + ReLU."""

    def __init__(self, student_shape: torch.Size, teacher_shape: torch.Size) -> None:
        super().__init__()
        _, cs, hs, ws = student_shape
        _, ct, ht, wt = teacher_shape
        if hs == ht:
            self.conv = nn.Conv2d(cs, ct, 1)
        elif hs == 2 * ht:
            self.conv = nn.Conv2d(cs, ct, 3, stride=2, padding=1)
        elif 2 * hs == ht:
            self.conv = nn.ConvTranspose2d(cs, ct, 4, stride=2, padding=1)
        elif hs > ht and ws - wt == hs - ht:
            self.conv = nn.Conv2d(cs, ct, (1 + hs - ht, 1 + ws - wt))
        else:
            raise KdbenchError(
                f"cannot align student features {tuple(student_shape[1:])} to teacher features "
                f"{tuple(teacher_shape[1:])}: the regressor maps equal, halved, doubled or larger maps only"
            )
        self.bn = nn.BatchNorm2d(ct)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))
