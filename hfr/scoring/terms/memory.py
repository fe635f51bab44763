"""A memory of normal patches: the distance of each patch to its nearest normal one.

A reconstruction rebuilds what its neighbours suggest, so a defect that spreads over many
cells, or a part bent into a shape the decoder can still continue, leaves small residuals.
This term asks instead whether any training image held a patch like it, wherever that patch
was (PatchCore's idea, Roth et al. 2022). Each stride-16 cell is described by its stride-8
features (pooled to stride 16) and its stride-16 features; with ``scoring.memory_stride`` 32 or
64 (a larger input's, so that a cell sees as much of the part as at 256x256) those descriptions
are averaged over 2 x 2 or 4 x 4 cells. A greedy coreset keeps a share of
the training images' vectors (``TrainConfig.memory_fraction``, 5 % by default) up to a limit
(``TrainConfig.memory_limit``), and a cell's term is the distance to the nearest one. Beyond the
limit the coreset is chosen from a seeded random sample of ``limit / fraction`` vectors, as many
as a training set at the limit has: the memory's search and its coreset then cost the same
however many training images there are. ``scoring.memory_pooling`` says whether each feature
is first averaged over its ``k`` x ``k`` neighbourhood: 1 (none, the default) or 3
(PatchCore's, whose coarser vectors cost bottle's AUPRO). ``scoring.memory_context`` appends
that many times each feature's mean over its 3 x 3 neighbourhood to each vector (PatchCore's
neighbourhood, kept beside the cell's own features rather than in their place), so that a cell
matches a normal one only where its surroundings match too. Vectors wider than
``MAX_FULL_SEARCH_DIMS`` numbers (``TrainConfig.memory_search_dims``) are searched in the kept
vectors' first principal directions and their distance is then measured in full: the search,
one matrix product, costs in proportion to the numbers searched. See docs/method.md, "Patch
memory".
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from hfr.config import (
    AUTO,
    DEFAULT_MEMORY_FRACTION,
    DEFAULT_MEMORY_LIMIT,
    DEFAULT_MEMORY_POOLING,
    MAX_FULL_SEARCH_DIMS,
    MEMORY_CONTEXT_SIDE,
    MEMORY_SEARCH_SHARE,
    MEMORY_STRIDES,
    MIN_MEMORY,
    SEARCH_ALL,
)
from hfr.errors import ConfigError, ModelFormatError, TrainingError
from hfr.scoring.terms.base import TrainingEvidence

if TYPE_CHECKING:
    from hfr.config import Scoring

logger = logging.getLogger(__name__)

SEARCH_CHUNK = 256  # memory rows per block of the nearest-neighbour search
STRIDE = MEMORY_STRIDES[0]  # input pixels per cell of the encoder's deepest level
STATE_PREFIX = "memory."
STATE_KEY = STATE_PREFIX + "bank"
PROJECTION_KEY = STATE_PREFIX + "projection"


def patch_vectors(
    features: list[torch.Tensor],
    pooling: int = DEFAULT_MEMORY_POOLING,
    context: float = 0.0,
    stride: int = STRIDE,
) -> torch.Tensor:
    """``(B, C8 + C16, H/stride, W/stride)`` patch descriptions from encoder features
    ``[f1, f2, f3]``, each feature first averaged over its ``pooling`` x ``pooling``
    neighbourhood; with a ``context`` above 0, followed by ``context`` times the same
    description averaged over ``MEMORY_CONTEXT_SIDE`` x ``MEMORY_CONTEXT_SIDE`` neighbourhoods
    (twice the channels). A ``stride`` above 16 averages the stride-16 descriptions over
    ``stride / 16`` cells a side (a partial cell at the bottom or right edge over those there).

    Example:
        >>> features = [torch.randn(2, 4, 16, 16), torch.randn(2, 6, 8, 8), torch.randn(2, 8, 4, 4)]
        >>> tuple(patch_vectors(features).shape), tuple(patch_vectors(features, 1, 2.0).shape)
        ((2, 14, 4, 4), (2, 28, 4, 4))
        >>> tuple(patch_vectors(features, stride=32).shape)
        (2, 14, 2, 2)
    """
    vectors = _pooled_vectors(features, pooling)
    if context > 0:
        vectors = torch.cat([vectors, context * _pooled_vectors(features, MEMORY_CONTEXT_SIDE)], 1)
    if stride == STRIDE:
        return vectors
    return F.avg_pool2d(vectors, stride // STRIDE, ceil_mode=True)


def _pooled_vectors(features: list[torch.Tensor], pooling: int) -> torch.Tensor:
    """The stride-8 and stride-16 features, each averaged over ``pooling`` x ``pooling``
    neighbourhoods, at stride 16."""
    fine, coarse = features[1].float(), features[2].float()
    if pooling > 1:
        fine, coarse = (
            F.avg_pool2d(level, pooling, 1, pooling // 2, count_include_pad=False)
            for level in (fine, coarse)
        )
    return torch.cat([F.avg_pool2d(fine, 2), coarse], 1)


def greedy_coreset(vectors: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of ``count`` rows of ``vectors`` (N, C) chosen so that every row lies near one of
    them: each next row is the one farthest from those chosen (k-centre greedy), starting from
    row 0, so the choice is deterministic.

    Example:
        >>> points = torch.tensor([[0.0], [0.1], [5.0], [9.0], [9.2]])
        >>> greedy_coreset(points, 3).tolist()
        [0, 4, 2]
    """
    count = min(count, len(vectors))
    norms = vectors.pow(2).sum(1)

    def squared_distances(index: torch.Tensor | int) -> torch.Tensor:
        # |v|^2 - 2 v.c + |c|^2: one matrix-vector product, no (N, C) temporary per step
        return norms - 2 * (vectors @ vectors[index]) + norms[index]

    chosen = torch.empty(count, dtype=torch.long)
    chosen[0] = 0
    nearest = squared_distances(0)
    for index in range(1, count):
        chosen[index] = nearest.argmax()
        nearest = torch.minimum(nearest, squared_distances(chosen[index]))
    return chosen


