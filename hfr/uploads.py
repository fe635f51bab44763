"""A visitor's files as images: plain image files and ``.zip`` archives of them, each decoded
through the library's image gate (:func:`hfr.images.read_image`), with bounds on how many images,
how large an archive and how long a side. Nothing is ever extracted to disk.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from hfr.errors import ImageLoadError
from hfr.images import IMAGE_SUFFIXES, read_image

ARCHIVE_SUFFIX = ".zip"


@dataclass(frozen=True)
class UploadLimits:
    """How much of an upload is read: images in all, longest side after reduction, and the
    uncompressed size of one archive (checked from its directory before anything is read)."""

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


def read_uploads(paths: Sequence[str | Path], limits: UploadLimits | None = None) -> Uploads:
    """Decode uploaded files and the images inside uploaded ``.zip`` archives, in order.

    Unreadable files, archives over the size limit and images beyond ``limits.max_images``
    are skipped with a notice. Raises nothing for bad content.

    Example:
        >>> uploads = read_uploads(["good_parts.zip", "extra.png"], UploadLimits(max_images=300))
        ... # doctest: +SKIP
    """
    limits = limits or UploadLimits()
    uploads = Uploads()
    offered = 0
    for name, source in _sources(paths, limits, uploads.notices):
        offered += 1
        if len(uploads.images) >= limits.max_images:
            continue
        try:
            loaded = read_image(source, max_side=limits.max_side)
        except ImageLoadError as error:
            message = str(error)
            if isinstance(source, str):
                message = message.replace(source, name)
            uploads.notices.append(f"`{name}` skipped: {message}")
            continue
        uploads.changes += [f"`{name}`: {note}." for note in loaded.notes]
        uploads.images.append((name, loaded.pixels))
    if offered > limits.max_images:
        uploads.notices.append(f"Only the first {limits.max_images} of {offered} images were read.")
    return uploads


def _sources(
    paths: Sequence[str | Path], limits: UploadLimits, notices: list[str]
) -> Iterator[tuple[str, str | bytes]]:
    """``(display name, path or bytes)`` of every candidate image, archives opened in place."""
    for path in paths:
        path = Path(path)
        if path.suffix.lower() == ARCHIVE_SUFFIX and zipfile.is_zipfile(path):
            yield from _archive_members(path, limits, notices)
        else:
            yield path.name, str(path)


def _archive_members(
    path: Path, limits: UploadLimits, notices: list[str]
) -> Iterator[tuple[str, bytes]]:
    """The image files of one archive, as bytes; a too large or damaged archive is a notice."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [info for info in archive.infolist() if _is_image_member(info)]
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
                try:
                    content = archive.read(info)  # stops at the declared size, checks the CRC
                except (zipfile.BadZipFile, NotImplementedError, RuntimeError) as error:
                    notices.append(f"`{path.name}/{info.filename}` skipped: {error}")
                    continue
                yield f"{path.name}/{info.filename}", content
    except zipfile.BadZipFile as error:
        notices.append(f"`{path.name}` skipped: not a readable zip archive ({error}).")


def _is_image_member(info: zipfile.ZipInfo) -> bool:
    """An image file of the archive, not a folder, a macOS resource fork or a hidden file."""
    member = PurePosixPath(info.filename)
    hidden = member.name.startswith(".") or "__MACOSX" in member.parts
    return not info.is_dir() and not hidden and member.suffix.lower() in IMAGE_SUFFIXES
