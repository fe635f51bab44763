"""Every kind of input image becomes RGB uint8, and bad input gets an error naming it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hfr.errors import ImageLoadError
from hfr.images import load_rgb


@pytest.mark.parametrize(
    ("mode", "array"),
    [
        ("L", np.full((5, 7), 200, np.uint8)),
        ("RGBA", np.full((5, 7, 4), 200, np.uint8)),
        ("I;16", np.full((5, 7), 51400, np.uint16)),
        ("P", None),
        ("CMYK", None),
    ],
)
def test_pil_modes_become_rgb(tmp_path: Path, mode: str, array: np.ndarray | None) -> None:
    if array is None:
        image = Image.new("RGB", (7, 5), (200, 200, 200)).convert(mode)
    else:
        image = Image.fromarray(array, mode=mode) if mode != "I;16" else Image.fromarray(array)
    path = tmp_path / f"image.{'tif' if mode == 'CMYK' else 'png'}"
    image.save(path)
    for source in (path, image):
        rgb = load_rgb(source)
        assert rgb.shape == (5, 7, 3)
        assert rgb.dtype == np.uint8
        assert abs(int(rgb[0, 0, 0]) - 200) <= 6, mode  # palette mode quantises to 204


def test_arrays_and_tensors_of_any_common_dtype() -> None:
    assert load_rgb(np.full((4, 4), 65535, np.uint16)).max() == 255
    assert load_rgb(np.full((4, 4, 1), 0.5, np.float32))[0, 0, 0] == 128
    assert load_rgb(np.zeros((4, 4, 4), np.uint8)).shape == (4, 4, 3)
    assert load_rgb(torch.ones(3, 6, 5)).shape == (6, 5, 3)
    assert load_rgb(torch.zeros(6, 5, dtype=torch.uint8)).shape == (6, 5, 3)


def test_tiny_image_is_accepted() -> None:
    assert load_rgb(np.zeros((1, 1, 3), np.uint8)).shape == (1, 1, 3)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (np.zeros((0, 4, 3), np.uint8), "empty"),
        (np.zeros((4, 4, 2), np.uint8), "not an HxW"),
        (np.full((4, 4), np.nan, np.float32), "NaN"),
        (42, "unsupported image type"),
    ],
)
def test_bad_arrays_are_refused(source: object, message: str) -> None:
    with pytest.raises(ImageLoadError, match=message):
        load_rgb(source)


def test_unreadable_and_missing_files_are_named(tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ImageLoadError, match="broken.png"):
        load_rgb(broken)
    with pytest.raises(ImageLoadError, match="not found.*missing.png"):
        load_rgb(tmp_path / "missing.png")
    truncated = tmp_path / "truncated.png"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(tmp_path / "full.png")
    truncated.write_bytes((tmp_path / "full.png").read_bytes()[:60])
    with pytest.raises(ImageLoadError, match="truncated.png"):
        load_rgb(truncated)


def test_huge_image_is_refused_before_decoding(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HFR_MAX_IMAGE_PIXELS", "1000")
    path = tmp_path / "big.png"
    Image.new("L", (100, 100)).save(path)
    with pytest.raises(
        ImageLoadError, match="100x100 = 10,000 pixels, above the limit of 1,000 pixels"
    ):
        load_rgb(path)
