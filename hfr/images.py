"""The one gate every user image passes: paths, bytes, file objects, PIL images, numpy arrays and
tensors become an 8-bit RGB array, or an :class:`ImageLoadError` naming the input and the problem.

Files are decoded only as the formats in :data:`ALLOWED_FORMATS` (never PostScript or any other
format PIL would hand to an outside program), within a pixel budget checked from the header
before any pixel is decoded. JPEGs above the budget, or above ``max_side`` when one is given, are
reduced while decoding. Scaling to 8 bits follows the mode or dtype, never the pixel values.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from hfr.errors import ImageLoadError

ImageInput = (
    str | os.PathLike | bytes | bytearray | memoryview | BinaryIO | Image.Image | np.ndarray
) | torch.Tensor
ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")
MAX_PIXELS_ENV_VAR = "HFR_MAX_IMAGE_PIXELS"
# 40 megapixels (a 7300x5500 frame): about 0.6 GB at the peak of predict (docs/results.md).
DEFAULT_MAX_PIXELS = 40_000_000
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


@dataclass(frozen=True)
class LoadedImage:
    """An image as the model sees it: ``pixels`` ``(H, W, 3)`` uint8, and what was done to it
    that a user should know (``notes``: frames dropped, size reduced)."""

    pixels: np.ndarray
    notes: tuple[str, ...] = ()


def max_pixels() -> int:
    """The pixel budget: ``HFR_MAX_IMAGE_PIXELS`` if set, else 40 million."""
    value = os.environ.get(MAX_PIXELS_ENV_VAR)
    if value is None:
        return DEFAULT_MAX_PIXELS
    if not value.isdigit() or int(value) < 1:
        raise ImageLoadError(f"{MAX_PIXELS_ENV_VAR} must be a positive integer, got {value!r}")
    return int(value)


def load_rgb(image: ImageInput) -> np.ndarray:
    """Return ``image`` as an ``(H, W, 3)`` uint8 array (see :func:`read_image`).

    Example:
        >>> load_rgb(np.zeros((4, 5), dtype=np.uint16)).shape
        (4, 5, 3)
    """
    return read_image(image).pixels


def read_image(image: ImageInput, *, max_side: int | None = None) -> LoadedImage:
    """Decode ``image`` into RGB uint8, with notes on anything a user should know.

    Grayscale becomes RGB and alpha is dropped. uint8 and 8-bit modes are kept; uint16 and
    16-bit modes are divided by 257; floats must lie in [0, 1]; bool is 0 or 255; other
    dtypes are refused. Animated or multi-page files give their first frame, with a note.
    ``max_side`` reduces larger images to that longest side (JPEGs while decoding).

    Raises:
        ImageLoadError: naming the input, for unreadable, refused, empty, oversized or
            out-of-range images.

    Example:
        >>> read_image(np.ones((30, 40), dtype=np.float32), max_side=20).pixels.shape
        (15, 20, 3)
    """
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise ImageLoadError(f"image file not found: {path}")
        return _decode(path, name=str(path), max_side=max_side)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _decode(io.BytesIO(bytes(image)), name="image bytes", max_side=max_side)
    if hasattr(image, "read"):
        name = str(getattr(image, "name", "image file object"))
        return _decode(image, name=name, max_side=max_side)
    if isinstance(image, Image.Image):
        return _reduced(_pil_to_rgb(image, name="PIL image"), max_side)
    if isinstance(image, torch.Tensor):
        return _reduced(_tensor_to_rgb(image), max_side)
    if isinstance(image, np.ndarray):
        return _reduced(_array_to_rgb(image, name="array"), max_side)
    raise ImageLoadError(f"unsupported image type {type(image).__name__}")


def image_shape(image: ImageInput) -> tuple[int, int]:
    """``(height, width)`` of ``image`` as :func:`read_image` would decode it; a file's header
    is read, not its pixels.

    Example:
        >>> image_shape(np.zeros((30, 40, 3), np.uint8))
        (30, 40)
    """
    if not isinstance(image, (str, os.PathLike)):
        return read_image(image).pixels.shape[:2]
    try:
        with Image.open(image, formats=ALLOWED_FORMATS) as opened:
            width, height = opened.size
    except Exception:  # unreadable: read_image raises the error that names it
        return read_image(image).pixels.shape[:2]
    return height, width


def _decode(source: Path | BinaryIO, *, name: str, max_side: int | None) -> LoadedImage:
    """Open ``source`` as one of the allowed formats within the pixel budget, and decode it."""
    budget = max_pixels()
    notes: list[str] = []
    try:
        with Image.open(source, formats=ALLOWED_FORMATS) as opened:
            frames = getattr(opened, "n_frames", 1)
            if frames > 1:
                notes.append(f"{frames} frames; only the first was scored")
            width, height = opened.size
            if opened.format == "JPEG":
                _draft(opened, budget, max_side)
            if opened.width * opened.height > budget:
                raise ImageLoadError(_too_large(name, opened.width, opened.height, budget))
            opened.load()
            pixels = _pil_to_rgb(opened, name=name)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as error:  # PIL's own cap, far above any sane budget
        raise ImageLoadError(f"{name}: {error}; the limit here is {budget:,} pixels") from error
    except UnidentifiedImageError as error:
        raise ImageLoadError(
            f"cannot read image {name}: not one of the accepted formats "
            f"({', '.join(ALLOWED_FORMATS)}) or corrupt"
        ) from error
    except Exception as error:  # PIL's plugins raise any type on damaged files (TIFF: KeyError)
        raise ImageLoadError(f"cannot read image {name}: {error}") from error
    return _reduced(pixels, max_side, notes=tuple(notes), original=(width, height))


def _too_large(name: str, width: int, height: int, budget: int) -> str:
    return (
        f"{name}: {width}x{height} = {width * height:,} pixels, above the limit of {budget:,} "
        f"pixels (set {MAX_PIXELS_ENV_VAR} to change it)"
    )


def _draft(opened: Image.Image, budget: int, max_side: int | None) -> None:
    """Let the JPEG decoder reduce by 2, 4 or 8: as far as the pixel ``budget`` needs, or as far
    as keeps the longest side at least ``max_side``."""
    width, height = opened.size
    factor = 1
    while factor < 8 and (
        math.ceil(width / factor) * math.ceil(height / factor) > budget
        or (max_side is not None and max(width, height) / (2 * factor) >= max_side)
    ):
        factor *= 2
    if factor > 1:
        opened.draft(opened.mode, (max(1, width // factor), max(1, height // factor)))


def _reduced(
    pixels: np.ndarray,
    max_side: int | None,
    *,
    notes: tuple[str, ...] = (),
    original: tuple[int, int] | None = None,
) -> LoadedImage:
    """Shrink ``pixels`` to ``max_side`` (longest side) if larger; a note says so when the
    result is smaller than the ``original`` (width, height), also when decoding reduced it."""
    height, width = pixels.shape[:2]
    if max_side is not None and max(height, width) > max_side:
        scale = max_side / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        pixels = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BOX))
    original = original or (width, height)
    if pixels.shape[1::-1] != original:
        notes = (
            *notes,
            f"downscaled from {original[0]}x{original[1]} to {pixels.shape[1]}x{pixels.shape[0]}",
        )
    return LoadedImage(pixels, notes)


def _pil_to_rgb(image: Image.Image, *, name: str) -> np.ndarray:
    if image.width == 0 or image.height == 0:
        raise ImageLoadError(f"{name} is empty ({image.width}x{image.height})")
    if image.mode in _SIXTEEN_BIT_MODES:
        return _array_to_rgb(np.clip(np.asarray(image), 0, 65535).astype(np.uint16), name=name)
    if image.mode == "F":
        return _array_to_rgb(np.asarray(image), name=name)
    if image.mode != "RGB":
        image = image.convert("RGBA" if "A" in image.mode or image.mode == "P" else "RGB")
        image = image.convert("RGB")
    return np.array(image, dtype=np.uint8)


def _tensor_to_rgb(tensor: torch.Tensor) -> np.ndarray:
    if tensor.layout != torch.strided:
        tensor = tensor.to_dense()
    if tensor.is_complex():
        raise ImageLoadError(f"tensor has unsupported dtype {tensor.dtype}")
    tensor = tensor.detach().cpu()
    if tensor.is_floating_point() and tensor.dtype not in (torch.float32, torch.float64):
        tensor = tensor.float()  # bfloat16 and float16 have no numpy view
    array = tensor.numpy()
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)
    return _array_to_rgb(array, name="tensor")


def _array_to_rgb(array: np.ndarray, *, name: str) -> np.ndarray:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[-1] == 4:
        array = array[..., :3]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3):
        raise ImageLoadError(f"{name} of shape {array.shape} is not an HxW, HxWx1/3/4 image")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageLoadError(f"{name} is empty (shape {array.shape})")
    array = _to_uint8(array, name=name)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return np.ascontiguousarray(array)


def _to_uint8(array: np.ndarray, *, name: str) -> np.ndarray:
    """8-bit pixels, scaled by ``array``'s dtype alone, never by its values."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:  # round(x / 257), exactly
        return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageLoadError(f"{name} holds NaN or infinite values")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            raise ImageLoadError(
                f"{name} is {array.dtype} with values in [{low:g}, {high:g}]; float images must "
                "lie in [0, 1] (pass uint8 for 0-255, uint16 for 0-65535)"
            )
        return (array * 255.0).round().astype(np.uint8)
    raise ImageLoadError(
        f"{name} has dtype {array.dtype}, which does not say its range; "
        "pass uint8 (0-255), uint16 (0-65535), bool, or floats in [0, 1]"
    )


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
