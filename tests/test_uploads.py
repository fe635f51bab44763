"""Uploaded files and zip archives read as images, with their limits."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from conftest import synthetic_images
from PIL import Image

from hfr.uploads import UploadLimits, read_uploads


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _archive(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return path


def test_archives_and_files_are_read_in_order_skipping_what_is_not_an_image(tmp_path) -> None:
    images = synthetic_images(3, size=40)
    archive = _archive(
        tmp_path / "parts.zip",
        {
            "parts/a.png": _png(images[0]),
            "parts/readme.txt": b"not an image",
            "__MACOSX/parts/._a.png": b"resource fork",
            "parts/.hidden.png": b"junk",
            "parts/b.png": _png(images[1]),
            "parts/broken.png": b"\x89PNG\r\n\x1a\n garbage",
        },
    )
    single = tmp_path / "c.png"
    single.write_bytes(_png(images[2]))
    uploads = read_uploads([archive, single])
    assert [name for name, _ in uploads.images] == [
        "parts.zip/parts/a.png",
        "parts.zip/parts/b.png",
        "c.png",
    ]
    for (_, pixels), expected in zip(uploads.images, images, strict=True):
        np.testing.assert_array_equal(pixels, expected)
    assert (
        len(uploads.notices) == 1 and "`parts.zip/parts/broken.png` skipped" in uploads.notices[0]
    )


def test_an_archive_that_unpacks_too_large_is_refused_before_reading(tmp_path) -> None:
    archive = _archive(tmp_path / "bomb.zip", {"zeros.png": bytes(2_000_000)})  # compresses well
    assert archive.stat().st_size < 20_000
    uploads = read_uploads([archive], UploadLimits(max_archive_bytes=1_000_000))
    assert uploads.images == []
    assert uploads.notices == [
        "`bomb.zip` skipped: its images unpack to 2 MB, above the limit of 1 MB."
    ]


def test_the_image_count_is_bounded_and_says_so(tmp_path) -> None:
    members = {f"{i}.png": _png(image) for i, image in enumerate(synthetic_images(5, size=16))}
    uploads = read_uploads([_archive(tmp_path / "many.zip", members)], UploadLimits(max_images=3))
    assert len(uploads.images) == 3
    assert uploads.notices == ["Only the first 3 of 5 images were read."]


def test_damaged_or_empty_archives_are_notices(tmp_path) -> None:
    damaged = tmp_path / "damaged.zip"
    valid = _archive(tmp_path / "x.zip", {"a.png": _png(synthetic_images(1)[0])}).read_bytes()
    damaged.write_bytes(valid[:-30])  # the central directory's end is cut off
    empty = _archive(tmp_path / "empty.zip", {"notes.txt": b"hello"})
    uploads = read_uploads([damaged, empty])
    assert uploads.images == []
    assert "`damaged.zip` skipped: cannot read image" in uploads.notices[0]  # not a zip any more
    assert uploads.notices[1] == "`empty.zip` holds no image files."


def test_reductions_are_changes_not_notices(tmp_path) -> None:
    path = tmp_path / "wide.png"
    Image.new("RGB", (400, 100), (10, 20, 30)).save(path)
    uploads = read_uploads([path], UploadLimits(max_side=200))
    assert uploads.pixels[0].shape == (50, 200, 3)
    assert uploads.notices == [] and uploads.changes == [
        "`wide.png`: downscaled from 400x100 to 200x50."
    ]


def test_multi_frame_uploads_say_only_the_first_frame_was_scored(tmp_path: Path) -> None:
    frames = [Image.fromarray(rgb) for rgb in synthetic_images(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    uploads = read_uploads([tmp_path / "anim.gif"])
    assert len(uploads.images) == 1
    assert uploads.changes == ["`anim.gif`: 3 frames; only the first was scored."]
