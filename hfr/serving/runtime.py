"""What the demo runs on: ZeroGPU slices where the Space has them (:func:`gpu`), the model and
training calls that run there, the model caches they read, and the process's housekeeping
(glibc arenas, Gradio's upload leftovers)."""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from pathlib import Path

import gradio as gr
import numpy as np
from gradio.utils import get_upload_folder as gradio_upload_folder

from hfr.config import ModelSettings
from hfr.config.settings import BACKENDS
from hfr.device import auto_device
from hfr.errors import HFRError
from hfr.extras import require
from hfr.onnx_runtime import OnnxModel
from hfr.preprocessing import input_description
from hfr.progress import ProgressCallback
from hfr.scoring.calibration import Calibration
from hfr.scoring.postprocess import Prediction
from hfr.serving import studio
from hfr.serving.catalog import ModelCache, ModelEntry

try:  # ZeroGPU on Hugging Face Spaces; the function itself elsewhere
    import spaces
except ImportError:
    spaces = None

TRAIN_GPU_SECONDS = 300
# Model caches of the demos built in this process, by name: ZeroGPU passes a GPU function's
# arguments between processes, so it gets the cache's name, never the cache itself.
CACHES: dict[str, ModelCache] = {}


def gpu(duration: int):
    """Run the decorated function on a ZeroGPU slice of at most ``duration`` seconds."""
    if spaces is None:
        return lambda function: function
    return spaces.GPU(duration=duration)


@gpu(duration=60)
def run_model(
    cache_name: str,
    entry: ModelEntry,
    images: list[np.ndarray],
    calibration: Calibration | None = None,
) -> tuple[list[Prediction], Calibration, str]:
    """Load the model (once, cached) and score, with ``calibration`` instead of the model's
    own when given (this browser tab's): the only GPU work.

    Returns the predictions, the calibration they used and what ran them.
    """
    try:
        model = CACHES[cache_name].scorer(entry.source)
    except HFRError as error:
        raise gr.Error(f"Could not load {entry.label}: {error}", print_exception=False) from error
    if calibration is not None:
        model = model.with_calibration(calibration)
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
    runs_on = "cpu (ONNX Runtime)" if isinstance(model, OnnxModel) else str(model.device)
    return predictions, calibration, f"{runs_on}, {input_description(model.config.preprocessing)}"


def serving_backend(requested: str) -> str:
    """``requested`` (one of :data:`hfr.config.settings.BACKENDS`), checked: ``"onnxruntime"``
    needs hfr[export], and says so at start-up rather than at the first request."""
    if requested not in BACKENDS:
        raise HFRError(f"backend must be one of {BACKENDS}, got {requested!r}")
    if requested == "onnxruntime":
        for module in ("onnx", "onnxscript", "onnxruntime"):
            require(module, "export")
    return requested


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
