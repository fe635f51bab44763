"""Where images come from in bulk: files, folders, list files (``.txt`` with one path or URI
per line, ``.parquet`` with a ``path`` or ``image`` column), and URIs read through pyarrow's
filesystems (``s3://``, ``gs://``, ``hdfs://``, ``file://``; the ``ray`` extra brings pyarrow).
"""

from __future__ import annotations

from pathlib import Path

from hfr.errors import HFRError, ImageLoadError
from hfr.extras import require
from hfr.images import LoadedImage, list_images, read_image

LIST_SUFFIXES = (".txt", ".parquet")
PARQUET_COLUMNS = ("path", "image")


def expand_sources(inputs: list[str]) -> list[str]:
    """Every image named by ``inputs``, each once, in order: files and URIs as given, folders as
    the images directly inside them, list files as the entries they hold.

    Example:
        >>> expand_sources(["s3://bucket/a.png", "s3://bucket/a.png", "b.png"])
        ['s3://bucket/a.png', 'b.png']
    """
    sources: list[str] = []
    for item in inputs:
        path = Path(item)
        if _is_uri(item):
            sources.append(item)
        elif path.is_dir():
            sources += [str(p) for p in list_images(path)]
        elif path.suffix.lower() == ".txt" and path.is_file():
            lines = path.read_text(encoding="utf-8").splitlines()
            sources += [s for line in lines if (s := line.strip()) and not s.startswith("#")]
        elif path.suffix.lower() == ".parquet" and path.is_file():
            sources += _parquet_sources(path)
        else:
            sources.append(item)
    return list(dict.fromkeys(sources))


def read_source(source: str) -> LoadedImage:
    """Decode one image named by a local path or a URI, through the image gate."""
    if not _is_uri(source):
        return read_image(source)
    if source.startswith("file://"):
        return read_image(source.removeprefix("file://"))
    fs_module = require("pyarrow.fs", "ray")
    try:
        filesystem, path = fs_module.FileSystem.from_uri(source)
        with filesystem.open_input_file(path) as handle:
            content = handle.read()
    except (OSError, ValueError, ImportError) as error:
        raise ImageLoadError(f"cannot read {source}: {error}") from error
    return read_image(content)


def _is_uri(text: str) -> bool:
    scheme, separator, _ = text.partition("://")
    return bool(separator) and scheme.isalnum()


def _parquet_sources(path: Path) -> list[str]:
    parquet = require("pyarrow.parquet", "ray")
    columns = parquet.read_schema(path).names
    column = next((c for c in PARQUET_COLUMNS if c in columns), None)
    if column is None:
        raise HFRError(f"{path} needs a column named {' or '.join(PARQUET_COLUMNS)}: {columns}")
    return [str(value) for value in parquet.read_table(path, columns=[column])[column].to_pylist()]
