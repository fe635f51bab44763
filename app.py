"""HFR demo: anomaly scores, verdicts and heat-map overlays for uploaded images.

python app.py  # http://127.0.0.1:7860

Settings come from the environment when the app starts (never at import): HFR_HUB_ORG (the Hub
organisation whose hfr-* repos are offered; empty: no Hub), HFR_MODEL_DIRS (model folders,
separated by ':'), HFR_EXAMPLES_DIR, HFR_MAX_SIDE, HFR_MODEL_CACHE, HFR_CONCURRENCY and
HFR_TEMP_MAX_AGE (seconds an upload or result file is kept). A Space deployed by
scripts/deploy_space.py carries its defaults in space_settings.json beside this file.
"""

from __future__ import annotations

import csv
import ctypes
import ctypes.util
import json
import os
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

import gradio as gr
import numpy as np
from gradio.utils import get_upload_folder as gradio_upload_folder

from hfr.catalog import ModelCache, ModelEntry, discover_models
from hfr.device import auto_device
from hfr.errors import HFRError, ImageLoadError
from hfr.images import list_images, read_image
from hfr.postprocess import Prediction
from hfr.viz import colormap, overlay

try:  # ZeroGPU on Hugging Face Spaces; a no-op decorator elsewhere
    import spaces

    gpu = spaces.GPU
except ImportError:

    def gpu(function):
        return function


