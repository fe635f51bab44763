"""RGB uint8 images to the encoder's normalised input batch, as a :class:`Preprocessing` says."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from hfr.config import CONTEXT_MIN_INPUT, DEFAULT_INPUT_SIZE, MAX_INPUT_SIDE, Preprocessing
from hfr.images import ImageInput, image_shape

Box = tuple[int, int, int, int]  # top, left, height, width
ASPECT_SAMPLE = 64  # training images whose sizes decide how images are fitted
ASPECT_TOLERANCE = 0.02  # aspects within 2 % of the median count as one
ENLARGEMENT_NOTE_FACTOR = 2.0  # an image enlarged more than this along a side gets a note
# Training images shrunk more than this along a side get a hint (hfr.preprocessing.reduction_hint)
REDUCTION_HINT_FACTOR = 4.0


def sampled_shapes(images: Sequence[ImageInput]) -> list[tuple[int, int]]:
    """The ``(height, width)`` of up to ``ASPECT_SAMPLE`` of ``images``, spread evenly over the
    list (files: from their headers)."""
    return [image_shape(image) for image in images[:: max(1, len(images) // ASPECT_SAMPLE)]]


def typical_size(images: Sequence[ImageInput]) -> tuple[int, int]:
    """The median height and width of :func:`sampled_shapes` of ``images``.

    Example:
        >>> typical_size([np.zeros((300, 400, 3), np.uint8), np.zeros((500, 600, 3), np.uint8)])
        (400, 500)
    """
    heights, widths = zip(*sampled_shapes(images), strict=True)
    return int(np.median(heights)), int(np.median(widths))


def reduction(source: tuple[int, int], preprocessing: Preprocessing) -> float:
    """How many times smaller an untiled network sees an image of ``source`` size along its
    more reduced side (below 1: enlarged).

    Example:
        >>> reduction((900, 1200), Preprocessing((256, 256)))
        4.6875
    """
    _, _, height, width = content_box(source, preprocessing)
    return max(source[0] / height, source[1] / width)


def reduction_hint(source: tuple[int, int], preprocessing: Preprocessing) -> str | None:
    """Advice when an untiled network sees images of ``source`` size more than
    ``REDUCTION_HINT_FACTOR`` times smaller: what size of defect then shrinks below four input
    pixels, and the options that keep it; None otherwise.

    Example:
        >>> reduction_hint((3000, 4000), Preprocessing((256, 256)))[:60]
        'a defect under about 62 px across then covers fewer than 4 i'
    """
    factor = reduction(source, preprocessing)
    if preprocessing.tile is not None or factor <= REDUCTION_HINT_FACTOR:
        return None
    return (
        f"a defect under about {4 * factor:.0f} px across then covers fewer than 4 input "
        "pixels; a larger --image-size or --tile keeps such defects (docs/usage.md, 'Large "
        "images: tiles')"
    )


def auto_input_size(source: tuple[int, int], budget: int) -> tuple[int, int]:
    """The input ``(height, width)`` for images (or tiles) of ``source`` size when the input size
    is ``"auto"``: their aspect, with as many pixels as they have but no more than ``budget``
    and no fewer than a ``DEFAULT_INPUT_SIZE`` square's, each side a multiple of 16 in
    [``CONTEXT_MIN_INPUT``, ``MAX_INPUT_SIDE``].

    Example:
        >>> auto_input_size((900, 900), 512 * 512), auto_input_size((512, 512), 512 * 512)
        ((512, 512), (512, 512))
        >>> auto_input_size((600, 800), 512 * 512), auto_input_size((460, 1130), 512 * 512)
        ((432, 576), (320, 800))
        >>> auto_input_size((28, 28), 512 * 512), auto_input_size((300, 400), 512 * 512)
        ((256, 256), (288, 400))
    """
    floor = DEFAULT_INPUT_SIZE**2
    pixels = min(max(source[0] * source[1], floor), max(budget, floor))
    aspect = source[0] / source[1]
    sides = (math.sqrt(pixels * aspect), math.sqrt(pixels / aspect))
    return tuple(
        min(MAX_INPUT_SIDE, max(CONTEXT_MIN_INPUT, 16 * math.floor(side / 16 + 1e-6)))
        for side in sides
    )


def fitted_resize(images: Sequence[ImageInput]) -> str:
    """``"stretch"`` when up to ``ASPECT_SAMPLE`` of ``images``, spread evenly over the list,
    share one aspect; ``"letterbox"`` when their aspects differ, so that no image is distorted
    differently from the others.

    Example:
        >>> fitted_resize([np.zeros((300, 400, 3), np.uint8), np.zeros((30, 40, 3), np.uint8)])
        'stretch'
        >>> fitted_resize([np.zeros((300, 400, 3), np.uint8), np.zeros((40, 40, 3), np.uint8)])
        'letterbox'
    """
    aspects = np.array([height / width for height, width in sampled_shapes(images)])
    spread = np.abs(aspects / np.median(aspects) - 1).max()
    return "stretch" if spread <= ASPECT_TOLERANCE else "letterbox"


def content_box(image_size: tuple[int, int], preprocessing: Preprocessing) -> Box:
    """Where an image of ``image_size`` (height, width) lies in the network input.

    The whole input when stretched (and with ``"auto"``, before training decides); with
    ``resize="letterbox"`` the largest centred box of the image's aspect, the rest being
    padding.

    Example:
        >>> content_box((300, 400), Preprocessing((256, 256), resize="letterbox"))
        (32, 0, 192, 256)
        >>> content_box((300, 400), Preprocessing((256, 256)))
        (0, 0, 256, 256)
    """
    height, width = preprocessing.input_size
    if preprocessing.resize != "letterbox":
        return 0, 0, height, width
    scale = min(height / image_size[0], width / image_size[1])
    inner_height = min(height, max(1, round(image_size[0] * scale)))
    inner_width = min(width, max(1, round(image_size[1] * scale)))
    return (height - inner_height) // 2, (width - inner_width) // 2, inner_height, inner_width


def enlargement_notes(image_size: tuple[int, int], preprocessing: Preprocessing) -> tuple[str, ...]:
    """A note when the network sees an image of ``image_size`` (height, width) enlarged more
    than ``ENLARGEMENT_NOTE_FACTOR`` times along a side (none otherwise): most of what the
    network then sees is interpolated, not detail of the part.

    Example:
        >>> enlargement_notes((20, 30), Preprocessing((256, 256)))
        ("enlarged 12.8x from 30x20 to the model's 256x256 input",)
        >>> enlargement_notes((200, 300), Preprocessing((256, 256)))
        ()
    """
    _, _, height, width = content_box(image_size, preprocessing)
    factor = max(height / image_size[0], width / image_size[1])
    if factor <= ENLARGEMENT_NOTE_FACTOR:
        return ()
    input_height, input_width = preprocessing.input_size
    return (
        f"enlarged {factor:.3g}x from {image_size[1]}x{image_size[0]} "
        f"to the model's {input_width}x{input_height} input",
    )


def input_description(preprocessing: Preprocessing) -> str:
    """What the network sees of an image, in words (width x height, as image sizes are said).

    Example:
        >>> input_description(Preprocessing((256, 320)))
        '320x256 input'
        >>> input_description(Preprocessing((256, 256), tile=(512, 1024)))
        '1024x512 px tiles at 256x256'
    """
    height, width = preprocessing.input_size
    if preprocessing.tile is None:
        return f"{width}x{height} input"
    return f"{preprocessing.tile[1]}x{preprocessing.tile[0]} px tiles at {width}x{height}"


def to_batch(
    images: Sequence[np.ndarray], preprocessing: Preprocessing, device: torch.device
) -> torch.Tensor:
    """Stack RGB uint8 arrays into a normalised ``(B, 3, H, W)`` float batch on ``device``.

    Images of one size are resized together in one call; letterbox padding is the mean colour
    (zero once normalised).

    Example:
        >>> batch = to_batch([np.zeros((40, 50, 3), np.uint8)], Preprocessing((32, 32)), "cpu")
        >>> tuple(batch.shape)
        (1, 3, 32, 32)
    """
    mean = torch.tensor(preprocessing.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(preprocessing.std, device=device).view(1, 3, 1, 1)
    batch = mean.expand(len(images), 3, *preprocessing.input_size).clone()
    for indices, group in _group_by_shape(images):
        stacked = group[0][None] if len(group) == 1 else np.stack(group)  # no copy for one
        pixels = torch.from_numpy(stacked).to(device).permute(0, 3, 1, 2).float()
        top, left, height, width = content_box(group[0].shape[:2], preprocessing)
        resized = _resize(pixels.div_(255.0), (height, width), preprocessing.interpolation)
        batch[indices, :, top : top + height, left : left + width] = resized
    return (batch - mean) / std


def _resize(pixels: torch.Tensor, size: tuple[int, int], interpolation: str) -> torch.Tensor:
    if tuple(pixels.shape[-2:]) == size:
        return pixels
    if interpolation == "nearest":
        return F.interpolate(pixels, size=size, mode="nearest")
    resized = F.interpolate(
        pixels, size=size, mode=interpolation, antialias=True, align_corners=False
    )
    return resized.clamp_(0.0, 1.0)


def _group_by_shape(images: Sequence[np.ndarray]) -> list[tuple[list[int], list[np.ndarray]]]:
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(images):
        groups.setdefault(image.shape, []).append(index)
    return [(indices, [images[i] for i in indices]) for indices in groups.values()]
