"""The protocol every added scoring term follows, and what training fits the terms from.

A term is an ``nn.Module`` whose :meth:`~ScoringTerm.term_map` gives a ``(B, h, w)`` map of how
far each place of a batch lies from the normal training images; the scoring divides it by its
normal mean (``scoring.<name>_scale``, set by calibration) and multiplies it by its weight
(``scoring.<name>_weight``). It is fitted once from the training images
(:meth:`~ScoringTerm.fit`), travels in the weights file under ``<name>.``
(:meth:`~ScoringTerm.state`, :meth:`~ScoringTerm.from_weights`), says in a phrase what it adds
(:meth:`~ScoringTerm.describe`), and, where its weight may be ``"auto"``, how training chooses
it (:meth:`~ScoringTerm.chosen_weight`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

import torch
from torch.nn import functional as F

from hfr.errors import TrainingError

if TYPE_CHECKING:
    from hfr.config import Scoring, TrainConfig

ALIGNMENT_LEVEL = 1  # the stride-8 level of [f1, f2, f3], whose alignment the auto rules read
# The auto rules read the alignment on a grid of about this many cells, the stride-8 map of a
# 256x256 input where their thresholds were measured: on a finer grid (a larger input) the same
# small shifts between images read as variance at a position, and bottle's share fell from
# 0.88 to 0.79 at 512x512 (research/notebook.md, "A larger input on MVTec AD, and the
# alignment rule's scale").
ALIGNMENT_CELLS = 32 * 32


def alignment_grid(features: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` features averaged over blocks to about ``ALIGNMENT_CELLS`` cells, the
    aspect kept; as they are when they have that many cells or fewer.

    Example:
        >>> tuple(alignment_grid(torch.zeros(1, 2, 64, 64)).shape)
        (1, 2, 32, 32)
        >>> tuple(alignment_grid(torch.zeros(1, 2, 40, 100)).shape)
        (1, 2, 20, 51)
    """
    height, width = features.shape[-2:]
    factor = math.sqrt(height * width / ALIGNMENT_CELLS)
    if factor <= 1:
        return features
    grid = (max(1, round(height / factor)), max(1, round(width / factor)))
    return F.adaptive_avg_pool2d(features, grid)


@dataclass(frozen=True)
class FeatureMoments:
    """Mean and mean square of each channel at each position of normal features, ``(C, H, W)``
    float64."""

    mean: torch.Tensor
    mean_square: torch.Tensor

    @classmethod
    def of(cls, batches: Iterable[torch.Tensor]) -> FeatureMoments:
        """Moments of ``(N, C, H, W)`` feature batches, accumulated in float64."""
        return cls.of_views(batches, (lambda features: features,))[0]

    @classmethod
    def of_views(
        cls,
        batches: Iterable[torch.Tensor],
        views: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    ) -> list[FeatureMoments]:
        """The moments of each of ``views`` of ``(N, C, H, W)`` feature batches, in one pass
        over them, accumulated in float64."""
        totals: list[torch.Tensor | None] = [None] * len(views)
        squares: list[torch.Tensor | None] = [None] * len(views)
        count = 0
        for batch in batches:
            for index, view in enumerate(views):
                values = view(batch.detach()).double()
                total, square = values.sum(0), (values**2).sum(0)
                totals[index] = total if totals[index] is None else totals[index] + total
                squares[index] = square if squares[index] is None else squares[index] + square
            count += batch.shape[0]
        if count < 2:
            raise TrainingError("per-position statistics need the features of two images or more")
        return [
            cls(total / count, square / count)
            for total, square in zip(totals, squares, strict=True)
        ]

    @property
    def variance(self) -> torch.Tensor:
        """Each channel's variance at each position."""
        return (self.mean_square - self.mean**2).clamp_min(0.0)

    def position_share(self) -> float:
        """The share of the features' variance that their position explains: 1 minus the
        variance at a position over the variance across all positions (summed over channels).
        Near 0 when every position looks alike (a texture, a part placed at random); measured
        0.88 on MVTec AD bottle, 0.55-0.68 on MNIST digits and 0.15-0.18 on screw at 256x256
        (docs/method.md, "Aligned parts"); the auto rules read it on :func:`alignment_grid`.

        Example:
            >>> still = torch.arange(4.0).view(1, 1, 2, 2).repeat(5, 1, 1, 1)
            >>> FeatureMoments.of([still]).position_share()  # position decides everything
            1.0
        """
        within = self.variance.mean((1, 2)).sum()
        grand_mean = self.mean.mean((1, 2))
        across = (self.mean_square.mean((1, 2)) - grand_mean**2).clamp_min(0.0).sum()
        return float(1.0 - within / across) if across > 0 else 0.0


