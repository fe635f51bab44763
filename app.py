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
import pandas as pd
import torch
from gradio.utils import get_upload_folder as gradio_upload_folder
from huggingface_hub.errors import HfHubHTTPError
from PIL import Image

from hfr import studio
from hfr.catalog import ModelCache, ModelEntry, discover_models
from hfr.config import AUTO
from hfr.device import auto_device
from hfr.errors import HFRError, TrainingCancelled
from hfr.images import list_images
from hfr.pipeline import ModelSettings
from hfr.postprocess import Prediction
from hfr.scoring.terms.position import ALIGNED_WEIGHT
from hfr.train import ProgressCallback, TrainingProgress
from hfr.uploads import UploadLimits, read_uploads
from hfr.viz import colormap, overlay

try:  # ZeroGPU on Hugging Face Spaces; the function itself elsewhere
    import spaces
except ImportError:
    spaces = None


def gpu(duration: int):
    """Run the decorated function on a ZeroGPU slice of at most ``duration`` seconds."""
    if spaces is None:
        return lambda function: function
    return spaces.GPU(duration=duration)


SPACE_SETTINGS_FILE = Path(__file__).with_name("space_settings.json")
MAX_IMAGES = 64
CSV_FILES_KEPT = 32
OVERLAY_FILES_KEPT = 256  # more than 2 concurrent requests of MAX_IMAGES write meanwhile
# Gradio's WebP quality (80) at the fastest encoder effort: about 10 ms for a 900x900 overlay
# where Gradio's own encoding (effort 4) takes about 50 ms (scripts/app_latency.py, breakdown).
OVERLAY_WEBP = {"format": "WEBP", "quality": 80, "method": 0}
MAX_EXAMPLES = 12
LEVEL_MAP_SIDE = 256
# Training in the browser: the limits stated on the page.
MAX_TRAIN_IMAGES = 300
MAX_TEST_IMAGES = 100
TRAIN_MAX_SIDE = 512  # the network sees 256x256; smaller copies keep 300 images in ~240 MB
MAX_EPOCHS = 100
AUTO_EPOCHS = 0  # the slider's default: the library's choice (50, more for few images)
# The training tab's "Per-position statistics" choices: label, value, the weight it trains with.
POSITION_CHOICES = {
    "auto": ("Automatic: on when the images look aligned", AUTO),
    "on": ("On: every part sits in the same place (a fixed camera and fixture)", ALIGNED_WEIGHT),
    "off": ("Off: parts placed or turned at random", 0.0),
}
TRAIN_GPU_SECONDS = 300
TRAINED_RUNS_KEPT = 16
TRAINED = "trained here"
# The trainings queued or running, by session; and what a stage is of the whole bar.
_TRAINING_RUNS = studio.TrainingTickets()
_STAGE_SPANS = {
    "features": (0.0, 0.15),
    "epochs": (0.15, 0.9),
    "calibration": (0.9, 0.95),
    "evaluation": (0.95, 1.0),
}
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
            converted(prediction.normalized_map, torch.float16),
            [converted(level[::step, ::step], torch.float16) for level in prediction.level_maps],
            level_scale,
        )


def converted(array: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    """``array`` as ``dtype``, through torch: numpy's float16 conversions are about 20 times
    slower (20 ms for a 900x900 map), with the same values."""
    return torch.from_numpy(np.ascontiguousarray(array)).to(dtype).numpy()


@gpu(duration=60)
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


def upload_paths(files) -> list[str]:
    """Paths of a File component's value (``None``, paths or file objects)."""
    return [f if isinstance(f, str) else f.name for f in files or []]


@gpu(duration=TRAIN_GPU_SECONDS)
def run_training(
    name: str,
    images: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]],
    settings: ModelSettings,
    epochs: int | None,
    output_root: Path,
    on_progress: ProgressCallback,
) -> studio.TrainedModel:
    """Train on (normal, good test, defective test) images: the GPU work of the second tab."""
    normal, good, defective = images
    return studio.train_uploaded(
        name,
        normal,
        settings=settings,
        epochs=epochs,
        output_root=output_root,
        test_good=good,
        test_defective=defective,
        on_progress=on_progress,
        device=str(auto_device()),
    )