def kept_vectors(
    vectors: torch.Tensor, fraction: float, limit: int = DEFAULT_MEMORY_LIMIT
) -> torch.Tensor:
    """The rows of ``vectors`` (N, C) a memory keeps: the :func:`greedy_coreset` of
    ``fraction`` of them, at least ``MIN_MEMORY`` and at most ``limit``.

    Example:
        >>> tuple(kept_vectors(torch.randn(1000, 4), 0.05).shape)
        (50, 4)
    """
    count = max(MIN_MEMORY, min(limit, round(fraction * len(vectors))))
    return vectors[greedy_coreset(vectors, count)].clone()


def sampling_rate(total: int, fraction: float, limit: int) -> float:
    """The share of ``total`` patch vectors a memory chooses its coreset from: all of them
    while ``fraction`` of them stays within ``limit``, else ``limit / fraction`` of them.

    Example:
        >>> sampling_rate(48_128, 0.05, 4096), sampling_rate(163_840, 0.05, 4096)
        (1.0, 0.5)
    """
    return 1.0 if fraction * total <= limit else limit / fraction / total


def nearest_distances(
    queries: torch.Tensor, bank: torch.Tensor, bank_norms: torch.Tensor | None = None
) -> torch.Tensor:
    """``(N,)`` Euclidean distance of each row of ``queries`` (N, C) to its nearest row of
    ``bank`` (M, C), whose squared norms ``bank_norms`` are computed when not given.

    ``|q - b|^2 = |q|^2 + (|b|^2 - 2 q.b)``: the bracket is one matrix product with the bank's
    norms as its bias, taken ``SEARCH_CHUNK`` bank rows at a time so that each ``(N, chunk)``
    block stays in cache; ``|q|^2`` is added after the minimum. The bank's size is fixed, so the
    loop unrolls into a fixed graph when traced (ONNX export).

    Example:
        >>> bank = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
        >>> nearest_distances(torch.tensor([[3.0, 3.0], [0.0, 1.0]]), bank).tolist()
        [1.0, 1.0]
    """
    if bank_norms is None:
        bank_norms = bank.pow(2).sum(1)
    nearest = None
    for _, distances in _distance_blocks(queries, bank, bank_norms):
        block = distances.amin(1)
        nearest = block if nearest is None else torch.minimum(nearest, block)
    return (nearest + queries.pow(2).sum(1)).clamp_min(0).sqrt()


