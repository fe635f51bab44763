"""Writing prediction results to a folder: ``scores.csv`` as it goes and one overlay per image.

Rows are flushed after every image, so an interrupted run keeps what it scored. A folder that
already holds results is refused unless ``overwrite`` is given, which clears them first, or
``resume``, which keeps them and tells which images are done: two runs' outputs are never mixed
by accident.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from hfr.errors import HFRError

if TYPE_CHECKING:
    from hfr.scoring.postprocess import Prediction

SCORES_FILE = "scores.csv"
OVERLAYS_DIR = "overlays"
FIELDS = (
    "image",
    "score",
    "normalized_score",
    "is_anomalous",
    "threshold",
    "overlay",
    "notes",
    "error",
)


def write_json(path: str | Path, data: object) -> str:
    """Write ``data`` as indented JSON to ``path`` (folders created); return the text.

    Example:
        >>> import tempfile
        >>> print(write_json(Path(tempfile.mkdtemp()) / "a" / "r.json", {"auroc": 0.9}), end="")
        {
          "auroc": 0.9
        }
    """
    text = json.dumps(data, indent=2) + "\n"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text, encoding="utf-8")
    return text


def prediction_row(prediction: Prediction) -> dict:
    """The result columns of one scored image, as numbers (Parquet keeps them so)."""
    return {
        "score": prediction.score,
        "normalized_score": prediction.normalized_score,
        "is_anomalous": bool(prediction.is_anomalous),
        "threshold": prediction.threshold,
    }


def csv_row(row: dict) -> dict:
    """``row`` with its scores as ``scores.csv`` holds them: 6 decimals."""
    return {
        **row,
        "score": f"{row['score']:.6f}",
        "normalized_score": f"{row['normalized_score']:.6f}",
    }


def unique_names(paths: list[Path]) -> list[str]:
    """A distinct, readable file-name stem per path: its path below the inputs' common folder.

    Example:
        >>> unique_names([Path("a/good/0.png"), Path("b/good/0.png"), Path("b/good/0.jpg")])
        ['a__good__0.png', 'b__good__0.png', 'b__good__0.jpg']
    """
    resolved = [p.resolve() for p in paths]
    root = Path(os.path.commonpath([p.parent for p in resolved])) if resolved else Path()
    return ["__".join(p.relative_to(root).parts) for p in resolved]


def check_output(folder: str | Path, *, overwrite: bool = False, resume: bool = False) -> bool:
    """Whether ``folder`` holds results of an earlier run (``scores.csv`` or overlays), which
    only ``overwrite``, or ``resume`` where ``scores.csv`` is there, may touch; checked before a
    model loads or exports, and by :class:`ResultsWriter` itself.

    Raises :class:`~hfr.errors.HFRError` when neither applies.
    """
    folder = Path(folder)
    scores, overlays = folder / SCORES_FILE, folder / OVERLAYS_DIR
    found = scores.exists() or (overlays.is_dir() and any(overlays.iterdir()))
    if found and not (overwrite or (resume and scores.exists())):
        if resume:
            raise HFRError(
                f"{folder} holds overlays but no {SCORES_FILE}, so no run to resume; pass "
                "--overwrite (overwrite=True) to replace them, or choose another folder"
            )
        raise HFRError(
            f"{folder} already holds results of another run; pass --resume (resume=True) to "
            "finish it, --overwrite (overwrite=True) to replace it, or choose another folder"
        )
    return found


class ResultsWriter:
    """Context manager writing ``scores.csv`` row by row and overlays into ``folder``.

    With ``resume``, the rows already in ``scores.csv`` are kept and their images listed in
    :attr:`done`; new rows are appended.
    """

    def __init__(
        self, folder: str | Path, *, overwrite: bool = False, resume: bool = False
    ) -> None:
        self.folder = Path(folder)
        self.done: set[str] = set()
        scores, overlays = self.folder / SCORES_FILE, self.folder / OVERLAYS_DIR
        has_results = check_output(self.folder, overwrite=overwrite, resume=resume)
        if has_results and resume and scores.exists():
            _drop_partial_line(scores)
            self.done = _finished_images(scores)
        elif has_results:
            scores.unlink(missing_ok=True)
            shutil.rmtree(overlays, ignore_errors=True)
        overlays.mkdir(parents=True, exist_ok=True)
        appending = bool(self.done)
        self._handle = open(scores, "a" if appending else "w", newline="", encoding="utf-8")  # noqa: SIM115 (closed by close())
        self._writer = csv.DictWriter(self._handle, fieldnames=FIELDS)
        if not appending:
            self._writer.writeheader()
        self._handle.flush()

    def write(self, row: dict, overlay: np.ndarray | None = None, name: str | None = None) -> None:
        """Append one row; with ``overlay``, save it as ``overlays/<name>.overlay.png`` first."""
        if overlay is not None:
            row = {**row, "overlay": save_overlay(self.folder, name, overlay)}
        self._writer.writerow(row)
        self._handle.flush()

    def close(self) -> None:
        """Close ``scores.csv``."""
        self._handle.close()

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


def save_overlay(folder: Path, name: str, overlay: np.ndarray) -> str:
    """Write ``overlays/<name>.overlay.png`` under ``folder`` atomically; return its relative
    path (the ``overlay`` column)."""
    target = Path(folder) / OVERLAYS_DIR / f"{name}.overlay.png"
    partial = target.with_suffix(".partial")
    Image.fromarray(overlay).save(partial, format="PNG")
    os.replace(partial, target)
    return str(target.relative_to(folder))


def _finished_images(scores: Path) -> set[str]:
    """Images of ``scores.csv`` that were scored or failed for good (a row each)."""
    with open(scores, newline="", encoding="utf-8") as handle:
        return {row["image"] for row in csv.DictReader(handle) if row.get("image")}


def _drop_partial_line(scores: Path) -> None:
    """Cut a last line that a killed run left half written."""
    content = scores.read_bytes()
    if content and not content.endswith(b"\n"):
        with open(scores, "r+b") as handle:
            handle.truncate(content.rfind(b"\n") + 1)
