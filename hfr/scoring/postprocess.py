"""From a batched forward result to per-image :class:`Prediction`\\ s: maps at each image's size,
calibrated scores and verdicts."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from hfr.errors import HFRError, ModelFormatError
from hfr.preprocessing import Box
from hfr.scoring import maps as anomaly
from hfr.scoring.calibration import Calibration

DEFAULT_THRESHOLD = 0.5  # on the normalised scale: the calibrated threshold


@dataclass
class Prediction:
    """The result for one image.

    ``anomaly_map`` is the raw map (float32, the input image's size unless asked otherwise);
    ``normalized_map`` and ``normalized_score`` use the model's calibration (0.5 = threshold).
    ``level_maps`` holds the three per-level residual maps when requested; ``notes`` says what
    was done to the input that a user should know (frames dropped, size reduced).
    """

    score: float
    normalized_score: float | None
    is_anomalous: bool | None
    threshold: float | None
    anomaly_map: np.ndarray
    normalized_map: np.ndarray | None
    level_maps: list[np.ndarray] | None = None
    notes: tuple[str, ...] = ()


def check_threshold(threshold: float | None) -> float:
    """The verdict threshold on the normalised scale: ``threshold`` or 0.5, within [0, 1].

    Example:
        >>> check_threshold(None), check_threshold(0.7)
        (0.5, 0.7)
    """
    if threshold is None:
        return DEFAULT_THRESHOLD
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise HFRError(f"threshold must be a number in [0, 1], got {threshold!r}")
    if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise HFRError(f"threshold must be a number in [0, 1], got {threshold!r}")
    return float(threshold)


def to_predictions(
    output: anomaly.AnomalyOutput,
    *,
    calibration: Calibration | None,
    sizes: list[tuple[int, int]] | None = None,
    boxes: list[Box] | None = None,
    threshold: float | None = None,
    return_level_maps: bool = False,
) -> list[Prediction]:
    """One :class:`Prediction` per image of ``output``: each map cut to the image's ``boxes``
    (its place in the input, see :func:`hfr.preprocessing.content_box`; default the whole
    input) and resized to ``sizes`` (default the input's size)."""
    threshold = check_threshold(threshold)
    count = output.scores.shape[0]
    scores = output.scores.float().cpu().numpy()
    if not np.isfinite(scores).all():
        raise ModelFormatError(
            "the model produced NaN or infinite scores: its weights or config are broken"
        )
    height, width = output.maps.shape[-2:]
    sizes = sizes or [(height, width)] * count
    boxes = boxes or [(0, 0, height, width)] * count
    maps = crop_and_resize(output.maps, boxes, sizes)
    levels = (
        [
            crop_and_resize(level, boxes, sizes, input_size=(height, width))
            for level in output.level_maps
        ]
        if return_level_maps
        else []
    )
    normalized_scores = None if calibration is None else calibration.normalize(output.scores)
    predictions = []
    for i in range(count):
        normalized_score = None if calibration is None else float(normalized_scores[i])
        predictions.append(
            Prediction(
                score=float(scores[i]),
                normalized_score=normalized_score,
                is_anomalous=None if normalized_score is None else normalized_score > threshold,
                threshold=None if calibration is None else threshold,
                anomaly_map=maps[i].cpu().numpy(),
                normalized_map=None
                if calibration is None
                else calibration.normalize(maps[i]).cpu().numpy(),
                level_maps=[level[i].cpu().numpy() for level in levels]
                if return_level_maps
                else None,
            )
        )
    return predictions


def crop_and_resize(
    maps: torch.Tensor,
    boxes: list[Box],
    sizes: list[tuple[int, int]],
    *,
    input_size: tuple[int, int] | None = None,
) -> list[torch.Tensor]:
    """Cut each ``(H, W)`` map to its box and resize it to its size, one interpolation per
    distinct box and size. Boxes are in ``input_size`` pixels (default the maps' size); maps
    of another size, such as the coarser residual levels, are brought to it before a cut."""
    input_size = tuple(input_size or maps.shape[-2:])
    groups: dict[tuple[Box, tuple[int, int]], list[int]] = {}
    for index, key in enumerate(zip(boxes, map(tuple, sizes), strict=True)):
        groups.setdefault(key, []).append(index)
    resized: list[torch.Tensor | None] = [None] * len(sizes)
    for (box, size), indices in groups.items():
        group = maps[indices].float()
        if box != (0, 0, *input_size):  # letterboxed: cut the padding away first
            top, left, height, width = box
            group = anomaly.resize_maps(group, input_size)[
                :, top : top + height, left : left + width
            ]
        group = anomaly.resize_maps(group, size)
        for j, i in enumerate(indices):
            resized[i] = group[j]
    return resized
