"""Residual maps, the anomaly map and the score (eq. 5-11), batched torch on the model's device."""

from __future__ import annotations

import torch
from torch.nn import functional as F

DEFAULT_SIGMA = 4.0


def residual_maps(
    features: list[torch.Tensor], reconstructions: list[torch.Tensor]
) -> list[torch.Tensor]:
    """Per-level ``phi_k = 1 - cos(f_k, d_k)`` at each pixel, shape ``(B, H_k, W_k)``, float32.

    Equal to ``0.5 * || f/||f|| - d/||d|| ||^2`` summed over channels (eq. 5-6).
    """
    return [
        1.0 - F.cosine_similarity(f.float(), d.float(), dim=1, eps=1e-8)
        for f, d in zip(features, reconstructions, strict=True)
    ]


def reconstruction_loss(residuals: list[torch.Tensor]) -> torch.Tensor:
    """Mean over levels of the mean residual over pixels and images (eq. 7-8)."""
    return torch.stack([r.mean() for r in residuals]).mean()


def gaussian_kernel_1d(sigma: float, *, device: torch.device | None = None) -> torch.Tensor:
    """Normalised 1-D Gaussian, truncated at 4 sigma as ``scipy.ndimage.gaussian_filter``."""
    radius = int(4.0 * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Exact separable Gaussian filter of ``(B, H, W)`` maps with reflected borders.

    Matches ``scipy.ndimage.gaussian_filter(mode="reflect", truncate=4)`` per image while it costs
    two 1-D passes instead of one dense 2-D convolution.
    """
    if sigma <= 0:
        return maps
    kernel = gaussian_kernel_1d(sigma, device=maps.device)
    radius = kernel.numel() // 2
    x = maps.unsqueeze(1)
    x = _reflect_pad(x, radius, dim=3)
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = _reflect_pad(x, radius, dim=2)
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return x.squeeze(1)


def _reflect_pad(x: torch.Tensor, radius: int, *, dim: int) -> torch.Tensor:
    """scipy's "reflect" (edge sample repeated: d c b a | a b c d), valid for any radius."""
    size = x.shape[dim]
    period = 2 * size
    index = torch.arange(-radius, size + radius, device=x.device) % period
    index = torch.where(index >= size, period - 1 - index, index)
    return x.index_select(dim, index)


def anomaly_map(residuals: list[torch.Tensor], size: tuple[int, int], sigma: float) -> torch.Tensor:
    """Residual maps resized (bilinear) to ``size``, summed, Gaussian-smoothed (eq. 9-10)."""
    total = torch.zeros((residuals[0].shape[0], *size), device=residuals[0].device)
    for level in residuals:
        total += resize_maps(level, size)
    return gaussian_blur(total, sigma)


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(B, H, W)`` maps."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps.unsqueeze(1), size=size, mode="bilinear", align_corners=False)[:, 0]


def image_scores(maps: torch.Tensor) -> torch.Tensor:
    """The anomaly score of each image: the maximum of its map (eq. 11)."""
    return maps.flatten(1).amax(dim=1)
