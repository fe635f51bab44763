"""Residuals, smoothing and scores against the paper's equations and scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from hfr import anomaly


def test_residual_is_half_squared_distance_of_unit_vectors() -> None:
    f, d = torch.randn(2, 5, 4, 4), torch.randn(2, 5, 4, 4)
    expected = 0.5 * ((f / f.norm(dim=1, keepdim=True) - d / d.norm(dim=1, keepdim=True)) ** 2).sum(
        1
    )
    (residual,) = anomaly.residual_maps([f], [d])
    torch.testing.assert_close(residual, expected, rtol=1e-5, atol=1e-6)


def test_identical_features_give_zero_residual_and_loss() -> None:
    f = torch.randn(3, 8, 6, 6)
    residuals = anomaly.residual_maps([f, f], [f.clone(), f.clone()])
    assert float(anomaly.reconstruction_loss(residuals)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(("sigma", "size"), [(4.0, (64, 64)), (4.0, (10, 7)), (1.5, (33, 20))])
def test_gaussian_blur_matches_scipy(sigma: float, size: tuple[int, int]) -> None:
    maps = torch.rand(2, *size)
    ours = anomaly.gaussian_blur(maps, sigma).numpy()
    for index in range(2):
        reference = gaussian_filter(maps[index].numpy().astype(np.float64), sigma, mode="reflect")
        np.testing.assert_allclose(ours[index], reference, atol=1e-5)


def test_anomaly_map_sums_resized_levels_and_scores_are_maxima() -> None:
    levels = [torch.zeros(1, 16, 16), torch.zeros(1, 8, 8), torch.zeros(1, 4, 4)]
    levels[2][0, 1, 1] = 1.0
    maps = anomaly.anomaly_map(levels, (64, 64), sigma=0.0)
    expected = anomaly.resize_maps(levels[2], (64, 64))
    torch.testing.assert_close(maps, expected)
    assert float(anomaly.image_scores(maps)[0]) == pytest.approx(float(maps.max()))
    smoothed = anomaly.anomaly_map(levels, (64, 64), sigma=4.0)
    assert smoothed.shape == (1, 64, 64)
    assert float(smoothed.sum()) == pytest.approx(float(maps.sum()), rel=1e-3)
