"""Score calibration from held-out normal images: a threshold, the false-alarm rate it
guarantees, and a normalisation.

The default threshold is split-conformal: of ``n`` normal scores, the
``ceil((n + 1)(1 - a))``-th smallest, so that a new normal image from the same source scores
above it with probability at most ``a``, whatever the scores' distribution. Any threshold with
``m`` of the ``n`` scores above it guarantees ``(m + 1) / (n + 1)`` (the ``guaranteed_fpr``
every calibration records); ``n`` images cannot guarantee less than ``1 / (n + 1)``.

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
from hfr.scoring.thresholds import (
    BOUND_CONFIDENCE,
    conformal_rank,
    exceedance_chance,
    fitted_threshold,
    fpr_bound,
    guaranteed_fpr,
    images_for,
)

if TYPE_CHECKING:
    import torch

THRESHOLD_SIGMAS = 3.0
_NORMAL_MEAN_LEVEL = 0.05  # normalised value given to the typical normal score
HELD_OUT_SOURCE = "held-out normal training images"
ADDED_SOURCE = "normal images (those it had and those added)"
TAIL_SIGNIFICANCE = 0.05  # below this chance of so many normal scores above, the fit is doubted
# How the threshold is read from the normal scores: "conformal" takes the order statistic that
# guarantees the target rate; "lognormal" and "normal" estimate the target quantile with a
# robust fit of the scores' logarithms or of the scores (no guarantee: they extrapolate).
THRESHOLD_FITS = ("conformal", "lognormal", "normal")
DEFAULT_THRESHOLD_FIT = "conformal"
LEGACY_THRESHOLD_FIT = "normal"  # configs without a recorded fit, and scores not all above 0


def check_target_fpr(target_fpr: float | None) -> None:
    """Raise :class:`ConfigError` unless ``target_fpr`` is None or a number in (0, 0.5)."""
    number = isinstance(target_fpr, (int, float)) and not isinstance(target_fpr, bool)
    if target_fpr is not None and not (number and 0 < target_fpr < 0.5):
        raise ConfigError(f"target_fpr must be a number in (0, 0.5), got {target_fpr!r}")


def check_threshold_fit(fit: str) -> None:
    """Raise :class:`ConfigError` unless ``fit`` is one of :data:`THRESHOLD_FITS`."""
    if fit not in THRESHOLD_FITS:
        raise ConfigError(f"the threshold fit must be one of {THRESHOLD_FITS}, got {fit!r}")


def _check_scores(scores: object, count: int) -> None:
    """Raise :class:`ConfigError` unless ``scores`` is a list of ``count`` finite numbers."""
    values = scores if isinstance(scores, (list, tuple)) else None
    if values is None or len(values) != count:
        raise ConfigError(f"calibration.scores must be a list of num_images ({count}) numbers")
    for value in values:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (number and math.isfinite(value)):
            raise ConfigError(f"calibration.scores must be finite numbers, got {value!r}")


def _percent(rate: float) -> str:
    """A rate as a percentage, two significant digits below 10 %, whole above.

    Example:
        >>> _percent(0.04545), _percent(0.1038), _percent(1.0)
        ('4.5 %', '10 %', '100 %')
    """
    value = 100 * rate
    return f"{value:.2g} %" if value < 10 else f"{value:.0f} %"


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
    # The expected false-alarm rate the threshold guarantees (guaranteed_fpr) and the rate it stays
    # below with 90 % confidence (fpr_bound); None where the count above is unknown.
    guaranteed_fpr: float | None = None
    fpr_bound: float | None = None
    # The normal scores it was set on, so that more can be added (None: not recorded, before 0.21).
    scores: tuple[float, ...] | None = None

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
        for name in ("guaranteed_fpr", "fpr_bound"):
            rate = getattr(self, name)
            number = isinstance(rate, (int, float)) and not isinstance(rate, bool)
            if rate is not None and not (number and 0 < rate <= 1):
                raise ConfigError(f"calibration.{name} must be a number in (0, 1] or null")
        if self.scores is not None:
            _check_scores(self.scores, count)
            object.__setattr__(self, "scores", tuple(float(v) for v in self.scores))

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
        """The threshold from normal scores. With ``target_fpr``: ``fit="conformal"`` takes the
        score of rank :func:`~hfr.scoring.thresholds.conformal_rank` (the target guaranteed,
        or the lowest rate these scores can guarantee); ``"lognormal"`` and ``"normal"``
        estimate the score that share of normal images exceeds with
        :func:`~hfr.scoring.thresholds.robust_quantile`, of the logarithms (falling back to
        ``"normal"``, recorded in ``fit``, when a score is not above 0) or of the scores.
        Without: mean + ``sigmas`` standard deviations, at least the maximum (before 0.3).
        Every rule records the rate its threshold guarantees and the scores.

        Raises :class:`TrainingError` for fewer than two scores or a score that is not finite;
        :class:`ConfigError` for a ``target_fpr`` outside (0, 0.5) or an unknown ``fit``.

        Example:
            >>> scores = np.array([1.0, 1.1, 0.9, 1.05, 0.95, 5.0])  # one outlier
            >>> conformal = Calibration.from_normal_scores(scores, target_fpr=0.01)
            >>> conformal.threshold, round(conformal.guaranteed_fpr, 3)  # 6 images: 1/7 at best
            (5.0, 0.143)
            >>> fitted = Calibration.from_normal_scores(scores, target_fpr=0.01, fit="lognormal")
            >>> round(fitted.threshold, 3), fitted.num_above, round(fitted.guaranteed_fpr, 3)
            (1.521, 1, 0.286)
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
        if target_fpr is None:
            threshold = max(mean + sigmas * std, peak)
            method = f"max(mean + {sigmas:g} std, max) of the scores of {scores.size} {source}"
        elif fit == "conformal":
            used_fit = fit
            rank = conformal_rank(scores.size, target_fpr)
            threshold = float(np.sort(scores)[rank - 1])
            method = f"score {rank} of {scores.size} {source}, from the lowest (split conformal)"
        else:
            used_fit = fit if scores.min() > 0 else LEGACY_THRESHOLD_FIT
            threshold, method = fitted_threshold(scores, target_fpr, used_fit, source)
            if used_fit != fit:
                method += " (a score not above 0: no logarithm)"
        center = median if target_fpr is not None else mean  # normalised to 0.05
        gap = max(threshold - center, 1e-6 * max(abs(threshold), 1.0))
        scale = gap / math.log((1 - _NORMAL_MEAN_LEVEL) / _NORMAL_MEAN_LEVEL)
        above = int((scores > threshold).sum())
        return cls(
            threshold,
            scale,
            mean,
            std,
            peak,
            int(scores.size),
            method,
            target_fpr,
            above,
            used_fit,
            guaranteed_fpr(scores.size, above),
            fpr_bound(scores.size, above),
            tuple(float(v) for v in scores),
        )

    def with_scores(
        self,
        scores: np.ndarray,
        *,
        target_fpr: float | str | None = "own",
        fit: str | None = None,
        source: str = ADDED_SOURCE,
    ) -> Calibration:
        """The calibration of its recorded normal scores and ``scores`` together, by its own
        ``target_fpr`` and ``fit`` unless given.

        Raises :class:`TrainingError` when it recorded no scores (a model calibrated before
        0.21: recalibrate it from images instead).

        Example:
            >>> first = Calibration.from_normal_scores(np.linspace(1, 2, 21), target_fpr=0.01)
            >>> more = first.with_scores(np.linspace(1, 2, 78))
            >>> more.num_images, round(more.guaranteed_fpr, 3)
            (99, 0.01)
        """
        return Calibration.from_normal_scores(
            np.concatenate([self.recorded_scores(), np.asarray(scores, dtype=np.float64)]),
            target_fpr=self.target_fpr if target_fpr == "own" else target_fpr,
            fit=fit or self.fit or LEGACY_THRESHOLD_FIT,
            source=source,
        )

    def recorded_scores(self) -> np.ndarray:
        """The normal scores it was set on; :class:`TrainingError` when it recorded none (a
        model calibrated before 0.21: recalibrate it from images instead of adding)."""
        if self.scores is None:
            raise TrainingError(
                "this model's calibration did not record its normal scores (before 0.21): "
                "recalibrate it from normal images instead of adding to them"
            )
        return np.asarray(self.scores, dtype=np.float64)

    def guarantee(self) -> str | None:
        """The rate the threshold guarantees, in words, with the high-probability bound and,
        when it is above the target, how many more normal images would reach the target.
        None when unknown (the count above was not recorded).

        Example:
            >>> scores = np.linspace(1.0, 2.0, 21)
            >>> print(Calibration.from_normal_scores(scores, target_fpr=0.01).guarantee())
            at most 4.5 % of new normal images flagged, guaranteed by 21 normal images (below \
10 % with 90 % confidence); with 21 normal images the lowest false-alarm rate that can be \
guaranteed is 4.5 %: add 78 more normal images for 1 %
        """
        if self.guaranteed_fpr is None or self.fpr_bound is None:
            return None
        text = (
            f"at most {_percent(self.guaranteed_fpr)} of new normal images flagged, guaranteed "
            f"by {self.num_images} normal images (below {_percent(self.fpr_bound)} with "
            f"{100 * BOUND_CONFIDENCE:g} % confidence)"
        )
        shortfall = self.shortfall()
        if shortfall:
            text += f"; {shortfall}"
        return text

    def shortfall(self) -> str | None:
        """When the threshold guarantees less than its target because there are too few normal
        images: how many more would do. None otherwise."""
        target, count = self.target_fpr, self.num_images
        if target is None or self.guaranteed_fpr is None or self.guaranteed_fpr <= target + 1e-12:
            return None
        lowest = guaranteed_fpr(count, 0)
        if lowest <= target + 1e-12:
            return None  # enough images: the rule, not the count, missed the target
        needed = images_for(target)
        return (
            f"with {count} normal images the lowest false-alarm rate that can be guaranteed is "
            f"{_percent(lowest)}: add {needed - count} more normal images for {_percent(target)}"
        )

    def tail_warning(self) -> str | None:
        """A warning when more of the normal scores lie above a fitted threshold than its
        target false-alarm rate explains (chance below 5 %, :func:`exceedance_chance`): their
        tail is heavier than the fit assumed, and new normal images will be flagged more often
        than the target says. None for the conformal rule (its count is its guarantee), when
        the count is consistent, or unknown (before 0.14, or the legacy rule).

        Example:
            >>> scores = np.array([1.0, 1.1, 0.9, 1.05, 0.95, 5.0, 6.0, 7.0])  # a heavy tail
            >>> fitted = Calibration.from_normal_scores(scores, target_fpr=0.01, fit="lognormal")
            >>> print(fitted.tail_warning().split(", more")[0])
            3 of the 8 normal images it was set on score above the threshold
        """
        if self.target_fpr is None or self.num_above is None or self.fit == "conformal":
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
        values = asdict(self)
        if self.scores is not None:
            values["scores"] = list(self.scores)
        return values

    @classmethod
    def from_dict(cls, values: object) -> Calibration:
        """Validate and build from ``config.json`` values."""
        names = sorted(f.name for f in fields(cls))
        if not isinstance(values, dict) or set(values) != set(names):
            raise ConfigError(f"calibration must be an object with keys {names}, got {values!r}")
        return cls(**values)
