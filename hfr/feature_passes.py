"""The training images' encoder features, as training reads them: all at once into the feature
cache (the encoder is frozen and nothing is augmented, so one pass serves every epoch), or batch
by batch in one more pass where there is no cache."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import torch

from hfr.images import ImageInput
from hfr.model import HFR
from hfr.progress import ProgressCallback, batches
from hfr.scoring.terms.colour import pooled_colour

logger = logging.getLogger(__name__)


def encode_all(
    model: HFR,
    images: Sequence[ImageInput],
    batch_size: int,
    progress: bool,
    report: ProgressCallback,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Encoder features of every image, ``[f1, f2, f3]`` each ``(N, C_k, H_k, W_k)``, on device,
    and the mean colour of each of its cells (:func:`~.colour.pooled_colour`), from the same
    pass, so that the colour statistics need not read the images again."""
    levels: list[list[torch.Tensor]] = [[], [], []]
    colours = []
    with torch.inference_mode():
        for chunk in batches(images, batch_size, "features", progress, report):
            batch = model.preprocess(chunk)
            for level, tensor in zip(levels, model.encode(batch), strict=True):
                level.append(tensor)
            colours.append(pooled_colour(batch))
    logger.info("encoded %d training images once (feature cache)", len(images))
    return [torch.cat(level) for level in levels], torch.cat(colours)


def image_batches(
    model: HFR,
    images: Sequence[ImageInput],
    batch_size: int,
    progress: bool,
    report: ProgressCallback,
) -> Iterator[torch.Tensor]:
    """The training images as normalised input batches, in one more pass over them."""
    for chunk in batches(images, batch_size, "training statistics", progress, report):
        with torch.inference_mode():
            yield model.preprocess(chunk)


def feature_batches(
    model: HFR,
    images: Sequence[ImageInput],
    cache: list[torch.Tensor] | None,
    batch_size: int,
    progress: bool,
    report: ProgressCallback,
) -> Iterator[list[torch.Tensor]]:
    """The training images' features ``[f1, f2, f3]`` batch by batch: from the feature cache,
    or from one more encoder pass without it."""
    if cache is not None:
        yield from (
            list(levels) for levels in zip(*(f.split(batch_size) for f in cache), strict=True)
        )
        return
    for chunk in batches(images, batch_size, "training statistics", progress, report):
        with torch.inference_mode():
            yield model.encode(model.preprocess(chunk))
