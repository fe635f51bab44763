"""One category end to end: train, calibrate, evaluate, save with its model card."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hfr.config import ModelSettings, TrainConfig
from hfr.data import AnomalyDataset
from hfr.device import auto_device
from hfr.evaluate import evaluate
from hfr.hub import CARD_FILE
from hfr.model import HFR
from hfr.train import ProgressCallback, TrainResult, fit

logger = logging.getLogger(__name__)
__all__ = ["ModelSettings", "RunOptions", "save_model", "train_category"]


@dataclass(frozen=True)
class RunOptions:
    """How a category is trained and recorded."""

    training: TrainConfig = field(default_factory=TrainConfig)
    device: str | None = None
    command: str | None = None
    progress: bool = True
    on_progress: ProgressCallback | None = None


def train_category(
    dataset: AnomalyDataset,
    output: str | Path,
    *,
    settings: ModelSettings | None = None,
    options: RunOptions | None = None,
    run_evaluation: bool = True,
    repo_id: str | None = None,
) -> tuple[HFR, TrainResult]:
    """Train on ``dataset.train``, evaluate on ``dataset.test`` if asked, save to ``output``.

    Checkpoints go to ``<output>-checkpoints`` so an interrupted run resumes. ``repo_id`` is the
    Hub repo named in the model card.
    """
    options = options or RunOptions()
    torch.manual_seed(options.training.seed)  # the decoder's initialisation
    device = auto_device(options.device)
    model = HFR(settings or ModelSettings(), dataset=dataset.name, category=dataset.category)
    began = time.perf_counter()
    result = fit(
        model.to(device),
        dataset.train,
        options.training,
        checkpoint_dir=f"{output}-checkpoints",
        progress=options.progress,
        on_progress=options.on_progress,
    )
    training = {
        **model.config.training,
        "seconds": round(time.perf_counter() - began, 1),
        "device": str(device),
        "command": options.command,
    }
    model.config = model.config.replace(training=training)
    if run_evaluation and dataset.test:
        evaluation = evaluate(model, dataset, progress=options.progress)
        model.config = model.config.replace(evaluation={**evaluation, "command": options.command})
    save_model(model, output, repo_id=repo_id)
    logger.info("saved %s/%s to %s", dataset.name, dataset.category, output)
    return model, result


def save_model(model: HFR, output: str | Path, *, repo_id: str | None = None) -> None:
    """Save ``model`` to ``output`` with a model card written afresh from its config."""
    Path(output, CARD_FILE).unlink(missing_ok=True)  # the mixin keeps an existing card
    model.save_pretrained(output, model_card_kwargs={"repo_id": repo_id})
