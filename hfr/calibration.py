"""Score calibration from held-out normal images: a normalisation and a default threshold.

The normalised score is ``sigmoid((score - threshold) / scale)``: 0.5 exactly at the threshold,
0.05 at the mean score of normal images, strictly increasing, so rankings and AUROC are unchanged.
The same mapping applied to heat-map pixels makes normal images look quiet without any
per-image min-max scaling.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from hfr.errors import ModelFormatError

THRESHOLD_SIGMAS = 3.0
_NORMAL_MEAN_LEVEL = 0.05  # normalised value given to the mean normal score


@dataclass(frozen=True)
class Calibration:
    """Statistics of held-out normal scores and the threshold chosen from them."""

    threshold: float
    scale: float
    normal_mean: float
    normal_std: float
    normal_max: float
    num_images: int
    method: str

    def __post_init__(self) -> None:
        values = (self.threshold, self.scale, self.normal_mean, self.normal_std, self.normal_max)
        if not all(math.isfinite(v) for v in values) or self.scale <= 0:
            raise ModelFormatError(f"invalid calibration values: {asdict(self)}")

    @classmethod
    def from_normal_scores(
        cls, scores: np.ndarray, *, sigmas: float = THRESHOLD_SIGMAS
    ) -> Calibration:
        """Threshold = mean + ``sigmas`` standard deviations of normal scores (at least their max).

        Raises ``ValueError`` for fewer than two scores.
        """
        scores = np.asarray(scores, dtype=np.float64)
        if scores.size < 2:
            raise ValueError("calibration needs the scores of at least two normal images")
        mean, std, peak = float(scores.mean()), float(scores.std(ddof=1)), float(scores.max())
        threshold = max(mean + sigmas * std, peak)
        spread = max(threshold - mean, 1e-6 * max(abs(threshold), 1.0))
        scale = spread / math.log((1 - _NORMAL_MEAN_LEVEL) / _NORMAL_MEAN_LEVEL)
        method = (
            f"max(mean + {sigmas:g} std, max) of the scores of {scores.size} held-out normal "
            "training images"
        )
        return cls(threshold, scale, mean, std, peak, int(scores.size), method)

    def normalize(self, values: torch.Tensor) -> torch.Tensor:
        """Map raw scores or map pixels into (0, 1), with the threshold at 0.5."""
        return torch.sigmoid((values - self.threshold) / self.scale)

    def raw_threshold(self, normalized_threshold: float) -> float:
        """The raw score that a threshold on the normalised scale corresponds to."""
        p = min(max(normalized_threshold, 1e-12), 1 - 1e-12)
        return self.threshold + self.scale * math.log(p / (1 - p))

    def to_dict(self) -> dict:
        """JSON-ready form for ``config.json``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Calibration:
        """Validate and build from ``config.json`` values."""
        try:
            return cls(**values)
        except TypeError as error:
            raise ModelFormatError(f"calibration in config is malformed: {error}") from error
