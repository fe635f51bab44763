"""Residual maps, the anomaly map and the score (eq. 5-11), batched torch on the model's device.

Bilinear upsampling and the reflect-mode Gaussian filter are both separable linear operators,
so "resize each level, sum, smooth" equals ``sum_k A_H,k @ M_k @ A_W,k^T`` with ``A = G @ U``
built once per size: a few small batched matrix products instead of full-resolution resizes
and convolutions.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch.nn import functional as F

from hfr.config import DEFAULT_HARD_FRACTION


@dataclass
class AnomalyOutput:
    """Batched forward result on the model's device: maps at input size, scores, level maps."""

    maps: torch.Tensor
    scores: torch.Tensor
    level_maps: list[torch.Tensor]


def residual_maps(
    features: list[torch.Tensor], reconstructions: list[torch.Tensor]
) -> list[torch.Tensor]:
    """Per-level ``phi_k = 1 - cos(f_k, d_k)`` at each pixel, shape ``(B, H_k, W_k)``, float32.

    Equal to ``0.5 * || f/||f|| - d/||d|| ||^2`` summed over channels (eq. 5-6).
    """
    maps = []
    for f, d in zip(features, reconstructions, strict=True):
        f, d = f.float(), d.float()
        dot = (f * d).sum(1)
        norms = (f * f).sum(1) * (d * d).sum(1)
        maps.append(1.0 - dot * torch.rsqrt(norms.clamp_min(1e-16)))
    return maps


def reconstruction_loss(
    residuals: list[torch.Tensor],
    *,
    hard_fraction: float = DEFAULT_HARD_FRACTION,
    hard_weight: float = 0.0,
) -> torch.Tensor:
    """Mean over levels of the mean residual over pixels and images (eq. 7-8, ``hard_weight``
    0); with ``hard_weight`` w, each level's term is ``(1 - w) x`` that mean ``+ w x`` the mean of
    its hardest ``hard_fraction`` of the batch's pixels (hard-pixel mining), so that the few
    pixels of a small part on a large background weigh in the gradient.

    Example:
        >>> level = torch.tensor([[[0.0, 0.0, 0.0, 1.0]]])
        >>> float(reconstruction_loss([level], hard_weight=0.0))
        0.25
        >>> float(reconstruction_loss([level], hard_fraction=0.25, hard_weight=0.5))
        0.625
    """
    terms = []
    for level in residuals:
        term = level.mean()
        if hard_weight > 0:
            values = level.flatten()
            hardest = values.topk(max(1, round(hard_fraction * values.numel()))).values.mean()
            term = (1.0 - hard_weight) * term + hard_weight * hardest
        terms.append(term)
    return torch.stack(terms).mean()