def _distance_blocks(
    queries: torch.Tensor, bank: torch.Tensor, bank_norms: torch.Tensor
) -> Iterator[tuple[int, torch.Tensor]]:
    """``|b|^2 - 2 q.b`` of ``queries`` against ``SEARCH_CHUNK`` rows of ``bank`` at a time, each
    ``(N, chunk)`` block with the index of its first bank row."""
    for start in range(0, len(bank), SEARCH_CHUNK):
        rows = slice(start, start + SEARCH_CHUNK)
        yield start, torch.addmm(bank_norms[rows], queries, bank[rows].T, alpha=-2)


def nearest_rows(
    queries: torch.Tensor, bank: torch.Tensor, bank_norms: torch.Tensor
) -> torch.Tensor:
    """``(N,)`` index of the nearest row of ``bank`` (M, C) to each row of ``queries`` (N, C),
    searched as :func:`nearest_distances` searches, ``SEARCH_CHUNK`` bank rows at a time.

    Example:
        >>> bank = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
        >>> nearest_rows(torch.tensor([[3.0, 3.0], [0.0, 1.0]]), bank, bank.pow(2).sum(1)).tolist()
        [1, 0]
    """
    nearest = rows = None
    for start, distances in _distance_blocks(queries, bank, bank_norms):
        values, found = distances.min(1)
        if nearest is None:
            nearest, rows = values, found
        else:
            closer = values < nearest
            nearest = torch.where(closer, values, nearest)
            rows = torch.where(closer, found + start, rows)
    return rows


def vector_width(channels: tuple[int, ...], context: float) -> int:
    """The numbers in each patch vector of an encoder of ``channels`` (strides 4, 8, 16) with
    ``scoring.memory_context`` ``context``.

    Example:
        >>> vector_width((16, 32, 96), 0.0), vector_width((16, 32, 96), 2.0)
        (128, 256)
    """
    return (channels[1] + channels[2]) * (2 if context > 0 else 1)


def search_dims(width: int, setting: int | str = AUTO) -> int | str:
    """How many principal directions the memory of ``width``-number vectors is searched in, by
    ``TrainConfig.memory_search_dims`` ``setting``: ``"all"`` (``SEARCH_ALL``) for the vectors
    themselves; ``"auto"``: all up to ``MAX_FULL_SEARCH_DIMS`` numbers, ``MEMORY_SEARCH_SHARE`` of
    them beyond.

    Example:
        >>> search_dims(128), search_dims(384), search_dims(384, 64), search_dims(128, 200)
        ('all', 128, 64, 'all')
    """
    if setting == AUTO:
        wide = width > MAX_FULL_SEARCH_DIMS
        setting = round(width * MEMORY_SEARCH_SHARE) if wide else SEARCH_ALL
    return SEARCH_ALL if setting == SEARCH_ALL or setting >= width else setting


def principal_directions(vectors: torch.Tensor, count: int) -> torch.Tensor:
    """``(C, count)`` orthonormal columns: the first ``count`` principal directions of the rows of
    ``vectors`` (N, C), computed in float64.

    Example:
        >>> line = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
        >>> torch.allclose(principal_directions(line, 1).abs(), torch.full((2, 1), 0.5**0.5))
        True
    """
    centred = vectors.double() - vectors.double().mean(0)
    return torch.linalg.svd(centred, full_matrices=False).Vh[:count].T.float().contiguous()


