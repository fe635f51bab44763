"""A category trained from a visitor's own images, as the demo's "Train your own" tab does it:
the library's :func:`~hfr.pipeline.train_category` (no second training path) on the uploaded
normal images, an optional check on labelled test images, the model as a zip, and a push to the
visitor's Hub account.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import HfApi

from hfr.calibrate import THRESHOLD_RESULTS
from hfr.config import HFRConfig, Preprocessing, TrainConfig
from hfr.data import GOOD, AnomalyDataset, TestSample
from hfr.errors import EncoderWeightsError, HFRError, TrainingError
from hfr.evaluate import collect, report
from hfr.hub import archive_model, push_folder
from hfr.images import ImageInput, image_shape
from hfr.model import HFR
from hfr.network.encoder import resolve_weights_file
from hfr.pipeline import ModelSettings, RunOptions, save_model, train_category
from hfr.preprocessing import ENLARGEMENT_NOTE_FACTOR, enlargement_notes
from hfr.scoring.calibration import Calibration
from hfr.train import ProgressCallback, TrainingProgress

COMMAND = "trained in the HFR demo app (Train your own)"
MIN_NORMAL_IMAGES = 10
MAX_NAME_LENGTH = 40
DEFECTIVE = "defective"
ENCODERS = {
    "MobileNetV2 (ImageNet, torchvision)": ModelSettings(
        encoder="mobilenetv2_100", encoder_weights="mobilenet_v2-b0353104.pth"
    ),
    "EfficientNet-Lite0 (ImageNet)": ModelSettings(
        encoder="tf_efficientnet_lite0", encoder_weights="efficientnet-lite0-57934424.pth"
    ),
}
_NAME_PART = re.compile(r"[^a-z0-9]+")


def available_encoders() -> dict[str, ModelSettings]:
    """The encoders of :data:`ENCODERS` whose weight files are on this machine."""
    available = {}
    for label, settings in ENCODERS.items():
        try:
            resolve_weights_file(settings.encoder_weights)
        except EncoderWeightsError:
            continue
        available[label] = settings
    return available


def model_name(text: str) -> str:
    """A repo-safe name: lower-case ASCII letters, digits and single dashes, at most
    :data:`MAX_NAME_LENGTH` characters (every other character becomes a dash).

    Raises :class:`HFRError` for a name with no ASCII letter or digit, or one too long.

    Example:
        >>> model_name("  My Part #7 ")
        'my-part-7'
    """
    name = _NAME_PART.sub("-", text.lower()).strip("-")
    if not name:
        raise HFRError(
            f"give the model a name with at least one ASCII letter (a-z) or digit (0-9): "
            f"{text.strip()!r} has none (other characters become dashes)"
        )
    if len(name) > MAX_NAME_LENGTH:
        raise HFRError(
            f"give the model a name of at most {MAX_NAME_LENGTH} characters: {name!r} has "
            f"{len(name)}"
        )
    return name


class TrainingTickets:
    """Trainings by session, from the moment one joins the queue until it ends, so that Cancel
    reaches it whether it waits, decodes its uploads or trains.

    A ticket is taken when a training is queued, started when it runs (a session's trainings
    start in the order they were queued) and closed when it ends. Thread-safe.

    Example:
        >>> tickets = TrainingTickets()
        >>> queued = tickets.take("session")
        >>> tickets.cancel("session")
        'queued'
        >>> tickets.cancelled(tickets.start("session"))
        True
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, list[str]] = {}  # session: queued tickets, oldest first
        self._running: dict[str, str] = {}  # ticket: its session
        self._flags: dict[str, threading.Event] = {}  # ticket: set once cancelled

    def take(self, session: str) -> str:
        """A ticket for a training of ``session`` that has joined the queue."""
        ticket = uuid.uuid4().hex
        with self._lock:
            self._waiting.setdefault(session, []).append(ticket)
            self._flags[ticket] = threading.Event()
        return ticket

    def start(self, session: str) -> str:
        """The ticket of the training of ``session`` that starts now: its oldest queued one, or
        a new one for a training that was never queued."""
        with self._lock:
            waiting = self._waiting.get(session) or []
            ticket = waiting.pop(0) if waiting else uuid.uuid4().hex
            if not waiting:
                self._waiting.pop(session, None)
            self._flags.setdefault(ticket, threading.Event())
            self._running[ticket] = session
        return ticket

    def close(self, ticket: str) -> None:
        """Forget a training that has ended."""
        with self._lock:
            self._running.pop(ticket, None)
            self._flags.pop(ticket, None)

    def cancelled(self, ticket: str) -> bool:
        """Whether Cancel was pressed for this ticket's training."""
        flag = self._flags.get(ticket)
        return flag is not None and flag.is_set()

    def cancel(self, session: str) -> str | None:
        """Cancel every training of ``session``: ``"running"`` when one is under way,
        ``"queued"`` when they all still wait, None when it has none."""
        with self._lock:
            running = [t for t, owner in self._running.items() if owner == session]
            tickets = running + self._waiting.get(session, [])
            for ticket in tickets:
                self._flags[ticket].set()
        if not tickets:
            return None
        return "running" if running else "queued"


