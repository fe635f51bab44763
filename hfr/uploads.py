"""A visitor's files as images: plain image files and ``.zip`` archives of them, each decoded
through the library's image gate (:func:`hfr.images.read_image`), with bounds on how many images,
how large an archive and how long a side.

An archive member is decompressed in bounded chunks into one temporary file (deleted as soon as
it is decoded), never into memory whole, and only when it is within the image count: what an
upload costs in memory is what its decoded images need, whatever its members claim.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from hfr.errors import ImageLoadError
from hfr.images import IMAGE_SUFFIXES, read_image

ARCHIVE_SUFFIX = ".zip"
CHUNK_BYTES = 2**20  # decompressed at a time: zipfile's own read() takes up to 2 GiB at once
# Methods whose decompression zipfile bounds per chunk (bzip2 and LZMA it does not).
READABLE_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
NAMES_LISTED = 3  # skipped members named in an archive's notice


@dataclass(frozen=True)
class UploadLimits:
    """How much of an upload is read: images in all, longest side after reduction, and the
    uncompressed size of one archive (checked from its directory before anything is read, and
    held to while reading: a member is never read past the size it declares)."""

    max_images: int = 64
    max_side: int = 1600
    max_archive_bytes: int = 512 * 2**20


@dataclass
class Uploads:
    """Decoded images with their display names; a notice per file or archive skipped (and the
    count limit, when reached), and a change per thing done to a readable image (frames
    dropped, size reduced)."""

    images: list[tuple[str, np.ndarray]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)

    @property
    def pixels(self) -> list[np.ndarray]:
        """The images alone, in upload order."""
        return [pixels for _, pixels in self.images]


# A candidate image: its display name and a function that makes it a file to decode.
Candidate = tuple[str, Callable[[Path], Path]]


def read_uploads(paths: Sequence[str | Path], limits: UploadLimits | None = None) -> Uploads:
    """Decode uploaded files and the images inside uploaded ``.zip`` archives, in order.

    Unreadable files, archives over the size limit, archive members that are not images (or
    are hidden, or leave the archive's folder) and images beyond ``limits.max_images`` are
    skipped with a notice; members beyond the count are never decompressed. Raises nothing for
    bad content.

    Example:
        >>> uploads = read_uploads(["good_parts.zip", "extra.png"], UploadLimits(max_images=300))
        ... # doctest: +SKIP
    """
    limits = limits or UploadLimits()
    uploads = Uploads()
    offered = 0
    with tempfile.TemporaryDirectory(prefix="hfr-upload-") as spool:
        spooled = Path(spool) / "member"
        for name, materialise in _candidates(paths, limits, uploads.notices):
            offered += 1
            if len(uploads.images) >= limits.max_images:
                continue
            source = spooled
            try:
                source = materialise(spooled)
                loaded = read_image(source, max_side=limits.max_side)
            except ImageLoadError as error:
                reason = str(error).replace(str(source), name)
                uploads.notices.append(f"`{name}` skipped: {reason}")
                continue
            finally:
                spooled.unlink(missing_ok=True)
            uploads.changes += [f"`{name}`: {note}." for note in loaded.notes]
            uploads.images.append((name, loaded.pixels))
    if offered > limits.max_images:
        uploads.notices.append(f"Only the first {limits.max_images} of {offered} images were read.")
    return uploads


def _candidates(
    paths: Sequence[str | Path], limits: UploadLimits, notices: list[str]
) -> Iterator[Candidate]:
    """Every candidate image in upload order, archives opened in place."""
    for path in paths:
        path = Path(path)
        if path.suffix.lower() == ARCHIVE_SUFFIX and zipfile.is_zipfile(path):
            yield from _archive_members(path, limits, notices)
        else:
            yield path.name, lambda _spooled, path=path: path


def _archive_members(path: Path, limits: UploadLimits, notices: list[str]) -> Iterator[Candidate]:
    """The image members of one archive; a too large or damaged archive, and each member left
    out, is a notice."""
    try:
        with zipfile.ZipFile(path) as archive:
            members, left_out = [], []
            for info in archive.infolist():
                reason = _left_out_because(info)
                if reason is None:
                    members.append(info)
                elif reason:
                    left_out.append(f"{info.filename} ({reason})")
            if left_out:
                listed = ", ".join(left_out[:NAMES_LISTED])
                more = len(left_out) - NAMES_LISTED
                notices.append(
                    f"`{path.name}`: {len(left_out)} file(s) left out: {listed}"
                    + (f" and {more} more." if more > 0 else ".")
                )
            total = sum(info.file_size for info in members)
            if total > limits.max_archive_bytes:
                notices.append(
                    f"`{path.name}` skipped: its images unpack to {total / 2**20:.0f} MB, "
                    f"above the limit of {limits.max_archive_bytes / 2**20:.0f} MB."
                )
                return
            if not members:
                notices.append(f"`{path.name}` holds no image files.")
            for info in members:
                yield f"{path.name}/{info.filename}", _spooler(archive, info)
    except zipfile.BadZipFile as error:
        notices.append(f"`{path.name}` skipped: not a readable zip archive ({error}).")


def _left_out_because(info: zipfile.ZipInfo) -> str | None:
    """Why a member is not read as an image (``""``: a folder, said nowhere); None to read it."""
    if info.is_dir():
        return ""
    member = PurePosixPath(info.filename.replace("\\", "/"))
    if "__MACOSX" in member.parts:
        return "macOS metadata"
    if ".." in member.parts:
        return "a path outside the archive's folder"
    if member.name.startswith("."):
        return "a hidden file: its name starts with '.'"
    if member.suffix.lower() not in IMAGE_SUFFIXES:
        return f"not an image file ({', '.join(IMAGE_SUFFIXES)})"
    if info.compress_type not in READABLE_METHODS:
        return f"compressed with method {info.compress_type}; re-zip with deflate"
    return None


def _spooler(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[Path], Path]:
    """A function that decompresses ``info`` into the given file, a chunk at a time."""

    def spool(target: Path) -> Path:
        try:
            with archive.open(info) as member, open(target, "wb") as copy:
                shutil.copyfileobj(member, copy, CHUNK_BYTES)
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError) as error:
            raise ImageLoadError(f"a damaged archive member ({error})") from error
        return target

    return spool
