"""A category trained from a visitor's own images, as the demo's "Train your own" tab does it:
the library's :func:`~hfr.pipeline.train_category` (no second training path) on the uploaded
normal images, an optional check on labelled test images, the model as a zip, and a push to the
visitor's Hub account.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import HfApi

from hfr.config import HFRConfig, TrainConfig
from hfr.data import GOOD, AnomalyDataset, TestSample
from hfr.encoder import resolve_weights_file
from hfr.errors import EncoderWeightsError, HFRError, TrainingError
from hfr.evaluate import collect, report
from hfr.hub import archive_model, push_folder
from hfr.images import ImageInput
from hfr.model import HFR
from hfr.pipeline import ModelSettings, RunOptions, save_model, train_category
from hfr.train import ProgressCallback, TrainingProgress

COMMAND = "trained in the HFR demo app (Train your own)"
MIN_NORMAL_IMAGES = 10
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
    """A repo-safe name: lower case, digits and single dashes, at most 40 characters.

    Example:
        >>> model_name("  My Part #7 ")
        'my-part-7'
    """
    name = _NAME_PART.sub("-", text.lower()).strip("-")[:40].strip("-")
    if not name:
        raise HFRError("give the model a name with at least one letter or digit")
    return name


@dataclass
class TrainedModel:
    """A model trained from uploads: its folder, zip and config, and how it did on labelled test
    images (``normalized_scores`` and ``labels``, 1 = defective; empty when none were given)."""

    name: str
    folder: Path
    archive: Path
    config: HFRConfig
    seconds: float
    normalized_scores: np.ndarray
    labels: np.ndarray


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
    run_folder = output_root / f"{time.strftime('%Y%m%d-%H%M%S')}-{time.monotonic_ns()}"
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
    return TrainedModel(name, folder, archive, model.config, seconds, scores, labels)


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
