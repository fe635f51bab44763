"""Per-position normal statistics of the stride-8 features, for parts that sit in the same
place in every image (a fixed camera and fixture).

Each channel at each position of the normal training images' stride-8 features gets a mean
and a variance; an image's map is the mean over channels of ``(f - mean)^2 / variance``, a
diagonal Gaussian per position. A reconstruction rebuilds whatever looks like normal texture;
this term asks whether it is normal *at that place*. On MVTec AD bottle it sharpened the maps;
on screw, whose parts are placed and turned at random, it cost more than it found (see
docs/method.md). Off by default (``scoring.position_weight`` 0); ``position_weight="auto"`` lets
training choose from the training images (:func:`auto_weight`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import nn

from hfr.errors import ConfigError, ModelFormatError
from hfr.scoring.terms.base import ALIGNMENT_LEVEL, FeatureMoments, TrainingEvidence

if TYPE_CHECKING:
    from hfr.config import Scoring

POSITION_LEVEL = ALIGNMENT_LEVEL  # index of the stride-8 level in [f1, f2, f3]
# Added to every variance, as a share of the mean variance: a channel that never varies at a
# position (a letterbox border, a saturated background) must not turn noise into a defect.
VARIANCE_FLOOR = 0.01
STATE_PREFIX = "position."
# From this share of the stride-8 features' variance explained by position on, the parts look
# aligned. Measured: MVTec AD bottle 0.88, where the term helped; MNIST digits 0.55-0.68 and
# screw 0.15-0.18, where it did not (docs/method.md, "Per-position statistics").
ALIGNED_SHARE = 0.8
# The weight of the term on aligned parts: the best of 0, 0.5, 1 and 2 on bottle with both
# backbones (research/results/position).
ALIGNED_WEIGHT = 1.0
# Statistics from fewer training images are too noisy: with 19 bottles the term gained 0.003
# AUPRO, with 45 to 188 of them 0.009-0.011 (docs/method.md, "Per-position statistics").
MIN_ALIGNED_IMAGES = 40


class PositionStatistics(nn.Module):
    """Mean and floored variance of each channel at each position, ``(C, H, W)`` buffers.

    Example:
        >>> stats = PositionStatistics.from_features([torch.randn(8, 4, 2, 2)])
        >>> tuple(stats(torch.randn(3, 4, 2, 2)).shape)
        (3, 2, 2)
    """

    name = "position"
    label = "per-position statistics"
    prefix = STATE_PREFIX  # of the tensors in a weights file
    inputs = "features"  # what forward takes, for its error message

    def __init__(self, mean: torch.Tensor, variance: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("variance", variance.float())

    @classmethod
    def from_features(cls, batches: Iterable[torch.Tensor]) -> PositionStatistics:
        """Statistics of normal features given as ``(N, C, H, W)`` batches (float64 sums)."""
        return cls.from_moments(FeatureMoments.of(batches))

    @classmethod
    def from_moments(cls, moments: FeatureMoments) -> PositionStatistics:
        """Statistics from the moments of normal features."""
        variance = moments.variance
        return cls(moments.mean, variance + VARIANCE_FLOOR * variance.mean().clamp_min(1e-12))

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], channels: int) -> PositionStatistics:
        """Rebuild from the ``position.*`` (``cls.prefix``) tensors of a weights file, checked."""
        prefix = cls.prefix
        try:
            mean, variance = state[prefix + "mean"], state[prefix + "variance"]
        except KeyError as missing:
            raise ModelFormatError(f"the weights file lacks {missing}") from None
        for name, tensor in (("mean", mean), ("variance", variance)):
            if tensor.dtype != torch.float32 or tensor.dim() != 3 or tensor.shape[0] != channels:
                raise ModelFormatError(
                    f"{prefix}{name} is {tensor.dtype} {tuple(tensor.shape)}, expected "
                    f"float32 ({channels}, H, W) for this model"
                )
            if not torch.isfinite(tensor).all():
                raise ModelFormatError(f"{prefix}{name} holds NaN or infinite values")
        if mean.shape != variance.shape or not (variance > 0).all():
            raise ModelFormatError(
                f"{prefix}variance must match {prefix}mean's shape and be above 0"
            )
        return cls(mean, variance)

    def state(self) -> dict[str, torch.Tensor]:
        """The tensors a weights file stores, under ``position.`` (``self.prefix``)."""
        return {self.prefix + "mean": self.mean, self.prefix + "variance": self.variance}

    # --- the scoring-term protocol (hfr.scoring.terms.base.ScoringTerm) ---

    def term_map(
        self, features: list[torch.Tensor], images: torch.Tensor, scoring: Scoring
    ) -> torch.Tensor:
        """The ``(B, H/8, W/8)`` map of the stride-8 features."""
        return self(features[POSITION_LEVEL])

    @classmethod
    def fit(cls, evidence: TrainingEvidence, scoring: Scoring) -> PositionStatistics:
        """The statistics of the training images' stride-8 features."""
        return cls.from_moments(evidence.moments)

    @classmethod
    def from_weights(
        cls, tensors: dict[str, torch.Tensor], channels: tuple[int, ...], scoring: Scoring
    ) -> PositionStatistics:
        """Rebuild from a weights file for an encoder of ``channels``, checked."""
        return cls.from_state(tensors, channels[POSITION_LEVEL])

    @staticmethod
    def describe(scoring: Scoring) -> str:
        """The card's phrase."""
        return "the distance of each stride-8 feature from the normal ones at its position"

    @staticmethod
    def chosen_weight(evidence: TrainingEvidence, scoring: Scoring) -> tuple[float, str]:
        """:func:`auto_weight` of the training images."""
        return auto_weight(evidence.measured_share(), evidence.count)

    @staticmethod
    def advice(evidence: TrainingEvidence, scoring: Scoring) -> str | None:
        """:func:`alignment_hint` for the weight set by hand, once the alignment is measured."""
        share = evidence.position_share
        if share is None:
            return None
        return alignment_hint(share, scoring.position_weight, evidence.count)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """The ``(B, H, W)`` map of ``(B, C, H, W)`` stride-8 features."""
        if tuple(features.shape[1:]) != tuple(self.mean.shape):
            raise ConfigError(
                f"per-position statistics are for {self.inputs} {tuple(self.mean.shape)}, got "
                f"{tuple(features.shape[1:])}: the input size differs from the one they were "
                "measured at"
            )
        return ((features.float() - self.mean) ** 2 / self.variance).mean(1)