class TrainingReporter:
    """Moves the page's progress bar with a training run, and stops the run (by raising
    :class:`TrainingCancelled` from its progress callback) once its session pressed Cancel.

    It holds the run's ticket, not its cancel flag, so that ZeroGPU can pickle it into its GPU
    worker (where the flag of the app's process is not seen: there a run cannot be cancelled).
    """

    def __init__(self, progress: gr.Progress, ticket: str) -> None:
        self.progress = progress
        self.ticket = ticket
        self.epochs_done = 0

    def __call__(self, update: TrainingProgress) -> None:
        if _TRAINING_RUNS.cancelled(self.ticket):
            raise TrainingCancelled(f"cancelled after {self.epochs_done} epoch(s)")
        if update.stage == "epochs":
            self.epochs_done = update.done
        start, end = _STAGE_SPANS[update.stage]
        fraction = start + (end - start) * update.done / max(update.total, 1)
        self.progress(fraction, desc=describe_progress(update))


def describe_progress(update: TrainingProgress) -> str:
    """The progress bar's text for one update."""
    if update.stage == "epochs":
        loss = "" if update.loss is None else f", loss {update.loss:.4f}"
        return f"Epoch {update.done}/{update.total}{loss}"
    names = {
        "features": "Extracting features",
        "calibration": "Calibrating on held-out normal images",
        "evaluation": "Scoring the test images",
    }
    return f"{names[update.stage]} ({update.done}/{update.total})"


