"""What the demo shows of an analysis: each image's :class:`Result` kept in the session, and the
gallery, the score table, the CSV and the level maps drawn from them for the sliders' values."""

from __future__ import annotations

import csv
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import gradio as gr
import numpy as np
import torch
from PIL import Image

from hfr.scoring.calibration import Calibration
from hfr.scoring.postprocess import Prediction
from hfr.serving.viz import colormap, overlay

CSV_FILES_KEPT = 32
OVERLAY_FILES_KEPT = 256  # more than 2 concurrent requests of MAX_IMAGES write meanwhile
# Gradio's WebP quality (80) at the fastest encoder effort: about 10 ms for a 900x900 overlay
# where Gradio's own encoding (effort 4) takes about 50 ms (scripts/app_latency.py, breakdown).
OVERLAY_WEBP = {"format": "WEBP", "quality": 80, "method": 0}
LEVEL_MAP_SIDE = 256
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class Result:
    """One analysed image, kept in the session so that moving the sliders redraws without
    re-running the model: compact (float16 maps, level maps at most ``LEVEL_MAP_SIDE``)."""

    name: str
    image: np.ndarray
    score: float
    normalized_score: float
    normalized_map: np.ndarray
    level_maps: list[np.ndarray]
    level_scale: float
    model: str = ""  # the label of the model that scored it

    @classmethod
    def of(
        cls,
        name: str,
        image: np.ndarray,
        prediction: Prediction,
        level_scale: float,
        *,
        model: str = "",
    ) -> Result:
        step = max(1, -(-max(image.shape[:2]) // LEVEL_MAP_SIDE))  # the residuals are coarse
        return cls(
            name,
            image,
            prediction.score,
            prediction.normalized_score,
            converted(prediction.normalized_map, torch.float16),
            [converted(level[::step, ::step], torch.float16) for level in prediction.level_maps],
            level_scale,
            model,
        )

    def recalibrated(self, before: Calibration, after: Calibration) -> Result:
        """This result under the calibration ``after`` instead of ``before``: its normalised
        score from the raw one, its normalised map through the raw map ``before`` implies."""
        normalized = torch.from_numpy(self.normalized_map.astype(np.float32))
        raw = before.threshold + before.scale * torch.logit(normalized, eps=1e-6)
        return replace(
            self,
            normalized_score=float(after.normalize(torch.tensor(self.score, dtype=torch.float64))),
            normalized_map=converted(after.normalize(raw).numpy(), torch.float16),
        )


def converted(array: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    """``array`` as ``dtype``, through torch: numpy's float16 conversions are about 20 times
    slower (20 ms for a 900x900 map), with the same values."""
    return torch.from_numpy(np.ascontiguousarray(array)).to(dtype).numpy()


def render(
    results: list[Result], threshold: float, opacity: float, show_levels: bool, csv_dir: Path
):
    """Gallery, score table, CSV and level maps for the current slider values."""
    if not results:
        return [], [], None, gr.update(value=[], visible=False)
    gallery = [
        (
            write_overlay(
                overlay(
                    r.image,
                    converted(r.normalized_map, torch.float32),
                    opacity=opacity,
                    threshold=threshold,
                ),
                csv_dir,
            ),
            caption(r, threshold),
        )
        for r in results
    ]
    table = [
        [r.name, round(r.normalized_score, 4), round(r.score, 4), verdict(r, threshold)]
        for r in results
    ]
    levels = []
    if show_levels:
        top = results[0]
        for index, level in enumerate(top.level_maps, start=1):
            levels.append(
                (
                    colormap(0.5 * converted(level, torch.float32) / top.level_scale),
                    f"{top.name}: level {index} residual",
                )
            )
    csv_path = write_csv(table, csv_dir)
    return gallery, table, csv_path, gr.update(value=levels, visible=show_levels)


def verdict(result: Result, threshold: float) -> str:
    return "ANOMALOUS" if result.normalized_score > threshold else "normal"


def caption(result: Result, threshold: float) -> str:
    return f"{result.name}: score {result.normalized_score:.3f} ({verdict(result, threshold)})"


def spreadsheet_safe(text: str) -> str:
    """A cell a spreadsheet shows as text, never runs as a formula."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def write_csv(rows: list[list], folder: Path) -> str:
    """The score table as CSV in ``folder``, keeping only the newest files there."""
    with tempfile.NamedTemporaryFile(
        "w", suffix=".csv", prefix="hfr-scores-", dir=folder, delete=False, newline=""
    ) as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "normalized_score", "raw_score", "verdict"])
        writer.writerows([[spreadsheet_safe(row[0]), *row[1:]] for row in rows])
    keep_newest(folder, "hfr-scores-*.csv", CSV_FILES_KEPT)
    return handle.name


def write_overlay(pixels: np.ndarray, folder: Path) -> str:
    """An overlay as a WebP file in ``folder`` (Gradio serves it as it is), keeping only the
    newest files there."""
    with tempfile.NamedTemporaryFile(
        suffix=".webp", prefix="hfr-overlay-", dir=folder, delete=False
    ) as handle:
        Image.fromarray(pixels).save(handle, **OVERLAY_WEBP)
    keep_newest(folder, "hfr-overlay-*.webp", OVERLAY_FILES_KEPT)
    return handle.name


def keep_newest(folder: Path, pattern: str, count: int) -> None:
    """Delete all but the ``count`` newest files matching ``pattern`` in ``folder``."""
    files = []
    for path in folder.glob(pattern):
        try:
            files.append((path.stat().st_mtime, path))
        except FileNotFoundError:  # removed meanwhile by another request
            continue
    for _, stale in sorted(files)[:-count]:
        stale.unlink(missing_ok=True)