SPACE_SETTINGS_FILE = Path(__file__).with_name("space_settings.json")
MAX_IMAGES = 64
CSV_FILES_KEPT = 32
MAX_EXAMPLES = 12
LEVEL_MAP_SIDE = 256
# Model caches of the demos built in this process, by name: ZeroGPU passes a GPU function's
# arguments between processes, so it gets the cache's name, never the cache itself.
_CACHES: dict[str, ModelCache] = {}
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class AppSettings:
    """Where models and examples come from, and the app's limits."""

    hub_org: str = "hfr-anomaly"
    model_dirs: tuple[str, ...] = ()
    examples_dir: str = "examples"
    max_side: int = 1600
    cache_size: int = 3
    concurrency: int = 2
    temp_max_age: int = 900

    @classmethod
    def load(
        cls, environ: Mapping[str, str] | None = None, space_file: Path = SPACE_SETTINGS_FILE
    ) -> AppSettings:
        """Defaults, then ``space_settings.json`` (a deployed Space), then the environment."""
        settings = cls()
        if space_file.is_file():
            settings = replace(settings, **json.loads(space_file.read_text()))
        environ = os.environ if environ is None else environ
        names = {
            "hub_org": "HFR_HUB_ORG",
            "examples_dir": "HFR_EXAMPLES_DIR",
            "max_side": "HFR_MAX_SIDE",
            "cache_size": "HFR_MODEL_CACHE",
            "concurrency": "HFR_CONCURRENCY",
            "temp_max_age": "HFR_TEMP_MAX_AGE",
        }
        kinds = {f.name: f.type for f in fields(cls)}
        for name, variable in names.items():
            if variable in environ:
                value = environ[variable]
                settings = replace(
                    settings, **{name: int(value) if kinds[name] == "int" else value}
                )
        if "HFR_MODEL_DIRS" in environ:
            dirs = tuple(p for p in environ["HFR_MODEL_DIRS"].split(":") if p)
            settings = replace(settings, model_dirs=dirs)
        return settings


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

    @classmethod
    def of(cls, name: str, image: np.ndarray, prediction: Prediction, level_scale: float) -> Result:
        step = max(1, -(-max(image.shape[:2]) // LEVEL_MAP_SIDE))  # the residuals are coarse
        return cls(
            name,
            image,
            prediction.score,
            prediction.normalized_score,
            prediction.normalized_map.astype(np.float16),
            [level[::step, ::step].astype(np.float16) for level in prediction.level_maps],
            level_scale,
        )


def read_uploads(paths: list[str], max_side: int) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """Decode uploads through the library's image gate, reduced to ``max_side``; unreadable
    ones, and anything done to the readable ones (frames dropped, size reduced), become notices."""
    images, notices = [], []
    for path in paths[:MAX_IMAGES]:
        name = Path(path).name
        try:
            loaded = read_image(path, max_side=max_side)
        except ImageLoadError as error:
            notices.append(f"`{name}` skipped: {str(error).replace(str(path), name)}")
            continue
        notices += [f"`{name}`: {note}." for note in loaded.notes]
        images.append((name, loaded.pixels))
    if len(paths) > MAX_IMAGES:
        notices.append(f"Only the first {MAX_IMAGES} of {len(paths)} files were analysed.")
    return images, notices


@gpu
def run_model(
    cache_name: str, entry: ModelEntry, images: list[np.ndarray]
) -> tuple[list[Prediction], float, str]:
    """Load the model (once, cached) and score: the only GPU work.

    Returns the predictions, the calibrated raw threshold and the device used.
    """
    try:
        model = _CACHES[cache_name].get(entry.source)
    except HFRError as error:
        raise gr.Error(f"Could not load {entry.label}: {error}", print_exception=False) from error
    calibration = model.config.calibration
    if calibration is None:
        raise gr.Error(
            f"{entry.label} is not calibrated; train it with `hfr train`.", print_exception=False
        )
    try:
        predictions = model.predict(images, batch_size=16, return_level_maps=True)
    except HFRError as error:
        raise gr.Error(
            f"{entry.label} could not score these images: {error}", print_exception=False
        ) from error
    return predictions, calibration.threshold, str(model.device)


class MallocTuning:
    """glibc keeps freed memory in per-thread arenas: under Gradio's worker threads a busy app's
    memory then grows to several times what one request needs and never shrinks. Fewer arenas,
    and a trim after each request, hand it back. A no-op where the C library is not glibc."""

    ARENA_MAX = -8  # mallopt's M_ARENA_MAX

    def __init__(self) -> None:
        name = ctypes.util.find_library("c")
        library = ctypes.CDLL(name) if name else None
        self._libc = library if library is not None and hasattr(library, "malloc_trim") else None

    def limit_arenas(self, count: int = 2) -> None:
        if self._libc is not None:
            self._libc.mallopt(self.ARENA_MAX, count)

    def trim(self) -> None:
        if self._libc is not None:
            self._libc.malloc_trim(0)


MALLOC = MallocTuning()


def sweep_upload_leftovers(folder: Path, max_age: float) -> int:
    """Delete the empty ``tmp*`` staging files Gradio 6 leaves directly in its upload folder, one
    per upload, once older than ``max_age`` seconds (``delete_cache`` does not track them).
    Returns how many were deleted."""
    deleted = 0
    cutoff = time.time() - max_age
    for path in folder.glob("tmp*"):
        try:
            status = path.stat()
            if path.is_file() and status.st_size == 0 and status.st_mtime < cutoff:
                path.unlink()
                deleted += 1
        except FileNotFoundError:  # removed meanwhile
            continue
    return deleted


def start_upload_sweeper(max_age: float) -> threading.Thread:
    """Run :func:`sweep_upload_leftovers` on Gradio's upload folder every minute (or sooner)."""
    folder = Path(gradio_upload_folder())

    def sweep_forever() -> None:
        while True:
            time.sleep(min(60.0, max_age))
            sweep_upload_leftovers(folder, max_age)

    thread = threading.Thread(target=sweep_forever, name="hfr-upload-sweeper", daemon=True)
    thread.start()
    return thread


def render(
    results: list[Result], threshold: float, opacity: float, show_levels: bool, csv_dir: Path
):
    """Gallery, score table, CSV and level maps for the current slider values."""
    if not results:
        return [], [], None, gr.update(value=[], visible=False)
    gallery = [
        (
            overlay(
                r.image, r.normalized_map.astype(np.float32), opacity=opacity, threshold=threshold
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
                    colormap(0.5 * level.astype(np.float32) / top.level_scale),
                    f"{top.name}: level {index} residual",
                )
            )
    csv_path = write_csv(table, csv_dir)
    return gallery, table, csv_path, gr.update(value=levels, visible=show_levels)


def verdict(result: Result, threshold: float) -> str:
    return "ANOMALOUS" if result.normalized_score >= threshold else "normal"


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
    old = sorted(folder.glob("hfr-scores-*.csv"), key=lambda p: p.stat().st_mtime)
    for stale in old[:-CSV_FILES_KEPT]:
        stale.unlink(missing_ok=True)
    return handle.name


def example_rows(folder: Path, labels: list[str]) -> list[list]:
    """Clickable examples: ``<category>_<anything>`` images, each with the first model whose
    label names that category (``hfr-<dataset>-<category>-...``); others are left out."""
    if not folder.is_dir():
        return []
    rows = []
    for path in list_images(folder)[:MAX_EXAMPLES]:
        category = path.stem.split("_", 1)[0]
        label = next(
            (lb for lb in labels if f"-{category}-" in lb or lb.endswith(f"-{category}")), None
        )
        if label is not None:
            rows.append([[str(path)], label])
    return rows


def build_demo(settings: AppSettings | None = None) -> gr.Blocks:
    """The demo's page and its event handlers, with its own model cache."""
    settings = settings or AppSettings()
    cache = ModelCache(capacity=settings.cache_size, device=str(auto_device()))
    csv_dir = Path(tempfile.mkdtemp(prefix="hfr-app-"))
    cache_name = csv_dir.name
    _CACHES[cache_name] = cache
    entries, note = discover_models([Path(p) for p in settings.model_dirs], settings.hub_org)
    labels = [e.label for e in entries]
    examples = example_rows(Path(__file__).parent / settings.examples_dir, labels)

    def analyze(
        files, model_label, entries, threshold, opacity, show_levels, progress=gr.Progress()
    ):
        """Score the uploaded images and draw their overlays."""
        if not files:
            raise gr.Error("Upload one or more images first.", print_exception=False)
        entry = next((e for e in entries if e.label == model_label), None)
        if entry is None:
            raise gr.Error("Pick a model first.", print_exception=False)
        paths = [f if isinstance(f, str) else f.name for f in files]
        images, notices = read_uploads(paths, settings.max_side)
        if not images:
            raise gr.Error(
                "None of the files is a readable image.<br>" + "<br>".join(notices),
                print_exception=False,
            )
        progress(0.1, desc="Scoring ..." if entry.source in cache else f"Loading {entry.label} ...")
        began = time.perf_counter()
        predictions, raw_threshold, device = run_model(
            cache_name, entry, [rgb for _, rgb in images]
        )
        seconds = time.perf_counter() - began
        level_scale = raw_threshold / 3
        results = [
            Result.of(name, rgb, prediction, level_scale)
            for (name, rgb), prediction in zip(images, predictions, strict=True)
        ]
        results.sort(key=lambda r: r.normalized_score, reverse=True)
        notices.append(f"{len(results)} image(s) analysed in {seconds:.2f} s on {device}.")
        shown = render(results, threshold, opacity, show_levels, csv_dir)
        MALLOC.trim()
        return (results, *shown, "\n\n".join(notices))

    def redraw(results, threshold, opacity, show_levels):
        return render(results, threshold, opacity, show_levels, csv_dir)

    # Gradio keeps every upload and returned file in its cache: delete them after
    # temp_max_age seconds, checked once a minute (or sooner for short ages).
    delete_cache = (min(60, settings.temp_max_age), settings.temp_max_age)
    with gr.Blocks(title="HFR anomaly detection", delete_cache=delete_cache) as demo:
        gr.Markdown(
            "# HFR: unsupervised anomaly detection\n"
            "Upload images of the chosen category. Each image gets a score (0-1, the model's "
            "calibrated threshold at 0.5), a verdict, and a heat map with the anomalous region "
            "outlined. Paper: [arXiv 2405.09148](https://arxiv.org/abs/2405.09148). The bundled "
            "models are trained on MVTec AD *bottle* and *screw*, and the examples are MVTec AD "
            "test images ([MVTec](https://www.mvtec.com/company/research/datasets/mvtec-ad), "
            "CC BY-NC-SA 4.0, non-commercial)." + (f"\n\n*{note}*" if note else "")
        )
        entries_state = gr.State(entries)
        results_state = gr.State([])
        with gr.Row():
            with gr.Column(scale=1):
                model_choice = gr.Dropdown(
                    labels, value=labels[0] if labels else None, label="Model"
                )
                files = gr.File(file_count="multiple", label="Images", elem_id="files")
                threshold = gr.Slider(
                    0.0, 1.0, value=0.5, step=0.01, label="Threshold (0.5 = calibrated)"
                )
                opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Heat-map opacity")
                show_levels = gr.Checkbox(
                    label="Show the three per-level residual maps (top image)"
                )
                button = gr.Button("Analyse", variant="primary")
                if examples:
                    gr.Examples(
                        examples,
                        inputs=[files, model_choice],
                        label="Examples (MVTec AD, CC BY-NC-SA 4.0): click one, then Analyse",
                    )
            with gr.Column(scale=2):
                status = gr.Markdown(elem_id="status")
                gallery = gr.Gallery(
                    label="Sorted by score, highest first", columns=3, elem_id="overlays"
                )
                table = gr.Dataframe(
                    headers=["image", "normalized_score", "raw_score", "verdict"],
                    label="Scores",
                    elem_id="scores",
                )
                csv_file = gr.File(label="Scores (CSV)")
                levels = gr.Gallery(label="Per-level residual maps", columns=3, visible=False)
        outputs = [gallery, table, csv_file, levels]
        button.click(
            analyze,
            inputs=[files, model_choice, entries_state, threshold, opacity, show_levels],
            outputs=[results_state, *outputs, status],
            api_name="analyze",
        )
        model_choice.change(lambda: 0.5, outputs=threshold, api_name=False)
        for control in (threshold, opacity, show_levels):
            control.change(
                redraw,
                inputs=[results_state, threshold, opacity, show_levels],
                outputs=outputs,
                api_name=False,
            )
    return demo.queue(default_concurrency_limit=settings.concurrency, max_size=64)


def main() -> None:
    """Read the settings, build the page, serve it."""
    settings = AppSettings.load()
    MALLOC.limit_arenas()
    start_upload_sweeper(settings.temp_max_age)
    build_demo(settings).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), max_file_size="50mb"
    )


if __name__ == "__main__":
    main()
