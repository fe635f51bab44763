"""The field's metrics, exactly as MVTec's official evaluation: AUROC, AUPRO, F1-max.

All are vectorised: one sort of the pooled scores, ties grouped so that every distinct score is a
threshold (a pixel is positive when its score is >= the threshold).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.stats import rankdata

EIGHT_CONNECTED = np.ones((3, 3), dtype=int)


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve, ties counted as half (Mann-Whitney U)."""
    labels = np.asarray(labels, dtype=bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in size")
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        raise ValueError("AUROC needs both normal and anomalous samples")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def image_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Image-level AUROC: ``labels`` 1 for anomalous images, ``scores`` their anomaly scores."""
    return auroc(labels, scores)


def pixel_auroc(masks: np.ndarray, maps: np.ndarray) -> float:
    """Pixel-level AUROC over all pixels of all images pooled. ``masks``: (N, H, W) bool."""
    masks, maps = _check_masks_maps(masks, maps)
    return auroc(masks, maps)


def aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Normalised area under the per-region-overlap curve up to ``fpr_limit`` (MVTec official).

    Regions are the 8-connected components of each mask. FPR is false-positive pixels over all
    defect-free pixels; PRO is the mean over regions of each region's detected fraction. The curve
    starts at (0, 0), is integrated with the trapezoid rule up to ``fpr_limit`` (interpolated
    linearly there) and divided by ``fpr_limit``.

    Example:
        >>> masks = np.zeros((1, 2, 2), bool); masks[0, 0, 0] = True
        >>> aupro(masks, np.array([[[1.0, 0.0], [0.0, 0.0]]]))
        1.0
    """
    masks, maps = _check_masks_maps(masks, maps)
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    region_ids = np.zeros(masks.shape, dtype=np.int64)
    num_regions = 0
    for index, mask in enumerate(masks):
        labelled, count = ndimage.label(mask, structure=EIGHT_CONNECTED)
        region_ids[index] = np.where(labelled > 0, labelled + num_regions, 0)
        num_regions += count
    if num_regions == 0:
        raise ValueError("AUPRO needs at least one defect region")
    normal_pixels = int((~masks).sum())
    if normal_pixels == 0:
        raise ValueError("AUPRO needs defect-free pixels")
    region_sizes = np.bincount(region_ids.ravel(), minlength=num_regions + 1)
    ids = region_ids.ravel()
    fpr_step = np.where(ids == 0, 1.0 / normal_pixels, 0.0)
    pro_step = np.where(ids > 0, 1.0 / (region_sizes[ids] * num_regions), 0.0)
    fpr, pro = _cumulative_at_thresholds(maps.ravel(), fpr_step, pro_step)
    return _partial_area(fpr, pro, fpr_limit) / fpr_limit


def f1_max(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Best F1 over all thresholds and the threshold reaching it (score >= threshold)."""
    labels = np.asarray(labels, dtype=bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positives = labels.sum()
    if positives == 0:
        raise ValueError("F1 needs anomalous samples")
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    true_pos = np.cumsum(labels[order])
    last_of_tie = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    tp = true_pos[last_of_tie]
    predicted = np.nonzero(last_of_tie)[0] + 1
    f1 = 2 * tp / (predicted + positives)
    best = int(np.argmax(f1))
    return float(f1[best]), float(sorted_scores[last_of_tie][best])


def binomial_interval(successes: int, trials: int, confidence: float = 0.95) -> list[float]:
    """The exact (Clopper-Pearson) ``confidence`` interval of a rate from ``successes`` of
    ``trials``, as ``[low, high]``.

    Example:
        >>> [round(v, 4) for v in binomial_interval(1, 25)]
        [0.001, 0.2035]
    """
    from scipy.stats import binomtest

    interval = binomtest(successes, trials).proportion_ci(confidence, method="exact")
    return [float(interval.low), float(interval.high)]


def _cumulative_at_thresholds(
    scores: np.ndarray, x_step: np.ndarray, y_step: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative sums of the steps over scores sorted high to low, one point per distinct score."""
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    last_of_tie = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    x = np.cumsum(x_step[order])[last_of_tie]
    y = np.cumsum(y_step[order])[last_of_tie]
    return np.r_[0.0, x], np.r_[0.0, y]


def _partial_area(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area under ``y(x)`` for x in [0, limit], interpolating linearly at ``limit``."""
    x = np.minimum(x, 1.0)
    inside = x <= limit
    xs, ys = x[inside], y[inside]
    if xs[-1] < limit and inside.sum() < x.size:
        nxt = int(np.argmax(~inside))
        x0, x1, y0, y1 = x[nxt - 1], x[nxt], y[nxt - 1], y[nxt]
        y_limit = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
        xs, ys = np.r_[xs, limit], np.r_[ys, y_limit]
    return float(np.trapezoid(ys, xs))


def _check_masks_maps(masks: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    masks = np.asarray(masks).astype(bool, copy=False)
    maps = np.asarray(maps, dtype=np.float64)
    if masks.shape != maps.shape:
        raise ValueError(f"masks {masks.shape} and maps {maps.shape} must have the same shape")
    if masks.ndim == 2:
        masks, maps = masks[None], maps[None]
    if masks.ndim != 3:
        raise ValueError(f"masks and maps must be (N, H, W), got {masks.shape}")
    return masks, maps
