"""Heat-map overlays and threshold outlines for calibrated anomaly maps (numpy, no plotting lib)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

OUTLINE_COLOR = (255, 255, 255)


def colormap(values: np.ndarray) -> np.ndarray:
    """Jet-style colours for values in [0, 1]: (H, W) float -> (H, W, 3) uint8."""
    x = np.clip(values, 0.0, 1.0)[..., None]
    centers = np.array([3.0, 2.0, 1.0])  # red, green, blue peaks at 3/4, 1/2, 1/4
    rgb = np.clip(1.5 - np.abs(4.0 * x - centers), 0.0, 1.0)
    return (rgb * 255).round().astype(np.uint8)


def outline(region: np.ndarray, width: int = 2) -> np.ndarray:
    """Boolean border pixels of a boolean region, ``width`` pixels thick."""
    if not region.any():
        return region
    inner = ndimage.binary_erosion(region, iterations=width, border_value=0)
    return region & ~inner


def overlay(
    image: np.ndarray,
    normalized_map: np.ndarray,
    *,
    opacity: float = 0.5,
    threshold: float | None = 0.5,
    outline_color: tuple[int, int, int] = OUTLINE_COLOR,
) -> np.ndarray:
    """Blend the heat map of a calibrated map (0.5 = threshold) over an RGB uint8 image.

    Where ``threshold`` is given, the region at or above it is outlined.
    """
    if image.shape[:2] != normalized_map.shape:
        raise ValueError(f"image {image.shape[:2]} and map {normalized_map.shape} sizes differ")
    opacity = float(np.clip(opacity, 0.0, 1.0))
    blended = (1.0 - opacity) * image.astype(np.float32) + opacity * colormap(normalized_map)
    result = blended.round().astype(np.uint8)
    if threshold is not None:
        width = max(1, round(min(image.shape[:2]) / 300))
        result[outline(normalized_map >= threshold, width)] = outline_color
    return result
