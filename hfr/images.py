"""Reading any user image into an 8-bit RGB array: paths, PIL images, numpy arrays, tensors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from hfr.errors import ImageLoadError

ImageInput = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MAX_PIXELS = 100_000_000


def load_rgb(image: ImageInput) -> np.ndarray:
    """Return ``image`` as an ``(H, W, 3)`` uint8 array.

    Grayscale becomes RGB, alpha is dropped, 16-bit and float images are scaled to 8 bits.
    Raises :class:`ImageLoadError` naming the input when it cannot be read.

    Example:
        >>> load_rgb(np.zeros((4, 5), dtype=np.uint16)).shape
        (4, 5, 3)
    """
    if isinstance(image, (str, os.PathLike)):
        return _pil_to_rgb(_open(Path(image)), name=str(image))
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image, name="PIL image")
    if isinstance(image, torch.Tensor):
        array = image.detach().cpu().numpy()
        if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
            array = np.moveaxis(array, 0, -1)
        return _array_to_rgb(array, name="tensor")
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image, name="array")
    raise ImageLoadError(f"unsupported image type {type(image).__name__}")


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise ImageLoadError(f"image file not found: {path}")
    try:
        with Image.open(path) as opened:
            if opened.width * opened.height > MAX_PIXELS:
                raise ImageLoadError(
                    f"{path}: {opened.width}x{opened.height} exceeds {MAX_PIXELS} pixels"
                )
            opened.load()
            return opened.copy()
    except ImageLoadError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise ImageLoadError(f"cannot read image {path}: {error}") from error


def _pil_to_rgb(image: Image.Image, *, name: str) -> np.ndarray:
    if image.width == 0 or image.height == 0:
        raise ImageLoadError(f"{name} is empty ({image.width}x{image.height})")
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _array_to_rgb(np.asarray(image), name=name)
    if image.mode != "RGB":
        image = image.convert("RGBA" if "A" in image.mode or image.mode == "P" else "RGB")
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy()


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
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageLoadError(f"{name} holds NaN or infinite values")
        scale = 255.0 if array.max(initial=0.0) <= 1.0 else 1.0
        return np.clip(array * scale, 0, 255).round().astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        peak = 255 if array.max(initial=0) <= 255 else 65535
        return np.clip(array.astype(np.float64) * (255.0 / peak), 0, 255).round().astype(np.uint8)
    raise ImageLoadError(f"{name} has unsupported dtype {array.dtype}")


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