@dataclass
class TrainedModel:
    """A model trained from uploads: its folder, zip and config, how it did on labelled test
    images (``normalized_scores`` and ``labels``, 1 = defective; empty when none were given),
    and notes on its training images a user should read (see :func:`enlargement_summary`)."""

    name: str
    folder: Path
    archive: Path
    config: HFRConfig
    seconds: float
    normalized_scores: np.ndarray
    labels: np.ndarray
    notes: tuple[str, ...] = ()


def train_uploaded(
    name: str,
    normal: Sequence[ImageInput],
    *,
    settings: ModelSettings,
    epochs: int | None,
    output_root: Path,
    test_good: Sequence[ImageInput] = (),
    test_defective: Sequence[ImageInput] = (),
    on_progress: ProgressCallback | None = None,
    device: str | None = None,
) -> TrainedModel:
    """Train a category named ``name`` on ``normal`` images into a new folder under
    ``output_root``; score the labelled test images if any; zip the model. ``epochs=None``
    lets training choose (:func:`hfr.config.default_epochs`).

    Raises :class:`TrainingError` for fewer than :data:`MIN_NORMAL_IMAGES` normal images, and
    whatever training raises (:class:`~hfr.errors.TrainingCancelled` when ``on_progress`` stops
    it).
    """
    name = model_name(name)
    if len(normal) < MIN_NORMAL_IMAGES:
        raise TrainingError(
            f"upload at least {MIN_NORMAL_IMAGES} normal images (got {len(normal)}); "
            "50 or more give a steadier model"
        )
    run_folder = _new_run_folder(output_root)
    folder = run_folder / f"hfr-{name}"
    test = [TestSample(image, 0, GOOD) for image in test_good]
    test += [TestSample(image, 1, DEFECTIVE) for image in test_defective]
    dataset = AnomalyDataset(name="custom", category=name, train=list(normal), test=test)
    options = RunOptions(
        training=TrainConfig(epochs=epochs),
        device=device,
        command=COMMAND,
        progress=False,
        on_progress=on_progress,
    )
    began = time.perf_counter()
    model, _ = train_category(
        dataset, folder, settings=settings, options=options, run_evaluation=False
    )
    shutil.rmtree(f"{folder}-checkpoints", ignore_errors=True)
    scores, labels = np.zeros(0), np.zeros(0, dtype=int)
    if test:
        if on_progress is not None:
            on_progress(TrainingProgress("evaluation", 0, 1))
        maps, seconds_per_image = collect(model, dataset, progress=False)
        evaluation = {**report(model, dataset, maps, seconds_per_image), "command": COMMAND}
        model.config = model.config.replace(evaluation=evaluation)
        raw = torch.as_tensor(maps.scores, dtype=torch.float64)
        scores, labels = model.config.calibration.normalize(raw).numpy(), maps.labels
    save_model(model, folder, repo_id=f"<your-user>/hfr-{name}")
    archive = archive_model(folder, run_folder / f"hfr-{name}.zip")
    seconds = time.perf_counter() - began
    notes = enlargement_summary(normal, model.config.preprocessing)
    return TrainedModel(name, folder, archive, model.config, seconds, scores, labels, notes)


