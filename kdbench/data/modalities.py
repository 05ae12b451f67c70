"""Paired second modalities derived from an image, for cross-modal distillation.

The teacher sees the (normalised) image; a cross-modal student sees only a fixed, deterministic transform of
the same sample, computed on the fly from the normalised batch so both views are always paired:

- `profile`: the row means followed by the column means of the image (averaged over channels), a 1-D signal
  of length H + W, as a pair of line sensors scanning the object would record it. Means are the intensity
  sums divided by the number of summed pixels, which keeps the signal on the input's scale.
- `edges`: the Sobel gradient magnitude of every channel, sqrt(Gx² + Gy²) with zero padding: an edge map of
  the same shape as the image (a contour sensor); the constant parts of the image vanish.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.data.catalog import DatasetInfo
from kdbench.errors import check_choice

MODALITIES = ("profile", "edges")

# Sobel kernels (Sobel & Feldman 1968); x responds to intensity changes along the columns
SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
SOBEL_Y = SOBEL_X.t()


def profile(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) images → (N, H + W): row means then column means, averaged over channels."""
    gray = x.mean(1)
    return torch.cat([gray.mean(2), gray.mean(1)], dim=1)


def edges(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) images → (N, C, H, W) Sobel gradient magnitudes, channel by channel."""
    c = x.shape[1]
    kernels = torch.stack([SOBEL_X, SOBEL_Y]).to(x).unsqueeze(1).repeat(c, 1, 1, 1)  # (2C, 1, 3, 3)
    grad = F.conv2d(x, kernels, padding=1, groups=c).view(x.shape[0], c, 2, *x.shape[2:])
    return grad.pow(2).sum(2).add(1e-12).sqrt()


_TRANSFORMS = {"profile": profile, "edges": edges}


def modality_shape(modality: str, info: DatasetInfo) -> tuple[int, ...]:
    """The shape of one sample of `modality` for a dataset's images."""
    check_choice("modality", modality, MODALITIES)
    if modality == "profile":
        return (2 * info.image_size,)
    return (info.in_chans, info.image_size, info.image_size)


class ModalityTransform(nn.Module):
    """The transform as a parameter-free module, so `nn.Sequential(ModalityTransform(m), student)` classifies
    raw images and can be evaluated and measured like any model."""

    def __init__(self, modality: str) -> None:
        super().__init__()
        self.modality = check_choice("modality", modality, MODALITIES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _TRANSFORMS[self.modality](x)

    def extra_repr(self) -> str:
        return self.modality
