"""Metrics against hand-computed cases and a slow, literal implementation of the definitions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage

from hfr.metrics import aupro, auroc, f1_max, image_auroc, pixel_auroc


def brute_force_aupro(masks: np.ndarray, maps: np.ndarray, limit: float = 0.3) -> float:
    """MVTec's definition step by step: every distinct score, region by region."""
    regions = []
    for mask, amap in zip(masks, maps, strict=True):
        labelled, count = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [(amap[labelled == r]) for r in range(1, count + 1)]
    normal = maps[~masks]
    points = [(0.0, 0.0)]
    for threshold in sorted(set(maps.ravel().tolist()), reverse=True):
        fpr = float((normal >= threshold).mean())
        pro = float(np.mean([(region >= threshold).mean() for region in regions]))
        points.append((fpr, pro))
    area = 0.0
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 >= limit:
            break
        if x1 > limit:
            y1 = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            x1 = limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / limit


def brute_force_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    positives, negatives = scores[labels == 1], scores[labels == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def test_auroc_hand_cases() -> None:
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auroc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert auroc([0, 1], [0.5, 0.5]) == 0.5  # a tie counts half
    assert auroc([0, 0, 1], [0.1, 0.3, 0.2]) == 0.5


def test_auroc_matches_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200)
    scores = rng.integers(0, 10, 200).astype(float)  # many ties
    assert auroc(labels, scores) == pytest.approx(brute_force_auroc(labels, scores), abs=1e-12)
    assert image_auroc(labels, scores) == auroc(labels, scores)


def test_auroc_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="both"):
        auroc([1, 1], [0.2, 0.3])


def test_pixel_auroc_pools_all_images() -> None:
    masks = np.zeros((2, 2, 2), bool)
    masks[0, 0, 0] = True
    maps = np.zeros((2, 2, 2))
    maps[0, 0, 0] = 1.0
    maps[1, 1, 1] = 2.0  # a normal pixel in another image above the defect
    assert pixel_auroc(masks, maps) == pytest.approx(6 / 7)


def test_aupro_one_region_perfect_and_worst() -> None:
    masks = np.zeros((1, 4, 4), bool)
    masks[0, :2, :2] = True
    assert aupro(masks, masks.astype(float)) == 1.0
    assert aupro(masks, (~masks).astype(float)) == 0.0


def test_aupro_hand_computed_two_regions() -> None:
    # Two regions of one pixel each, 8 normal pixels. Region A scores 3, region B scores 1,
    # normal pixels score 2 (one) and 0 (seven). Thresholds: 3 -> (0, 0.5); 2 -> (1/8, 0.5);
    # 1 -> (1/8, 1); 0 -> (1, 1). Area to 0.3: 0.125*0.5 + (0.3-0.125)*1 = 0.2375.
    masks = np.zeros((1, 2, 5), bool)
    masks[0, 0, 0] = masks[0, 1, 4] = True
    maps = np.zeros((1, 2, 5))
    maps[0, 0, 0], maps[0, 1, 4], maps[0, 0, 2] = 3.0, 1.0, 2.0
    assert aupro(masks, maps) == pytest.approx(0.2375 / 0.3)


def test_aupro_regions_are_eight_connected_and_weighted_equally() -> None:
    # Pixels (0,0), (0,1), (1,2) touch diagonally: one region of 3 pixels with 8-connectivity
    # (two regions with 4-connectivity, which would give PRO 0.5). Detecting (1,2) alone gives
    # PRO 1/3 at FPR 0; then (1, 1). At FPR 0.3: PRO = 1/3 + 2/3 * 0.3.
    masks = np.zeros((1, 3, 3), bool)
    masks[0, 0, 0] = masks[0, 0, 1] = masks[0, 1, 2] = True
    maps = np.zeros((1, 3, 3))
    maps[0, 1, 2] = 1.0
    pro_at_limit = 1 / 3 + 2 / 3 * 0.3
    assert aupro(masks, maps) == pytest.approx(0.3 * (1 / 3 + pro_at_limit) / 2 / 0.3)
    assert aupro(masks, maps) == pytest.approx(brute_force_aupro(masks, maps))


@pytest.mark.parametrize("seed", range(5))
def test_aupro_matches_brute_force_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    masks = np.zeros((4, 12, 12), bool)
    masks[0, 2:5, 2:5] = True
    masks[0, 8:11, 7:9] = True  # several regions in one image
    masks[1, 0:3, 9:12] = True
    # images 2 and 3 have no defect
    maps = rng.integers(0, 25, masks.shape).astype(float) + 4.0 * masks  # ties on purpose
    assert aupro(masks, maps) == pytest.approx(brute_force_aupro(masks, maps), abs=1e-10)
    assert aupro(masks, maps, fpr_limit=0.05) == pytest.approx(
        brute_force_aupro(masks, maps, 0.05), abs=1e-10
    )


def test_aupro_rejects_masks_without_defects() -> None:
    with pytest.raises(ValueError, match="defect region"):
        aupro(np.zeros((1, 3, 3), bool), np.zeros((1, 3, 3)))


def test_aupro_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="same shape"):
        aupro(np.zeros((1, 3, 3), bool), np.zeros((1, 3, 4)))


def test_f1_max_and_threshold() -> None:
    f1, threshold = f1_max([0, 1, 1, 0], [0.1, 0.9, 0.8, 0.85])
    # threshold 0.8 flags 3 samples with 2 true positives: F1 = 4 / (3 + 2) = 0.8
    assert (f1, threshold) == pytest.approx((0.8, 0.8))
    assert f1_max([0, 1], [0.2, 0.7]) == pytest.approx((1.0, 0.7))