def gaussian_kernel_1d(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian, truncated at 4 sigma as ``scipy.ndimage.gaussian_filter``."""
    radius = int(4.0 * sigma + 0.5)
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_matrix(size: int, sigma: float) -> np.ndarray:
    """``(size, size)`` matrix of the 1-D Gaussian filter with scipy's "reflect" borders."""
    if sigma <= 0:
        return np.eye(size)
    kernel = gaussian_kernel_1d(sigma)
    radius = kernel.size // 2
    rows = np.repeat(np.arange(size), kernel.size)
    source = (rows + np.tile(np.arange(-radius, radius + 1), size)) % (2 * size)
    source = np.where(source >= size, 2 * size - 1 - source, source)  # d c b a | a b c d
    matrix = np.zeros((size, size))
    np.add.at(matrix, (rows, source), np.tile(kernel, size))
    return matrix


def upsample_matrix(in_size: int, out_size: int) -> np.ndarray:
    """``(out, in)`` matrix of 1-D linear resizing, as ``F.interpolate(align_corners=False)``."""
    source = np.maximum((np.arange(out_size) + 0.5) * in_size / out_size - 0.5, 0.0)
    low = np.minimum(np.floor(source).astype(int), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    weight = source - low
    matrix = np.zeros((out_size, in_size))
    np.add.at(matrix, (np.arange(out_size), low), 1.0 - weight)
    np.add.at(matrix, (np.arange(out_size), high), weight)
    return matrix


@lru_cache(maxsize=64)
def _axis_matrix(in_size: int, out_size: int, sigma: float) -> np.ndarray:
    """Gaussian after linear upsampling along one axis, ``(out, in)`` float32."""
    return (gaussian_matrix(out_size, sigma) @ upsample_matrix(in_size, out_size)).astype(
        np.float32
    )


@lru_cache(maxsize=64)
def _device_operator(
    in_size: int, out_size: int, sigma: float, device: torch.device
) -> torch.Tensor:
    # Cached across calls, so never an inference tensor: it may later serve a training forward.
    with torch.inference_mode(False):
        return torch.from_numpy(_axis_matrix(in_size, out_size, sigma)).to(device)


def _axis_operator(in_size: int, out_size: int, sigma: float, device: torch.device) -> torch.Tensor:
    if torch.compiler.is_compiling():  # tracing (compile, ONNX export): a constant, never cached
        return torch.from_numpy(_axis_matrix(in_size, out_size, sigma)).to(device)
    return _device_operator(in_size, out_size, sigma, device)


def anomaly_map(residuals: list[torch.Tensor], size: tuple[int, int], sigma: float) -> torch.Tensor:
    """Residual maps resized (bilinear) to ``size``, summed, Gaussian-smoothed (eq. 9-10)."""
    total = None
    for level in residuals:
        rows = _axis_operator(level.shape[-2], size[0], float(sigma), level.device)
        cols = _axis_operator(level.shape[-1], size[1], float(sigma), level.device)
        term = rows @ level.float() @ cols.T
        total = term if total is None else total + term
    return total


def combined_map(
    levels: list[torch.Tensor], size: tuple[int, int], sigma: float, combination: str = "sum"
) -> torch.Tensor:
    """The map of weighted ``levels`` (strides 4, 8, 16, then any added terms): their
    :func:`anomaly_map` (``"sum"``), or ``(fine + 1) * (coarse + 1) - 1`` with fine the map of
    the first two and coarse that of the rest (``"product"``), high only where both are.

    Example:
        >>> levels = [torch.ones(1, 4, 4), torch.ones(1, 2, 2), torch.ones(1, 1, 1)]
        >>> float(combined_map(levels, (4, 4), 0.0, "product").mean())  # (2 + 1) * (1 + 1) - 1
        5.0
    """
    if combination == "sum":
        return anomaly_map(levels, size, sigma)
    fine, coarse = anomaly_map(levels[:2], size, sigma), anomaly_map(levels[2:], size, sigma)
    return (fine + 1.0) * (coarse + 1.0) - 1.0


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(B, H, W)`` maps."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps.unsqueeze(1), size=size, mode="bilinear", align_corners=False)[:, 0]


def weigh_levels(
    residuals: list[torch.Tensor],
    *,
    scales: tuple[float, ...] | None,
    weights: tuple[float, ...],
) -> list[torch.Tensor]:
    """Each level divided by its scale (its mean on normal images; none without scales) and
    multiplied by its weight; levels unchanged with neither.

    Example:
        >>> levels = [torch.ones(1, 2, 2), torch.ones(1, 1, 1)]
        >>> [float(v.sum()) for v in weigh_levels(levels, scales=(2.0, 1.0), weights=(0.5, 3.0))]
        [1.0, 3.0]
    """
    if scales is not None:
        residuals = [level / scale for level, scale in zip(residuals, scales, strict=True)]
    return [
        level if weight == 1.0 else level * weight
        for level, weight in zip(residuals, weights, strict=True)
    ]


def image_scores(
    maps: torch.Tensor, method: str = "max", top_k_fraction: float = 0.01
) -> torch.Tensor:
    """The anomaly score of each image: the maximum of its map (eq. 11, ``"max"``), or the mean
    of its highest ``top_k_fraction`` of pixels (``"top_k_mean"``)."""
    flat = maps.flatten(1)
    if method == "max":
        return flat.amax(dim=1)
    count = max(1, round(top_k_fraction * flat.shape[1]))
    return flat.topk(count, dim=1).values.mean(dim=1)
