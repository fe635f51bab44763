"""Threshold rules on normal scores, and what a threshold guarantees.

The conformal rank (:func:`conformal_rank`) guarantees a target false-alarm rate from ``n``
exchangeable normal scores; any threshold with ``m`` of them above it guarantees
:func:`guaranteed_fpr`, stays below :func:`fpr_bound` with 90 % confidence, and
:func:`images_for` says how many scores a target needs. The robust fits
(:func:`fitted_threshold`) estimate the target quantile instead, and :func:`exceedance_chance`
says how likely their count above is.
"""

from __future__ import annotations

import math

import numpy as np

MAD_TO_STD = 1.4826  # the standard deviation of a normal distribution per unit of MAD
BOUND_CONFIDENCE = 0.9  # the confidence of the stated high-probability bound on the rate


def conformal_rank(count: int, target_fpr: float) -> int:
    """The rank (1 = smallest) of the normal score whose threshold guarantees ``target_fpr``
    from ``count`` scores: ``ceil((count + 1)(1 - target_fpr))``, at most ``count`` (the
    largest score, when ``count`` images cannot guarantee the target).

    Example:
        >>> conformal_rank(99, 0.01), conformal_rank(21, 0.01), conformal_rank(199, 0.01)
        (99, 21, 198)
    """
    exact = (count + 1) * (1.0 - target_fpr)
    return min(count, math.ceil(exact - 1e-9))


def guaranteed_fpr(count: int, count_above: int) -> float:
    """The expected false-alarm rate on new normal images that a threshold guarantees when
    ``count_above`` of ``count`` exchangeable normal scores lie above it: ``(m + 1) / (n + 1)``.

    Example:
        >>> round(guaranteed_fpr(21, 0), 4), round(guaranteed_fpr(21, 1), 4)
        (0.0455, 0.0909)
    """
    return (count_above + 1) / (count + 1)


def fpr_bound(count: int, count_above: int, confidence: float = BOUND_CONFIDENCE) -> float:
    """The false-alarm rate that, with ``confidence`` over the draw of the ``count`` normal
    scores, the threshold's true rate stays below: the ``confidence`` quantile of
    ``Beta(m + 1, n - m)``, the distribution of the rate above the ``(n - m)``-th smallest of
    ``n`` scores.

    Example:
        >>> round(fpr_bound(21, 0), 3), round(fpr_bound(299, 1), 4)
        (0.104, 0.0129)
    """
    from scipy.stats import beta

    if count_above >= count:
        return 1.0
    return float(beta.ppf(confidence, count_above + 1, count - count_above))


def images_for(target_fpr: float) -> int:
    """The fewest normal images whose largest score guarantees ``target_fpr``.

    Example:
        >>> images_for(0.01), images_for(0.05)
        (99, 19)
    """
    return math.ceil(1.0 / target_fpr - 1.0 - 1e-9)


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


def fitted_threshold(
    scores: np.ndarray, target_fpr: float, fit: str, source: str
) -> tuple[float, str]:
    """The threshold a robust ``fit`` (``"lognormal"`` or ``"normal"``) estimates for
    ``target_fpr``, and the rule in words."""
    z = prediction_quantile(1.0 - target_fpr, scores.size)
    if fit == "lognormal":
        threshold = math.exp(robust_quantile(np.log(scores), 1.0 - target_fpr))
        rule = f"exp(median + {z:.3f} x 1.4826 MAD) of the logarithms of the scores"
    else:
        threshold = robust_quantile(scores, 1.0 - target_fpr)
        rule = f"median + {z:.3f} x 1.4826 MAD of the scores"
    method = (
        f"{rule} of {scores.size} {source}: "
        f"{100 * target_fpr:g} % of normal images flagged (estimated)"
    )
    return threshold, method
