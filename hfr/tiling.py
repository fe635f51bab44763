"""Tiles: a model whose config sets ``preprocessing.tile`` sees each image as overlapping tiles of
that many image pixels, each stretched to the network's input, and trains on such tiles. Its map
is the tiles' maps put back in place (the larger value where tiles overlap) and its image score
the largest tile score, so that a defect a few pixels wide in a large image keeps the size it has
in the tile, not the size it would shrink to in one pass over the whole image.

A map is stitched at the tiles' working scale (the input's pixels per tile pixel), so that memory
follows the image's size at that scale and a tile's map is pasted without interpolation when
the tile fits in the image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import torch

from hfr.config import DEFAULT_INPUT_SIZE, TILE_OVERLAP, Preprocessing
from hfr.images import ImageInput, image_shape, load_rgb
from hfr.preprocessing import Box, reduction, to_batch
from hfr.scoring import maps as anomaly
from hfr.scoring.maps import AnomalyOutput


def tile_starts(length: int, tile: int) -> list[int]:
    """Where the tiles start along a side of ``length`` pixels: evenly spread from 0 to
    ``length - tile``, neighbours overlapping by at least ``TILE_OVERLAP`` of a tile; one
    tile when the side fits in it.

    Example:
        >>> tile_starts(1000, 400), tile_starts(300, 400)
        ([0, 300, 600], [0])
    """
    if length <= tile:
        return [0]
    stride = tile * (1 - TILE_OVERLAP)
    count = math.ceil((length - tile) / stride) + 1
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def tile_boxes(image_size: tuple[int, int], tile: tuple[int, int]) -> list[Box]:
    """The tiles ``(top, left, height, width)`` of an image of ``image_size``, row by row;
    a side shorter than the tile gives tiles as long as that side.

    Example:
        >>> tile_boxes((300, 700), (256, 512))
        [(0, 0, 256, 512), (0, 188, 256, 512), (44, 0, 256, 512), (44, 188, 256, 512)]
    """
    height, width = min(tile[0], image_size[0]), min(tile[1], image_size[1])
    return [
        (top, left, height, width)
        for top in tile_starts(image_size[0], height)
        for left in tile_starts(image_size[1], width)
    ]


class TiledImages(Sequence[np.ndarray]):
    """The tiles of ``images``, image after image, as RGB arrays: what training reads in place
    of the images. Each image is decoded when one of its tiles is first read and kept until a
    tile of another image is read, so that reading the tiles in order decodes each image once.
    ``owners[i]`` is the index of the image that tile ``i`` comes from."""

    def __init__(self, images: Sequence[ImageInput], tile: tuple[int, int]) -> None:
        self.images = list(images)
        self._tiles = [
            (index, box)
            for index, image in enumerate(self.images)
            for box in tile_boxes(image_shape(image), tile)
        ]
        self.owners = np.array([index for index, _ in self._tiles], dtype=np.int64)
        self._decoded: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self._tiles)

    def __getitem__(self, index: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        owner, (top, left, height, width) = self._tiles[index]
        if self._decoded is None or self._decoded[0] != owner:
            self._decoded = (owner, load_rgb(self.images[owner]))
        return self._decoded[1][top : top + height, left : left + width]


def image_maxima(tile_scores: np.ndarray, owners: np.ndarray) -> np.ndarray:
    """Each image's score: the largest score of its tiles (``owners`` as in
    :class:`TiledImages`).

    Example:
        >>> image_maxima(np.array([0.1, 0.4, 0.2, 0.3]), np.array([0, 0, 1, 1]))
        array([0.4, 0.3])
    """
    maxima = np.full(int(owners.max()) + 1, -np.inf)
    np.maximum.at(maxima, owners, tile_scores)
    return maxima


def working_size(image_size: tuple[int, int], preprocessing: Preprocessing) -> tuple[int, int]:
    """The size of an image of ``image_size`` at its tiles' scale: the input's pixels per tile
    pixel (the size of a tiled model's map with ``map_size="input"``).

    Example:
        >>> working_size((3000, 4000), Preprocessing((256, 256), tile=(512, 512)))
        (1500, 2000)
    """
    (input_height, input_width), (tile_height, tile_width) = (
        preprocessing.input_size,
        preprocessing.tile,
    )
    return (
        max(1, round(image_size[0] * input_height / tile_height)),
        max(1, round(image_size[1] * input_width / tile_width)),
    )


def tiled_forward(
    forward: Callable[[torch.Tensor], AnomalyOutput],
    pixels: np.ndarray,
    preprocessing: Preprocessing,
    *,
    device: torch.device,
    batch_size: int,
    level_maps: bool,
) -> AnomalyOutput:
    """One image's output, ``(1, H, W)`` maps at its :func:`working_size` and its score, from
    ``forward`` on its tiles, ``batch_size`` at a time: each tile's map (and, with
    ``level_maps``, its three level maps) pasted in place, the larger value kept where tiles
    overlap, and the largest tile score."""
    size = working_size(pixels.shape[:2], preprocessing)
    boxes = tile_boxes(pixels.shape[:2], preprocessing.tile)
    scale = (size[0] / pixels.shape[0], size[1] / pixels.shape[1])
    stretched = replace(preprocessing, tile=None)
    layers = 4 if level_maps else 1  # the map, then the three levels
    maps = torch.full((layers, *size), -math.inf, device=device)
    score = torch.tensor(-math.inf, device=device)
    for start in range(0, len(boxes), batch_size):
        chunk = boxes[start : start + batch_size]
        crops = [pixels[t : t + h, left : left + w] for t, left, h, w in chunk]
        output = forward(to_batch(crops, stretched, device))
        score = torch.maximum(score, output.scores.float().max())
        for index, (top, left, height, width) in enumerate(chunk):
            bottom, right = round((top + height) * scale[0]), round((left + width) * scale[1])
            top, left = round(top * scale[0]), round(left * scale[1])
            tile_maps = [output.maps[index], *(level[index] for level in output.level_maps)]
            size_here = (bottom - top, right - left)
            pasted = torch.cat(
                [anomaly.resize_maps(m[None].float(), size_here) for m in tile_maps[:layers]]
            )
            region = maps[:, top:bottom, left:right]
            torch.maximum(region, pasted, out=region)
    return AnomalyOutput(maps=maps[:1], scores=score[None], level_maps=list(maps[1:, None]))


def tile_note(image_size: tuple[int, int], preprocessing: Preprocessing) -> str:
    """What a result says of its tiles, and when the image is smaller than a tile along a side
    (its tiles then reach the input enlarged: a scale the model was not trained at).

    Example:
        >>> tile_note((3000, 4000), Preprocessing((256, 256), tile=(512, 512)))
        'scored in 88 tiles of 512x512 px (8 x 11), each at 256x256'
        >>> tile_note((20, 30), Preprocessing((64, 64), tile=(128, 128)))[:77]
        'scored in 1 tile of 30x20 px (1 x 1), each at 64x64; the image is smaller tha'
    """
    boxes = tile_boxes(image_size, preprocessing.tile)
    rows = len({box[0] for box in boxes})
    _, _, height, width = boxes[0]
    input_height, input_width = preprocessing.input_size
    tiles = f"{len(boxes)} tile{'s' if len(boxes) > 1 else ''}"
    note = (
        f"scored in {tiles} of {width}x{height} px ({rows} x {len(boxes) // rows}), "
        f"each at {input_width}x{input_height}"
    )
    if (height, width) == preprocessing.tile:
        return note
    tile_height, tile_width = preprocessing.tile
    return (
        f"{note}; the image is smaller than the model's {tile_width}x{tile_height} px tiles, "
        "so the network sees it at another scale than in training: its score is less reliable"
    )


def resolution_summary(source: tuple[int, int], preprocessing: Preprocessing) -> str:
    """How images of ``source`` size (height, width) reach the network, in words, with the
    input's pixels (which the time per image follows) against a ``DEFAULT_INPUT_SIZE`` square's
    where it has more.

    Example:
        >>> resolution_summary((900, 900), Preprocessing((256, 256)))
        'trained at 256x256 from 900x900 images (each side 3.5x smaller)'
        >>> resolution_summary((1200, 1600), Preprocessing((432, 576)))[41:]
        '(each side 2.8x smaller; 3.8x the pixels and time per image of 256x256)'
        >>> resolution_summary((512, 512), Preprocessing((512, 512)))[39:]
        '(at their own size; 4x the pixels and time per image of 256x256)'
        >>> resolution_summary((3000, 4000), Preprocessing((256, 256), tile=(512, 512)))
        'trained on 512x512 px tiles at 256x256 from 4000x3000 images (88 tiles each)'
    """
    height, width = preprocessing.input_size
    images = f"from {source[1]}x{source[0]} images"
    if preprocessing.tile is not None:
        tiles = len(tile_boxes(source, preprocessing.tile))
        tile = f"{preprocessing.tile[1]}x{preprocessing.tile[0]}"
        return f"trained on {tile} px tiles at {width}x{height} {images} ({tiles} tiles each)"
    factor = reduction(source, preprocessing)
    if f"{factor:.2g}" == "1":
        scale = "at their own size"
    elif factor > 1:
        scale = f"each side {factor:.2g}x smaller"
    else:
        scale = f"enlarged {1 / factor:.2g}x"
    if height * width > DEFAULT_INPUT_SIZE**2:
        cost = height * width / DEFAULT_INPUT_SIZE**2
        square = f"{DEFAULT_INPUT_SIZE}x{DEFAULT_INPUT_SIZE}"
        scale += f"; {cost:.2g}x the pixels and time per image of {square}"
    return f"trained at {width}x{height} {images} ({scale})"


def tiles_of(images: Sequence[ImageInput], preprocessing: Preprocessing) -> Sequence[ImageInput]:
    """What the network is trained and calibrated on: ``images`` themselves, or their
    :class:`TiledImages` when ``preprocessing`` has tiles."""
    return images if preprocessing.tile is None else TiledImages(images, preprocessing.tile)


def image_scores_of(scores: np.ndarray, items: Sequence[ImageInput]) -> np.ndarray:
    """Per-image scores from the scores of :func:`tiles_of`'s ``items``: the largest of each
    image's tiles, or ``scores`` as they are when the items are the images."""
    return image_maxima(scores, items.owners) if isinstance(items, TiledImages) else scores


__all__ = [
    "TiledImages",
    "image_maxima",
    "image_scores_of",
    "resolution_summary",
    "tile_boxes",
    "tile_note",
    "tile_starts",
    "tiled_forward",
    "tiles_of",
    "working_size",
]