def save_recalibrated(
    model: HFR, calibration: Calibration, label: str, output_root: Path
) -> tuple[Path, Path]:
    """Save ``model`` with the ``calibration`` made in the app as ``hfr-<name>`` in a new run
    folder under ``output_root``, the name taken from its catalogue ``label``, and zip it; the
    verdict rates measured with its old threshold are dropped. Returns the folder and the zip.
    """
    name = model_name(label.split(" (", 1)[0].removeprefix("hfr-")[:MAX_NAME_LENGTH])
    folder = _new_run_folder(output_root) / f"hfr-{name}"
    evaluation = {
        key: value
        for key, value in (model.config.evaluation or {}).items()
        if key not in THRESHOLD_RESULTS
    }
    recalibrated = model.with_calibration(calibration)
    recalibrated.config = recalibrated.config.replace(evaluation=evaluation or None)
    save_model(recalibrated, folder, repo_id=f"<your-user>/hfr-{name}")
    return folder, archive_model(folder, folder.with_suffix(".zip"))


def _new_run_folder(output_root: Path) -> Path:
    """A folder name under ``output_root`` no other run has (created by the first save)."""
    return output_root / f"{time.strftime('%Y%m%d-%H%M%S')}-{time.monotonic_ns()}"


def enlargement_summary(
    images: Sequence[ImageInput], preprocessing: Preprocessing
) -> tuple[str, ...]:
    """One note when some of the training ``images`` reach the network enlarged more than
    :data:`~hfr.preprocessing.ENLARGEMENT_NOTE_FACTOR` times (none otherwise), naming the
    smallest of them.

    Example:
        >>> (note,) = enlargement_summary([np.zeros((2, 2, 3), np.uint8)], Preprocessing((64, 64)))
        >>> note.split(";")[0]
        "1 of the 1 normal images were enlarged more than 2x to the model's input (the smallest: \
enlarged 32x from 2x2 to the model's 64x64 input)"
    """
    shapes = [image_shape(image) for image in images]
    enlarged = [shape for shape in shapes if enlargement_notes(shape, preprocessing)]
    if not enlarged:
        return ()
    smallest = min(enlarged, key=lambda shape: shape[0] * shape[1])
    return (
        f"{len(enlarged)} of the {len(images)} normal images were enlarged more than "
        f"{ENLARGEMENT_NOTE_FACTOR:g}x to the model's input (the smallest: "
        f"{enlargement_notes(smallest, preprocessing)[0]}); the network sees interpolated "
        "pixels there, not detail of the part: upload larger images if you have them",
    )


def push_trained(folder: Path, token: str, *, endpoint: str | None = None) -> tuple[str, str]:
    """Publish a trained model's folder as ``<user>/<folder name>`` under the account of
    ``token``; the card is rewritten to name that repo. Returns the repo id and commit URL."""
    api = HfApi(endpoint=endpoint, token=token)
    user = api.whoami()["name"]
    repo_id = f"{user}/{folder.name}"
    save_model(HFR.from_pretrained(folder), folder, repo_id=repo_id)
    return repo_id, push_folder(api, folder, repo_id, message=f"Upload {folder.name} (HFR demo)")


def prune_runs(output_root: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest run folders under ``output_root`` (bounded disk)."""
    runs = sorted((p for p in output_root.iterdir() if p.is_dir()), key=lambda p: p.name)
    for stale in runs[:-keep] if keep > 0 else runs:
        shutil.rmtree(stale, ignore_errors=True)
