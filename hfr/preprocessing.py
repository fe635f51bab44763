"""RGB uint8 images to the encoder's normalised input batch, as a :class:`Preprocessing` says."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from hfr.config import Preprocessing


def to_batch(
    images: Sequence[np.ndarray], preprocessing: Preprocessing, device: torch.device
) -> torch.Tensor:
    """Stack RGB uint8 arrays into a normalised ``(B, 3, H, W)`` float batch on ``device``.

    Images of one size are resized together in one call.

    Example:
        >>> batch = to_batch([np.zeros((40, 50, 3), np.uint8)], Preprocessing((32, 32)), "cpu")
        >>> tuple(batch.shape)
        (1, 3, 32, 32)
    """
    batch = torch.empty((len(images), 3, *preprocessing.input_size), device=device)
    for indices, group in _group_by_shape(images):
        stacked = group[0][None] if len(group) == 1 else np.stack(group)  # no copy for one
        pixels = torch.from_numpy(stacked).to(device).permute(0, 3, 1, 2).float()
        batch[indices] = _resize(pixels.div_(255.0), preprocessing)
    mean = torch.tensor(preprocessing.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(preprocessing.std, device=device).view(1, 3, 1, 1)
    return (batch - mean) / std


def _resize(pixels: torch.Tensor, preprocessing: Preprocessing) -> torch.Tensor:
    size = preprocessing.input_size
    if tuple(pixels.shape[-2:]) == size:
        return pixels
    if preprocessing.interpolation == "nearest":
        return F.interpolate(pixels, size=size, mode="nearest")
    resized = F.interpolate(
        pixels, size=size, mode=preprocessing.interpolation, antialias=True, align_corners=False
    )
    return resized.clamp_(0.0, 1.0)


def _group_by_shape(images: Sequence[np.ndarray]) -> list[tuple[list[int], list[np.ndarray]]]:
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(images):
        groups.setdefault(image.shape, []).append(index)
    return [(indices, [images[i] for i in indices]) for indices in groups.values()]
