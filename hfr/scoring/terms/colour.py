"""Per-position statistics of the input's colour, for parts that sit in the same place in
every image: a brighter, darker or discoloured region that the features shrug off.

An ImageNet encoder is built to recognise things whatever the light: a region made 30 %
brighter or darker keeps its features, so the reconstruction and the patch memory find it
normal. Where the parts are aligned, the colour itself is evidence: each channel of the
normalised input, averaged over ``COLOUR_STRIDE`` x ``COLOUR_STRIDE`` cells, gets a mean and
a variance per cell over the training images, and an image's map is the mean over channels of
``(colour - mean)^2 / variance`` (:class:`~.position.PositionStatistics` on the pooled
input), or its root (``scoring.colour_distance``: ``"mahalanobis"``, the default, whose tail
on normal images is far shorter; :func:`colour_distance`). On parts placed or turned at random
(screw) every cell sees every colour and the term costs what it finds, so
``colour_weight="auto"`` (the default of trained models) turns it on by the alignment rule of
:func:`hfr.scoring.terms.position.auto_weight`. See docs/method.md, "Colour, for aligned parts".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch.nn import functional as F

from hfr.config import ALIGNED_COLOUR_WEIGHTS, DEFAULT_COLOUR_DISTANCE
from hfr.scoring.terms.base import FeatureMoments, TrainingEvidence
from hfr.scoring.terms.position import PositionStatistics, auto_weight

if TYPE_CHECKING:
    from hfr.config import Scoring

COLOUR_STRIDE = 4  # input pixels per cell side: the stride of the finest feature level
STATE_PREFIX = "colour."


def pooled_colour(images: torch.Tensor) -> torch.Tensor:
    """The mean colour of each ``COLOUR_STRIDE`` cell of a normalised ``(B, 3, H, W)`` batch.

    Example:
        >>> tuple(pooled_colour(torch.zeros(2, 3, 64, 48)).shape)
        (2, 3, 16, 12)
    """
    return F.avg_pool2d(images.float(), COLOUR_STRIDE)


class ColourStatistics(PositionStatistics):
    """Mean and floored variance of each channel of the pooled input at each cell.

    Example:
        >>> stats = ColourStatistics.from_images([torch.randn(8, 3, 16, 16)])
        >>> tuple(stats(torch.randn(2, 3, 16, 16)).shape)
        (2, 4, 4)
    """

    name = "colour"
    label = "colour statistics"
    prefix = STATE_PREFIX
    inputs = f"the input's colour in {COLOUR_STRIDE}-pixel cells"

    @classmethod
    def from_images(cls, batches: Iterable[torch.Tensor]) -> ColourStatistics:
        """Statistics of normalised ``(N, 3, H, W)`` batches of normal images."""
        return cls.from_pooled(pooled_colour(batch) for batch in batches)

    @classmethod
    def from_pooled(cls, batches: Iterable[torch.Tensor]) -> ColourStatistics:
        """Statistics of batches of :func:`pooled_colour` cells of normal images."""
        return cls.from_moments(FeatureMoments.of(batches))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The ``(B, H/4, W/4)`` map of a normalised ``(B, 3, H, W)`` batch."""
        return super().forward(pooled_colour(images))

    # --- the scoring-term protocol (hfr.scoring.terms.base.ScoringTerm) ---

    def term_map(
        self, features: list[torch.Tensor], images: torch.Tensor, scoring: Scoring
    ) -> torch.Tensor:
        """The ``(B, H/4, W/4)`` map of the normalised images, measured as
        ``scoring.colour_distance`` says."""
        return colour_distance(self(images), scoring.colour_distance)

    @classmethod
    def fit(cls, evidence: TrainingEvidence, scoring: Scoring) -> ColourStatistics:
        """The statistics of the training images' cell colours: those the feature pass kept,
        or from one more pass over the images."""
        if evidence.colours is not None:
            return cls.from_pooled([evidence.colours])
        return cls.from_images(evidence.images())

    @classmethod
    def from_weights(
        cls, tensors: dict[str, torch.Tensor], channels: tuple[int, ...], scoring: Scoring
    ) -> ColourStatistics:
        """Rebuild from a weights file, checked (three colour channels)."""
        return cls.from_state(tensors, 3)

    @staticmethod
    def describe(scoring: Scoring) -> str:
        """The card's phrase."""
        distance = (
            "the Mahalanobis distance (per-channel variances)"
            if scoring.colour_distance == "mahalanobis"
            else "the squared standardised distance"
        )
        cell = f"each {COLOUR_STRIDE}x{COLOUR_STRIDE}-pixel cell"
        return f"{distance} of the input's colour in {cell} from the normal colours at that cell"

    @staticmethod
    def chosen_weight(evidence: TrainingEvidence, scoring: Scoring) -> tuple[float, str]:
        """:func:`chosen_colour_weight` of the training images."""
        share = evidence.measured_share()
        return chosen_colour_weight(share, evidence.count, scoring.colour_distance)

    @staticmethod
    def advice(evidence: TrainingEvidence, scoring: Scoring) -> None:
        """Nothing to advise."""
        return None


def colour_distance(squared: torch.Tensor, distance: str) -> torch.Tensor:
    """The colour term as ``distance`` (``scoring.colour_distance``) measures it, from the mean
    squared standardised difference that :class:`ColourStatistics` gives: its root
    (``"mahalanobis"``) or itself (``"squared"``).

    Example:
        >>> colour_distance(torch.tensor([4.0, 9.0]), "mahalanobis").tolist()
        [2.0, 3.0]
    """
    return squared.sqrt() if distance == "mahalanobis" else squared


def chosen_colour_weight(
    share: float, num_images: int, distance: str = DEFAULT_COLOUR_DISTANCE
) -> tuple[float, str]:
    """The weight ``colour_weight="auto"`` chooses, and why: ``ALIGNED_COLOUR_WEIGHTS`` of the
    ``distance`` where :func:`~.position.auto_weight` finds the parts aligned, else 0.

    Example:
        >>> chosen_colour_weight(0.88, 188)[0], chosen_colour_weight(0.18, 288)[0]
        (1.5, 0.0)
        >>> chosen_colour_weight(0.88, 188, "squared")[0]  # the weight of 0.13
        0.25
    """
    weight, reason = auto_weight(share, num_images)
    return (ALIGNED_COLOUR_WEIGHTS[distance] if weight > 0 else 0.0), reason


TERM = ColourStatistics
