"""Writing prediction results to a folder: ``scores.csv`` as it goes and one overlay per image.

Rows are flushed after every image, so an interrupted run keeps what it scored. A folder that
already holds results is refused unless ``overwrite`` is given, which clears them first: two
runs' outputs are never mixed.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from types import TracebackType

import numpy as np
from PIL import Image

from hfr.errors import HFRError

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


def unique_names(paths: list[Path]) -> list[str]:
    """A distinct, readable file-name stem per path: its path below the inputs' common folder.

    Example:
        >>> unique_names([Path("a/good/0.png"), Path("b/good/0.png"), Path("b/good/0.jpg")])
        ['a__good__0.png', 'b__good__0.png', 'b__good__0.jpg']
    """
    resolved = [p.resolve() for p in paths]
    root = Path(os.path.commonpath([p.parent for p in resolved])) if resolved else Path()
    return ["__".join(p.relative_to(root).parts) for p in resolved]


class ResultsWriter:
    """Context manager writing ``scores.csv`` row by row and overlays into ``folder``."""

    def __init__(self, folder: str | Path, *, overwrite: bool = False) -> None:
        self.folder = Path(folder)
        scores, overlays = self.folder / SCORES_FILE, self.folder / OVERLAYS_DIR
        if scores.exists() or (overlays.is_dir() and any(overlays.iterdir())):
            if not overwrite:
                raise HFRError(
                    f"{self.folder} already holds results of another run; "
                    "pass --overwrite (overwrite=True) to replace them, or choose another folder"
                )
            scores.unlink(missing_ok=True)
            shutil.rmtree(overlays, ignore_errors=True)
        overlays.mkdir(parents=True, exist_ok=True)
        self._handle = open(scores, "w", newline="", encoding="utf-8")  # noqa: SIM115 (closed by close())
        self._writer = csv.DictWriter(self._handle, fieldnames=FIELDS)
        self._writer.writeheader()
        self._handle.flush()

    def write(self, row: dict, overlay: np.ndarray | None = None, name: str | None = None) -> None:
        """Append one row; with ``overlay``, save it as ``overlays/<name>.overlay.png`` first."""
        if overlay is not None:
            target = self.folder / OVERLAYS_DIR / f"{name}.overlay.png"
            partial = target.with_suffix(".partial")
            Image.fromarray(overlay).save(partial, format="PNG")
            os.replace(partial, target)
            row = {**row, "overlay": str(target.relative_to(self.folder))}
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
