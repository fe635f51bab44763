"""Score calibration from held-out normal images: a normalisation and a default threshold.

The normalised score is ``sigmoid((score - threshold) / scale)``: 0.5 exactly at the threshold,
0.05 at the median (before 0.3: mean) score of normal images, strictly increasing, so rankings
and AUROC are unchanged. The same mapping applied to heat-map pixels makes normal images look
quiet without any per-image min-max scaling.
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
MAD_TO_STD = 1.4826  # the standard deviation of a normal distribution per unit of MAD
_NORMAL_MEAN_LEVEL = 0.05  # normalised value given to the typical normal score
HELD_OUT_SOURCE = "held-out normal training images"
TAIL_SIGNIFICANCE = 0.05  # below this chance of so many normal scores above, the fit is doubted
# How the robust fit reads the normal scores: "lognormal" fits their logarithms (the scores are
# positive and skewed to the right), "normal" the scores themselves.
THRESHOLD_FITS = ("lognormal", "normal")
DEFAULT_THRESHOLD_FIT = "lognormal"
LEGACY_THRESHOLD_FIT = "normal"  # configs without a recorded fit, and scores not all above 0


def prediction_quantile(probability: float, count: int) -> float:
    """How many robust standard deviations above the median a new normal score stays with
    ``probability``, when the statistics come from ``count`` scores: Student's t quantile with
    ``count - 1`` degrees of freedom times ``sqrt(1 + 1 / count)`` (a prediction interval),
    which grows as the sample shrinks and tends to the normal quantile.

    Example:
        >>> round(prediction_quantile(0.99, 4), 2), round(prediction_quantile(0.99, 10_000), 2)
        (5.08, 2.33)
    """
    from scipy.stats import t

    return float(t.ppf(probability, count - 1) * math.sqrt(1.0 + 1.0 / count))


def exceedance_chance(count_above: int, count: int, rate: float) -> float:
    """The chance that ``count_above`` or more of ``count`` normal scores lie above a threshold
    that each exceeds with probability ``rate`` (a binomial tail): small when the scores have a
    heavier right tail than the fit that set the threshold assumed.

    Example:
        >>> round(exceedance_chance(1, 21, 0.01), 3), round(exceedance_chance(3, 21, 0.01), 4)
        (0.19, 0.0012)
    """
    from scipy.stats import binom

    return float(binom.sf(count_above - 1, count, rate))


def check_target_fpr(target_fpr: float | None) -> None:
    """Raise :class:`ConfigError` unless ``target_fpr`` is None or a number in (0, 0.5)."""
    number = isinstance(target_fpr, (int, float)) and not isinstance(target_fpr, bool)
    if target_fpr is not None and not (number and 0 < target_fpr < 0.5):
        raise ConfigError(f"target_fpr must be a number in (0, 0.5), got {target_fpr!r}")


def check_threshold_fit(fit: str) -> None:
    """Raise :class:`ConfigError` unless ``fit`` is one of :data:`THRESHOLD_FITS`."""
    if fit not in THRESHOLD_FITS:
        raise ConfigError(f"the threshold fit must be one of {THRESHOLD_FITS}, got {fit!r}")


def robust_quantile(scores: np.ndarray, probability: float) -> float:
    """The score that a new normal score stays below with ``probability``: median + z x 1.4826
    MAD of ``scores``, a normal fit that one outlier cannot move, with z from
    :func:`prediction_quantile`.

    Example:
        >>> round(robust_quantile(np.array([1.0, 1.1, 0.9, 1.05, 0.95, 5.0]), 0.99), 3)
        1.429
    """
    median = float(np.median(scores))
    spread = MAD_TO_STD * float(np.median(np.abs(scores - median)))
    return median + prediction_quantile(probability, scores.size) * spread


def check_count(count: int) -> None:
    """Raise :class:`TrainingError` for fewer than two normal images to calibrate on."""
    if count < 2:
        raise TrainingError(f"calibration needs at least two normal images, got {count}")


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
    target_fpr: float | None = None  # None: the legacy rule, or a config written before 0.14
    num_above: int | None = None  # of the num_images scores, how many lie above the threshold
    fit: str | None = None  # None: the legacy rule, or "normal" in a config written before 0.17

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
        check_target_fpr(self.target_fpr)
        if self.fit is not None:
            check_threshold_fit(self.fit)
        above = self.num_above
        if above is not None and (
            not isinstance(above, int) or isinstance(above, bool) or not 0 <= above <= count
        ):
            raise ConfigError(
                f"calibration.num_above must be an integer from 0 to {count} or null, got {above!r}"
            )

    @classmethod
    def from_normal_scores(
        cls,
        scores: np.ndarray,
        *,
        target_fpr: float | None = None,
        fit: str = DEFAULT_THRESHOLD_FIT,
        sigmas: float = THRESHOLD_SIGMAS,
        source: str = HELD_OUT_SOURCE,
    ) -> Calibration:
        """The threshold from normal scores: with ``target_fpr``, the score that share of normal
        images exceeds, estimated robustly by :func:`robust_quantile`; without, mean + ``sigmas``
        standard deviations, at least the maximum (versions before 0.3). ``fit="lognormal"``
        applies the robust fit to the logarithms of the scores, so that a tail longer to the
        right than to the left raises the threshold; it falls back to ``"normal"`` (recorded in
        ``fit``) when a score is not above 0.

        Raises :class:`TrainingError` for fewer than two scores or a score that is not finite;
        :class:`ConfigError` for a ``target_fpr`` outside (0, 0.5) or an unknown ``fit``.

        Example:
            >>> scores = np.array([1.0, 1.1, 0.9, 1.05, 0.95, 5.0])  # one outlier
            >>> round(Calibration.from_normal_scores(scores, target_fpr=0.01).threshold, 3)
            1.521
            >>> fitted = Calibration.from_normal_scores(scores, target_fpr=0.01, fit="normal")
            >>> round(fitted.threshold, 3)
            1.429
            >>> round(Calibration.from_normal_scores(scores).threshold, 3)  # the outlier decides
            6.57
        """
        check_target_fpr(target_fpr)
        check_threshold_fit(fit)
        scores = np.asarray(scores, dtype=np.float64)
        check_count(scores.size)
        if not np.isfinite(scores).all():
            raise TrainingError("calibration got NaN or infinite scores: the model cannot score")
        mean, std, peak = float(scores.mean()), float(scores.std(ddof=1)), float(scores.max())
        median = float(np.median(scores))
        used_fit = None
        if target_fpr is not None:
            used_fit = fit if scores.min() > 0 else LEGACY_THRESHOLD_FIT
            z = prediction_quantile(1.0 - target_fpr, scores.size)
            if used_fit == "lognormal":
                threshold = math.exp(robust_quantile(np.log(scores), 1.0 - target_fpr))
                rule = f"exp(median + {z:.3f} x 1.4826 MAD) of the logarithms of the scores"
            else:
                threshold = robust_quantile(scores, 1.0 - target_fpr)
                rule = f"median + {z:.3f} x 1.4826 MAD of the scores"
            method = (
                f"{rule} of {scores.size} {source}: "
                f"{100 * target_fpr:g} % of normal images flagged (estimated)"
            )
            if used_fit != fit:
                method += " (a score not above 0: no logarithm)"
        else:
            threshold = max(mean + sigmas * std, peak)
            method = f"max(mean + {sigmas:g} std, max) of the scores of {scores.size} {source}"
        center = median if target_fpr is not None else mean  # normalised to 0.05
        gap = max(threshold - center, 1e-6 * max(abs(threshold), 1.0))
        scale = gap / math.log((1 - _NORMAL_MEAN_LEVEL) / _NORMAL_MEAN_LEVEL)
        above = int((scores > threshold).sum())
        return cls(
            threshold, scale, mean, std, peak, int(scores.size), method, target_fpr, above, used_fit
        )

    def tail_warning(self) -> str | None:
        """A warning when more of the normal scores lie above the threshold than its target
        false-alarm rate explains (chance below 5 %, :func:`exceedance_chance`): their tail is
        heavier than the fit assumed, and new normal images will be flagged more often than
        the target says. None when the count is consistent, or unknown (a config written before
        0.14, or the legacy rule).

        Example:
            >>> scores = np.array([1.0, 1.1, 0.9, 1.05, 0.95, 5.0, 6.0, 7.0])  # a heavy tail
            >>> warning = Calibration.from_normal_scores(scores, target_fpr=0.01).tail_warning()
            >>> print(warning.split(", more")[0])
            3 of the 8 normal images it was set on score above the threshold
        """
        if self.target_fpr is None or self.num_above is None:
            return None
        chance = exceedance_chance(self.num_above, self.num_images, self.target_fpr)
        if self.num_above == 0 or chance >= TAIL_SIGNIFICANCE:
            return None
        target = f"{100 * self.target_fpr:g} %"
        verb = "scores" if self.num_above == 1 else "score"
        return (
            f"{self.num_above} of the {self.num_images} normal images it was set on {verb} above "
            f"the threshold, more than a {target} false-alarm rate explains (a chance of "
            f"{100 * chance:.2g} %): expect more false alarms than {target}; recalibrate on "
            "more normal images (hfr calibrate) or raise the threshold"
        )

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
        if not isinstance(values, dict) or set(values) != set(names):
            raise ConfigError(f"calibration must be an object with keys {names}, got {values!r}")
        return cls(**values)
