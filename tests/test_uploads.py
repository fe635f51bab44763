"""Uploaded files and zip archives read as images, with their limits."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
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
    assert uploads.notices == [
        "`parts.zip`: 3 file(s) left out: parts/readme.txt (not an image file (.png, .jpg, .jpeg, "
        ".bmp, .tif, .tiff, .webp, .gif)), __MACOSX/parts/._a.png (macOS metadata), "
        "parts/.hidden.png (a hidden file: its name starts with '.').",
        "`parts.zip/parts/broken.png` skipped: cannot read image parts.zip/parts/broken.png: "
        "Truncated File Read",
    ]


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
    assert uploads.notices[1:] == [
        "`empty.zip`: 1 file(s) left out: notes.txt (not an image file (.png, .jpg, .jpeg, .bmp, "
        ".tif, .tiff, .webp, .gif)).",
        "`empty.zip` holds no image files.",
    ]


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


def _deflated_zeros(size: int) -> bytes:
    """A raw deflate stream of ``size`` zero bytes (a multiple of 16 MiB), made without
    compressing them all: one independent 16 MiB block, repeated."""
    chunk = 2**24
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return block * (size // chunk) + compressor.flush()


def _lying_zip(path: Path, name: str, *, declared: int, inflated: int) -> Path:
    """A zip whose one member declares ``declared`` bytes but inflates to ``inflated``."""
    data, encoded = _deflated_zeros(inflated), name.encode()
    crc = zlib.crc32(bytes(declared))
    sizes = (crc, len(data), declared, len(encoded))
    local = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 8, 0, 0, *sizes, 0) + encoded
    central = struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, *sizes, 0, 0, 0, 0,
                          0, 0) + encoded  # fmt: skip
    end = struct.pack(
        "<4s4H2IH", b"PK\x05\x06", 0, 0, 1, 1, len(central), len(local) + len(data), 0
    )
    path.write_bytes(local + data + central + end)
    return path


def _honest_zip(path: Path, name: str, size: int) -> Path:
    """A zip whose one member really is ``size`` zero bytes, written a chunk at a time."""
    with (
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive,
        archive.open(zipfile.ZipInfo(name), "w", force_zip64=True) as member,
    ):
        for _ in range(size // 2**24):
            member.write(bytes(2**24))
    return path


PEAK_PROBE = """
import json, sys
from pathlib import Path
from hfr.uploads import UploadLimits, read_uploads
read_uploads([])  # imports and first-call buffers before the baseline
def status():
    lines = [l.split(":", 1) for l in Path("/proc/self/status").read_text().splitlines()]
    return {k: int(v.split()[0]) / 1024 for k, v in lines if k in ("VmHWM", "VmRSS")}
before = status()["VmRSS"]
uploads = read_uploads([sys.argv[1]], UploadLimits(max_images=int(sys.argv[2])))
print(json.dumps({"added_mb": status()["VmHWM"] - before, "notices": uploads.notices}))
"""


def _peak_of_reading(archive: Path, max_images: int = 64) -> dict:
    """Read ``archive`` in a fresh process: the peak RSS it added (``/proc``) and the notices."""
    command = [sys.executable, "-c", PEAK_PROBE, str(archive), str(max_images)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads /proc (Linux)")
def test_a_member_that_understates_its_size_is_read_no_further(tmp_path: Path) -> None:
    """Declares 10 MB, inflates to 1 GiB: zipfile's read() decompressed it all (+1 GB)."""
    archive = _lying_zip(tmp_path / "liar.zip", "part.png", declared=10 * 2**20, inflated=2**30)
    assert archive.stat().st_size < 2 * 2**20
    record = _peak_of_reading(archive)
    assert record["added_mb"] < 300, record
    assert record["notices"] == [
        "`liar.zip/part.png` skipped: cannot read image liar.zip/part.png: not one of the "
        "accepted formats (PNG, JPEG, BMP, TIFF, WEBP, GIF) or corrupt"
    ]


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads /proc (Linux)")
def test_a_480_mb_member_costs_its_decoded_image_not_its_size(tmp_path: Path) -> None:
    """An honest 480 MB member within the 512 MB limit: read whole, it cost twice its size."""
    archive = _honest_zip(tmp_path / "large.zip", "large.png", 480 * 2**20)
    record = _peak_of_reading(archive)
    assert record["added_mb"] < 300, record
    assert record["notices"] == [
        "`large.zip/large.png` skipped: cannot read image large.zip/large.png: not one of the "
        "accepted formats (PNG, JPEG, BMP, TIFF, WEBP, GIF) or corrupt"
    ]


def test_members_beyond_the_image_count_are_never_decompressed(tmp_path, monkeypatch) -> None:
    members = {f"{i}.png": _png(image) for i, image in enumerate(synthetic_images(5, size=16))}
    archive = _archive(tmp_path / "many.zip", members)
    opened = []
    open_member = zipfile.ZipFile.open

    def recording_open(self, name, *args, **kwargs):
        opened.append(getattr(name, "filename", name))
        return open_member(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", recording_open)
    uploads = read_uploads([archive], UploadLimits(max_images=2))
    assert len(uploads.images) == 2 and opened == ["0.png", "1.png"]
    assert uploads.notices == ["Only the first 2 of 5 images were read."]


def test_members_left_out_are_named_and_windows_paths_are_read(tmp_path: Path) -> None:
    image = _png(synthetic_images(1, size=16)[0])
    archive = _archive(
        tmp_path / "odd.zip",
        {".part.png": image, "..\\x\\img.png": image, "scans\\a.png": image, "folder/": b""},
    )
    uploads = read_uploads([archive])
    assert [name for name, _ in uploads.images] == ["odd.zip/scans\\a.png"]
    assert uploads.notices == [
        "`odd.zip`: 2 file(s) left out: .part.png (a hidden file: its name starts with '.'), "
        "..\\x\\img.png (a path outside the archive's folder)."
    ]


def test_members_compressed_beyond_deflate_are_refused_by_name(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "b.zip", "w", compression=zipfile.ZIP_BZIP2) as archive:
        archive.writestr("a.png", _png(synthetic_images(1, size=16)[0]))
    uploads = read_uploads([tmp_path / "b.zip"])
    assert uploads.images == []
    assert uploads.notices == [
        "`b.zip`: 1 file(s) left out: a.png (compressed with method 12; re-zip with deflate).",
        "`b.zip` holds no image files.",
    ]
