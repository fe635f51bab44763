"""Score calibration from held-out normal images: a normalisation and a default threshold.

The normalised score is ``sigmoid((score - threshold) / scale)``: 0.5 exactly at the threshold,
0.05 at the mean score of normal images, strictly increasing, so rankings and AUROC are unchanged.
The same mapping applied to heat-map pixels makes normal images look quiet without any
per-image min-max scaling.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

from hfr.errors import ConfigError, TrainingError

if TYPE_CHECKING:
    import torch

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
        for name in ("threshold", "scale", "normal_mean", "normal_std", "normal_max"):
            value = getattr(self, name)
            finite = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not (finite and math.isfinite(value)) or (name == "scale" and value <= 0):
                expected = "a finite number" + (" above 0" if name == "scale" else "")
                raise ConfigError(f"calibration.{name} must be {expected}, got {value!r}")
        count = self.num_images
        if not isinstance(count, int) or isinstance(count, bool) or count < 2:
            raise ConfigError(f"calibration.num_images must be an integer >= 2, got {count!r}")
        if not isinstance(self.method, str):
            raise ConfigError(f"calibration.method must be a string, got {self.method!r}")

    @classmethod
    def from_normal_scores(
        cls, scores: np.ndarray, *, sigmas: float = THRESHOLD_SIGMAS
    ) -> Calibration:
        """Threshold = mean + ``sigmas`` standard deviations of normal scores (at least their max).

        Raises :class:`TrainingError` for fewer than two scores or a score that is not finite.
        """
        scores = np.asarray(scores, dtype=np.float64)
        if scores.size < 2:
            raise TrainingError("calibration needs the scores of at least two normal images")
        if not np.isfinite(scores).all():
            raise TrainingError("calibration got NaN or infinite scores: the model cannot score")
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
        """Map raw scores or map pixels (a tensor) into (0, 1), with the threshold at 0.5."""
        return ((values - self.threshold) / self.scale).sigmoid()

    def raw_threshold(self, normalized_threshold: float) -> float:
        """The raw score that a threshold on the normalised scale corresponds to."""
        p = min(max(normalized_threshold, 1e-12), 1 - 1e-12)
        return self.threshold + self.scale * math.log(p / (1 - p))

    def to_dict(self) -> dict:
        """JSON-ready form for ``config.json``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: object) -> Calibration:
        """Validate and build from ``config.json`` values."""
        names = sorted(f.name for f in fields(cls))
        if not isinstance(values, dict) or sorted(values) != names:
            raise ConfigError(f"calibration must be an object with keys {names}, got {values!r}")
        return cls(**values)