class PatchMemory(nn.Module):
    """The kept normal patch vectors, an ``(N, C)`` buffer, the ``pooling``, ``context`` and
    ``stride`` of :func:`patch_vectors` that made them, and the distance map to them. With a
    ``projection`` (``(C, D)`` orthonormal columns, ``D < C``), the nearest vector is searched
    in those ``D`` directions and the distance to it measured in all ``C``.

    Example:
        >>> features = [None, torch.randn(8, 2, 8, 8), torch.randn(8, 3, 4, 4)]  # 8 images
        >>> memory = PatchMemory.from_features([features], fraction=0.25)  # of 128 patches
        >>> tuple(memory.bank.shape), tuple(memory(features).shape)
        ((32, 5), (8, 4, 4))
    """

    name = "memory"
    label = "patch memory"

    def __init__(
        self,
        bank: torch.Tensor,
        *,
        pooling: int = DEFAULT_MEMORY_POOLING,
        context: float = 0.0,
        stride: int = STRIDE,
        projection: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("bank", bank.float())
        self.register_buffer("projection", None if projection is None else projection.float())
        # the searched vectors and the search's bias, computed once from the bank: never saved
        searched = self.bank if projection is None else self.bank @ self.projection
        self.register_buffer("bank_norms", searched.pow(2).sum(1), persistent=False)
        reduced = None if projection is None else searched
        self.register_buffer("searched_bank", reduced, persistent=False)
        self.pooling = pooling
        self.context = context
        self.stride = stride

    @property
    def search_dims(self) -> int:
        """How many numbers of each vector the search compares."""
        searched = self.bank if self.projection is None else self.projection
        return searched.shape[1]

    @classmethod
    def from_features(
        cls,
        batches: Iterable[list[torch.Tensor]],
        *,
        pooling: int = DEFAULT_MEMORY_POOLING,
        context: float = 0.0,
        stride: int = STRIDE,
        fraction: float = DEFAULT_MEMORY_FRACTION,
        limit: int = DEFAULT_MEMORY_LIMIT,
        images: int | None = None,
        dims: int | str = AUTO,
    ) -> PatchMemory:
        """The coreset of the patch vectors of ``images`` normal images (``None``: as many as
        the batches hold, read first), given as batches of encoder features ``[f1, f2, f3]``;
        beyond ``limit`` kept vectors, of a seeded random sample (:func:`sampling_rate`) taken
        batch by batch, so the vectors of a large set are never held at once; searched in the
        kept vectors' first :func:`search_dims` principal directions (``dims``)."""
        batches = iter(batches) if images is not None else list(batches)
        if images is None:
            images = sum(len(levels[-1]) for levels in batches)
        generator = torch.Generator().manual_seed(0)
        parts, rate = [], 1.0
        for levels in batches:
            vectors = patch_vectors(levels, pooling, context, stride).detach()
            vectors = vectors.permute(0, 2, 3, 1).flatten(0, 2)
            if not parts:
                total = images * (len(vectors) // max(1, len(levels[-1])))
                rate = sampling_rate(total, fraction, limit)
            if rate < 1.0:
                sampled = torch.rand(len(vectors), generator=generator) < rate
                vectors = vectors[sampled.to(vectors.device)]
            parts.append(vectors)
        if not parts or sum(len(part) for part in parts) < 2:
            raise TrainingError("a patch memory needs the features of one image or more")
        bank = kept_vectors(torch.cat(parts), fraction, limit)
        count = search_dims(bank.shape[1], dims)
        layout = {"pooling": pooling, "context": context, "stride": stride}
        if count == SEARCH_ALL or count >= len(bank):  # fewer vectors than directions asked for
            return cls(bank, **layout)
        return cls(bank, **layout, projection=principal_directions(bank, count))

    @classmethod
    def from_state(
        cls,
        state: dict[str, torch.Tensor],
        channels: int,
        *,
        pooling: int,
        context: float = 0.0,
        stride: int = STRIDE,
    ) -> PatchMemory:
        """Rebuild from the ``memory.bank`` (and ``memory.projection``, where the search is
        reduced) tensors of a weights file, checked: ``channels`` numbers per vector."""
        bank, projection = state.get(STATE_KEY), state.get(PROJECTION_KEY)
        if bank is None:
            raise ModelFormatError(f"the weights file lacks {STATE_KEY!r}")
        if bank.dtype != torch.float32 or bank.dim() != 2 or bank.shape[1] != channels:
            raise ModelFormatError(
                f"{STATE_KEY} is {bank.dtype} {tuple(bank.shape)}, expected float32 "
                f"(N, {channels}) for this encoder"
            )
        if len(bank) == 0 or not torch.isfinite(bank).all():
            raise ModelFormatError(f"{STATE_KEY} is empty or holds NaN or infinite values")
        if projection is not None and (
            projection.dtype != torch.float32
            or projection.dim() != 2
            or projection.shape[0] != channels
            or not 1 <= projection.shape[1] < channels
            or not torch.isfinite(projection).all()
        ):
            raise ModelFormatError(
                f"{PROJECTION_KEY} is {projection.dtype} {tuple(projection.shape)}, expected "
                f"finite float32 ({channels}, D) with 1 <= D < {channels}"
            )
        return cls(bank, pooling=pooling, context=context, stride=stride, projection=projection)

    def state(self) -> dict[str, torch.Tensor]:
        """The tensors a weights file stores."""
        if self.projection is None:
            return {STATE_KEY: self.bank}
        return {STATE_KEY: self.bank, PROJECTION_KEY: self.projection}

    def distances(self, vectors: torch.Tensor) -> torch.Tensor:
        """``(B, H, W)`` distance of each ``(B, C, H, W)`` patch vector to its nearest memory."""
        if vectors.shape[1] != self.bank.shape[1]:
            raise ConfigError(
                f"the patch memory holds {self.bank.shape[1]}-channel vectors, got "
                f"{vectors.shape[1]}: features of another encoder"
            )
        batch, channels, height, width = vectors.shape
        queries = vectors.float().permute(0, 2, 3, 1).reshape(-1, channels)
        if self.projection is None:
            nearest = nearest_distances(queries, self.bank, self.bank_norms)
        else:
            rows = nearest_rows(queries @ self.projection, self.searched_bank, self.bank_norms)
            nearest = torch.linalg.vector_norm(queries - self.bank[rows], dim=1)
        return nearest.view(batch, height, width)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The ``(B, H/stride, W/stride)`` map of encoder features ``[f1, f2, f3]``."""
        return self.distances(patch_vectors(features, self.pooling, self.context, self.stride))

    # --- the scoring-term protocol (hfr.scoring.terms.base.ScoringTerm) ---

    def term_map(
        self, features: list[torch.Tensor], images: torch.Tensor, scoring: Scoring
    ) -> torch.Tensor:
        """The ``(B, H/stride, W/stride)`` map of the encoder features."""
        return self(features)

    @classmethod
    def fit(cls, evidence: TrainingEvidence, scoring: Scoring) -> PatchMemory:
        """The coreset of the training images' patch vectors."""
        memory = cls.from_features(
            evidence.features(),
            pooling=scoring.memory_pooling,
            context=scoring.memory_context,
            stride=scoring.memory_stride,
            fraction=evidence.training.memory_fraction,
            limit=evidence.training.memory_limit,
            images=evidence.count,
            dims=evidence.training.memory_search_dims,
        )
        width, dims = memory.bank.shape[1], memory.search_dims
        searched = "" if dims == width else f", searched in {dims} of their {width} directions"
        logger.info("patch memory: %d of the training patches%s", len(memory.bank), searched)
        return memory

    @classmethod
    def from_weights(
        cls, tensors: dict[str, torch.Tensor], channels: tuple[int, ...], scoring: Scoring
    ) -> PatchMemory:
        """Rebuild from a weights file for an encoder of ``channels``, checked."""
        context = scoring.memory_context
        width = vector_width(channels, context)
        return cls.from_state(
            tensors,
            width,
            pooling=scoring.memory_pooling,
            context=context,
            stride=scoring.memory_stride,
        )

    @staticmethod
    def describe(scoring: Scoring) -> str:
        """The card's phrase."""
        pooling = scoring.memory_pooling
        pooled = "" if pooling == 1 else f" (features averaged {pooling}x{pooling})"
        side = MEMORY_CONTEXT_SIDE
        context = (
            f", described with its {side}x{side} neighbourhood (weight {scoring.memory_context:g}),"
            if scoring.memory_context > 0
            else ""
        )
        return (
            f"the distance of each stride-{scoring.memory_stride} patch{pooled}{context} to the "
            "nearest normal training patch"
        )

    @staticmethod
    def chosen_weight(evidence: TrainingEvidence, scoring: Scoring) -> None:
        """No rule: the memory's weight is a number."""
        return None

    @staticmethod
    def advice(evidence: TrainingEvidence, scoring: Scoring) -> None:
        """Nothing to advise."""
        return None


TERM = PatchMemory