def auto_weight(share: float, num_images: int) -> tuple[float, str]:
    """The per-position term's weight that ``position_weight="auto"`` chooses, and why:
    ``ALIGNED_WEIGHT`` when position explains at least ``ALIGNED_SHARE`` of the training images'
    stride-8 feature variance (``share``, :meth:`FeatureMoments.position_share`) and the
    statistics come from at least ``MIN_ALIGNED_IMAGES`` images, else 0.

    Example:
        >>> auto_weight(0.88, 188)
        (1.0, "position explains 88 % of the stride-8 features' variance: the parts look aligned")
        >>> auto_weight(0.18, 288)[0]
        0.0
    """
    explained = f"position explains {100 * share:.0f} % of the stride-8 features' variance"
    if share < ALIGNED_SHARE:
        return 0.0, f"{explained}: the parts do not look aligned"
    if num_images < MIN_ALIGNED_IMAGES:
        return 0.0, (
            f"{explained}: the parts look aligned, but per-position statistics from "
            f"{num_images} training images are too noisy (at least {MIN_ALIGNED_IMAGES})"
        )
    return ALIGNED_WEIGHT, f"{explained}: the parts look aligned"


def alignment_hint(share: float, position_weight: float, num_images: int) -> str | None:
    """A sentence when a ``position_weight`` that was set by hand and the one
    :func:`auto_weight` would choose disagree on whether the term is on; ``None`` when they
    agree.

    Example:
        >>> print(alignment_hint(0.88, 0.0, 188))  # doctest: +NORMALIZE_WHITESPACE
        position explains 88 % of the stride-8 features' variance: the parts look aligned, and
        the per-position term may help
    """
    chosen, reason = auto_weight(share, num_images)
    if (chosen > 0) == (position_weight > 0):
        return None
    if chosen > 0:
        return f"{reason}, and the per-position term may help"
    return f"{reason}, and there the per-position term measured worse"


TERM = PositionStatistics