@dataclass
class TrainingEvidence:
    """What the terms are fitted from: the training images' encoder features ``[f1, f2, f3]``
    batch by batch (``features()``, a fresh pass each call), their normalised input batches
    (``images()``), the mean colour of each cell when the feature pass kept it (``colours``),
    how many images, and the training settings. The stride-8 moments, and those of their
    :func:`alignment_grid`, are measured on first use (:attr:`moments`)."""

    features: Callable[[], Iterator[list[torch.Tensor]]]
    images: Callable[[], Iterator[torch.Tensor]]
    colours: torch.Tensor | None
    count: int
    training: TrainConfig
    _moments: FeatureMoments | None = field(default=None, repr=False)
    _alignment: FeatureMoments | None = field(default=None, repr=False)

    @property
    def moments(self) -> FeatureMoments:
        """The stride-8 features' moments, from one pass over ``features()`` the first time."""
        self._measure()
        return self._moments

    def measured_share(self) -> float:
        """:attr:`position_share`, measuring the moments first if need be."""
        self._measure()
        return self.position_share

    def _measure(self) -> None:
        """Both moments, in one pass over ``features()``, unless measured already."""
        if self._moments is None:
            levels = (batch[ALIGNMENT_LEVEL] for batch in self.features())
            views = (lambda features: features, alignment_grid)
            self._moments, self._alignment = FeatureMoments.of_views(levels, views)

    @property
    def position_share(self) -> float | None:
        """How much of the variance of the stride-8 features, on their :func:`alignment_grid`,
        position explains, rounded to 4 digits; None while the moments are not measured."""
        return None if self._alignment is None else round(self._alignment.position_share(), 4)


class ScoringTerm(Protocol):
    """An added scoring term (see the module's docstring)."""

    name: ClassVar[str]  # its key in the scoring settings and prefix in the weights file
    label: ClassVar[str]  # what it is, in messages: "patch memory"

    def term_map(
        self, features: list[torch.Tensor], images: torch.Tensor, scoring: Scoring
    ) -> torch.Tensor:
        """The ``(B, h, w)`` map of a batch, its encoder ``features`` and normalised
        ``images``, as ``scoring`` says."""
        ...

    def state(self) -> dict[str, torch.Tensor]:
        """The tensors a weights file stores, each named ``<name>.<tensor>``."""
        ...

    @classmethod
    def from_weights(
        cls, tensors: dict[str, torch.Tensor], channels: tuple[int, ...], scoring: Scoring
    ) -> ScoringTerm:
        """Rebuild from a weights file's ``tensors`` for an encoder of ``channels``, checked;
        raises :class:`~hfr.errors.ModelFormatError` naming what does not fit."""
        ...

    @classmethod
    def fit(cls, evidence: TrainingEvidence, scoring: Scoring) -> ScoringTerm:
        """Fit from the training images."""
        ...

    @staticmethod
    def describe(scoring: Scoring) -> str:
        """What the term adds, in the model card's words ("the distance of ...")."""
        ...

    @staticmethod
    def chosen_weight(evidence: TrainingEvidence, scoring: Scoring) -> tuple[float, str] | None:
        """The weight ``"auto"`` chooses from ``evidence`` and why; None without such a rule."""
        ...

    @staticmethod
    def advice(evidence: TrainingEvidence, scoring: Scoring) -> str | None:
        """A sentence when the weight set by hand and the measured evidence disagree; else
        None (also when the evidence it needs was not measured)."""
        ...