def score_histogram(scores: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """Counts of good and defective test images per tenth of the normalised score."""
    edges = np.linspace(0.0, 1.0, 11)
    rows = []
    for label, kind in ((0, "good"), (1, "defective")):
        counts, _ = np.histogram(scores[labels == label], bins=edges)
        rows += [
            {"normalised score": f"{low:.1f}-{high:.1f}", "images": int(count), "test set": kind}
            for low, high, count in zip(edges[:-1], edges[1:], counts, strict=True)
        ]
    return pd.DataFrame(rows)


def training_summary(trained: studio.TrainedModel, notices: list[str]) -> str:
    """What was trained, how long it took, and how it did on the labelled test images."""
    training, calibration = trained.config.training, trained.config.calibration
    lines = [
        f"Trained **hfr-{trained.name}** on {training['num_train_images']} normal images "
        f"({training['num_calibration_images']} more held out for calibration), "
        f"{training['epochs']} epochs, in {trained.seconds:.1f} s on {training['device']} "
        f"({training['precision']}): "
        f"final loss {training['final_loss']:.4f}, threshold {calibration.threshold:.4f}. "
        "It is now in the model list of the *Try a model* tab (this session only)."
    ]
    evaluation = trained.config.evaluation or {}
    if "image_auroc" in evaluation:
        lines.append(f"Image AUROC on your test images: **{evaluation['image_auroc']:.3f}**.")
    rates = {"threshold_tpr": "defective", "threshold_fpr": "good"}
    flagged = [
        f"{100 * evaluation[key]:.0f} % of the {kind} images"
        for key, kind in rates.items()
        if key in evaluation
    ]
    if flagged:
        lines.append("Flagged at the calibrated threshold (0.5): " + ", ".join(flagged) + ".")
    warning = calibration.tail_warning()
    if warning:
        lines.append(f"Warning: {warning[0].upper()}{warning[1:]}.")
    lines += [f"{note}." for note in training.get("term_notes", [])]
    return "\n\n".join(lines + list(trained.notes) + notices[:10])


def build_demo(settings: AppSettings | None = None) -> gr.Blocks:
    """The demo's page (a tab to try models, a tab to train one) and its event handlers."""
    settings = settings or AppSettings()
    cache = ModelCache(capacity=settings.cache_size, device=str(auto_device()))
    csv_dir = Path(tempfile.mkdtemp(prefix="hfr-app-"))
    trained_root = Path(tempfile.mkdtemp(prefix="hfr-trained-"))
    cache_name = csv_dir.name
    _CACHES[cache_name] = cache
    entries, note = discover_models([Path(p) for p in settings.model_dirs], settings.hub_org)
    labels = [e.label for e in entries]
    examples = example_rows(Path(__file__).parent / settings.examples_dir, labels)
    encoders = studio.available_encoders()
    on_space = bool(os.environ.get("SPACE_ID") and os.environ.get("OAUTH_CLIENT_ID"))

    def analyze(
        files, model_label, entries, threshold, opacity, show_levels, progress=gr.Progress()
    ):
        """Score the uploaded images and draw their overlays."""
        if not files:
            raise gr.Error("Upload one or more images first.", print_exception=False)
        entry = next((e for e in entries if e.label == model_label), None)
        if entry is None:
            raise gr.Error("Pick a model first.", print_exception=False)
        uploads = read_uploads(upload_paths(files), UploadLimits(MAX_IMAGES, settings.max_side))
        notices = uploads.notices + uploads.changes
        if not uploads.images:
            raise gr.Error(
                "None of the files is a readable image.<br>" + "<br>".join(notices),
                print_exception=False,
            )
        progress(0.1, desc="Scoring ..." if entry.source in cache else f"Loading {entry.label} ...")
        began = time.perf_counter()
        predictions, raw_threshold, device = run_model(cache_name, entry, uploads.pixels)
        seconds = time.perf_counter() - began
        level_scale = raw_threshold / 3
        results = [
            Result.of(name, rgb, prediction, level_scale)
            for (name, rgb), prediction in zip(uploads.images, predictions, strict=True)
        ]
        notices += [
            f"`{name}`: {note}."
            for (name, _), prediction in zip(uploads.images, predictions, strict=True)
            for note in prediction.notes
        ]
        results.sort(key=lambda r: r.normalized_score, reverse=True)
        notices.append(f"{len(results)} image(s) analysed in {seconds:.2f} s on {device}.")
        shown = render(results, threshold, opacity, show_levels, csv_dir)
        MALLOC.trim()
        return (results, *shown, "\n\n".join(notices))

    def redraw(results, threshold, opacity, show_levels):
        return render(results, threshold, opacity, show_levels, csv_dir)

    def queue_training(
        files, name, encoder_label, epochs, position, good_files, defective_files, entries,
        request: gr.Request,
    ) -> tuple[dict, ...]:  # fmt: skip
        """Take a ticket for a training as it joins the queue, so that Cancel reaches it there
        (Gradio runs an event's validator, with the event's inputs, when the event is queued).
        Every input passes: :func:`train` checks them and says what is wrong."""
        _TRAINING_RUNS.take(request.session_hash)
        return tuple(gr.validate(True, "") for _ in training_inputs)

    def train(
        files,
        name,
        encoder_label,
        epochs,
        position,
        good_files,
        defective_files,
        entries,
        request: gr.Request,
        progress=gr.Progress(),
    ):
        """Train a category on the uploaded normal images and offer it in the first tab."""
        ticket = _TRAINING_RUNS.start(request.session_hash)
        try:
            return train_with_ticket(
                ticket, files, name, encoder_label, epochs, position, good_files,
                defective_files, entries, progress,
            )  # fmt: skip
        finally:
            _TRAINING_RUNS.close(ticket)
            MALLOC.trim()

    def train_with_ticket(
        ticket, files, name, encoder_label, epochs, position, good_files, defective_files,
        entries, progress,
    ):  # fmt: skip
        """:func:`train` for the run of ``ticket``: checks, uploads, training, results."""
        hidden = gr.update(visible=False)
        not_started = (entries, gr.update(), "**Training cancelled before it started.**")
        if _TRAINING_RUNS.cancelled(ticket):
            return (*not_started, hidden, hidden, None)
        if not files:
            raise gr.Error("Upload normal images (files or a .zip) first.", print_exception=False)
        if encoder_label not in encoders:
            raise gr.Error(f"Pick one of the encoders {list(encoders)}.", print_exception=False)
        if position not in POSITION_CHOICES:
            raise gr.Error(f"Pick one of {list(POSITION_CHOICES)}.", print_exception=False)
        try:
            studio.model_name(name)
        except HFRError as error:
            raise gr.Error(f"Training failed: {error}", print_exception=False) from error
        normal = read_uploads(upload_paths(files), UploadLimits(MAX_TRAIN_IMAGES, TRAIN_MAX_SIDE))
        test_limits = UploadLimits(MAX_TEST_IMAGES, TRAIN_MAX_SIDE)
        good = read_uploads(upload_paths(good_files), test_limits)
        defective = read_uploads(upload_paths(defective_files), test_limits)
        if _TRAINING_RUNS.cancelled(ticket):  # pressed while the uploads were decoded
            return (*not_started, hidden, hidden, None)
        studio.prune_runs(trained_root, TRAINED_RUNS_KEPT - 1)
        images = (normal.pixels, good.pixels, defective.pixels)
        weight = POSITION_CHOICES[position][1]
        reporter = TrainingReporter(progress, ticket)
        try:
            trained = run_training(
                name,
                images,
                replace(encoders[encoder_label], position_weight=weight),
                int(epochs) or None,
                trained_root,
                reporter,
            )
        except TrainingCancelled as error:
            return entries, gr.update(), f"**Training {error}.**", hidden, hidden, None
        except HFRError as error:
            raise gr.Error(f"Training failed: {error}", print_exception=False) from error
        entry = ModelEntry(f"hfr-{trained.name} ({TRAINED})", str(trained.folder), "trained")
        entries = [e for e in entries if e.label != entry.label] + [entry]
        uploads = (normal, good, defective)
        notices = [notice for upload in uploads for notice in upload.notices]
        changed = sum(len(upload.changes) for upload in uploads)
        if changed:
            notices.append(f"{changed} image(s) were reduced (size or frames) before use.")
        histogram = gr.update(visible=False)
        if trained.labels.size:
            data = score_histogram(trained.normalized_scores, trained.labels)
            histogram = gr.update(value=data, visible=True)
        return (
            entries,
            gr.update(choices=[e.label for e in entries], value=entry.label),
            training_summary(trained, notices),
            histogram,
            gr.update(value=str(trained.archive), visible=True),
            str(trained.folder),
        )

    def cancel(request: gr.Request) -> str:
        """Stop this session's training after its current step, or before it starts."""
        state = _TRAINING_RUNS.cancel(request.session_hash)
        if state is None:
            return "No training of yours is queued or running."
        if state == "queued":
            return "Cancelled: your training will not start."
        return "Cancelling after the current step ..."

    def push(folder, token, oauth_token: gr.OAuthToken | None):
        """Publish the session's last trained model as ``<user>/hfr-<name>``."""
        if not folder:
            raise gr.Error("Train a model first.", print_exception=False)
        token = (token or "").strip() or (oauth_token.token if oauth_token else "")
        if not token:
            raise gr.Error(
                "Sign in with Hugging Face, or paste a token with write access.",
                print_exception=False,
            )
        try:
            repo_id, _ = studio.push_trained(Path(folder), token)
        except (HFRError, HfHubHTTPError, OSError) as error:
            raise gr.Error(f"Push failed: {error}", print_exception=False) from error
        return f'Pushed to **{repo_id}**. Load it anywhere with `HFR.from_pretrained("{repo_id}")`.'

    # Gradio keeps every upload and returned file in its cache: delete them after
    # temp_max_age seconds, checked once a minute (or sooner for short ages).
    delete_cache = (min(60, settings.temp_max_age), settings.temp_max_age)
    with gr.Blocks(title="HFR anomaly detection", delete_cache=delete_cache) as demo:
        gr.Markdown(
            "# HFR: unsupervised anomaly detection\n"
            "Upload images of the chosen category. Each image gets a score (0-1, the model's "
            "calibrated threshold at 0.5), a verdict, and a heat map with the anomalous region "
            "outlined. Or train a detector for your own part on its normal images in the second "
            "tab. Paper: [arXiv 2405.09148](https://arxiv.org/abs/2405.09148). The bundled "
            "models are trained on MVTec AD *bottle* and *screw*, and the examples are MVTec AD "
            "test images ([MVTec](https://www.mvtec.com/company/research/datasets/mvtec-ad), "
            "CC BY-NC-SA 4.0, non-commercial)." + (f"\n\n*{note}*" if note else "")
        )
        entries_state = gr.State(entries)
        results_state = gr.State([])
        trained_state = gr.State(None)
        with gr.Tab("Try a model", elem_id="try-tab"), gr.Row():
            with gr.Column(scale=1):
                model_choice = gr.Dropdown(
                    labels, value=labels[0] if labels else None, label="Model", elem_id="model"
                )
                files = gr.File(file_count="multiple", label="Images (or a .zip)", elem_id="files")
                threshold = gr.Slider(
                    0.0, 1.0, value=0.5, step=0.01, label="Threshold (0.5 = calibrated)"
                )
                opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Heat-map opacity")
                show_levels = gr.Checkbox(
                    label="Show the three per-level residual maps (top image)"
                )
                button = gr.Button("Analyse", variant="primary")
                if examples:
                    # the hidden image only gives each example its thumbnail in the table
                    preview = gr.Image(type="filepath", visible=False)
                    gr.Examples(
                        [[paths[0], paths, label] for paths, label in examples],
                        inputs=[preview, files, model_choice],
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
        with gr.Tab("Train your own", elem_id="train-tab"):
            gr.Markdown(
                f"Upload {studio.MIN_NORMAL_IMAGES} to {MAX_TRAIN_IMAGES} images of your part "
                "without defects (image files or .zip archives, 50 MB per file; 50 or more give "
                f"a steadier model). They are reduced to {TRAIN_MAX_SIDE} px on their longest "
                "side; the network sees 256x256. 10 % are held out to set the threshold. One "
                "training runs at a time: others wait in a queue, with their position shown. "
                "Optionally add labelled test images (up to "
                f"{MAX_TEST_IMAGES} each) to see how well good and defective ones are told apart."
            )
            with gr.Row():
                with gr.Column(scale=1):
                    train_files = gr.File(
                        file_count="multiple",
                        label="Normal images (files or .zip)",
                        elem_id="train-files",
                    )
                    train_name = gr.Textbox(
                        label=f"Name (ASCII letters, digits and dashes, at most "
                        f"{studio.MAX_NAME_LENGTH})",
                        placeholder="my-part",
                        max_length=studio.MAX_NAME_LENGTH,
                        elem_id="train-name",
                    )
                    encoder_choice = gr.Dropdown(
                        list(encoders),
                        value=next(iter(encoders), None),
                        label="Encoder (frozen, ImageNet weights)",
                    )
                    epochs = gr.Slider(
                        AUTO_EPOCHS, MAX_EPOCHS, value=AUTO_EPOCHS, step=1,
                        label="Epochs (0: automatic, 50 or more for few images)",
                        elem_id="train-epochs",
                    )  # fmt: skip
                    position = gr.Radio(
                        [(label, value) for value, (label, _) in POSITION_CHOICES.items()],
                        value="off",
                        label="Per-position statistics (automatic: on from 40 training images "
                        "whose parts sit in the same place)",
                        elem_id="train-position",
                    )
                    with gr.Accordion(
                        "Labelled test images (optional)", open=False, elem_id="test-images"
                    ):
                        good_files = gr.File(
                            file_count="multiple", label="Good", elem_id="test-good"
                        )
                        defective_files = gr.File(
                            file_count="multiple", label="Defective", elem_id="test-defective"
                        )
                    with gr.Row():
                        train_button = gr.Button("Train", variant="primary")
                        cancel_button = gr.Button("Cancel", variant="stop")
                with gr.Column(scale=1):
                    train_status = gr.Markdown(elem_id="train-status")
                    histogram = gr.BarPlot(
                        x="normalised score",
                        y="images",
                        color="test set",
                        title="Scores of your test images (threshold at 0.5)",
                        visible=False,
                        elem_id="histogram",
                    )
                    download = gr.DownloadButton(
                        "Download the model (.zip)", visible=False, elem_id="download"
                    )
                    gr.Markdown(
                        "**Publish it** as `<your user>/hfr-<name>` on the Hugging Face Hub:"
                        + (" sign in," if on_space else " paste a token with write access,")
                        + " then push."
                    )
                    if on_space:
                        gr.LoginButton()
                    token = gr.Textbox(
                        label="Hub token (write access)", type="password", visible=not on_space
                    )
                    push_button = gr.Button("Push to my Hub account")
                    push_status = gr.Markdown(elem_id="push-status")
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
        training_inputs = [
            train_files, train_name, encoder_choice, epochs, position, good_files,
            defective_files, entries_state,
        ]  # fmt: skip
        train_button.click(
            train,
            inputs=training_inputs,
            outputs=[entries_state, model_choice, train_status, histogram, download, trained_state],
            api_name="train",
            validator=queue_training,
            concurrency_limit=1,
            concurrency_id="training",
        )  # fmt: skip
        cancel_button.click(cancel, outputs=train_status, api_name="cancel", concurrency_limit=None)
        push_button.click(push, inputs=[trained_state, token], outputs=push_status, api_name="push")
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
