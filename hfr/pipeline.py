"""One category end to end: train, calibrate, evaluate, save with its model card."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from hfr.config import (
    AUTO_RESIZE,
    AUTO_WEIGHT,
    DEFAULT_COLOUR_DISTANCE,
    DEFAULT_COMBINATION,
    DEFAULT_ENCODER,
    DEFAULT_INPUT_SIZE,
    DEFAULT_MEMORY_POOLING,
    DEFAULT_SCORING,
    TRAINED_MEMORY_WEIGHT,
    TrainConfig,
)
from hfr.data import AnomalyDataset
from hfr.device import auto_device
from hfr.evaluate import evaluate
from hfr.hub import CARD_FILE
from hfr.model import HFR
from hfr.preprocessing import fitted_resize
from hfr.train import ProgressCallback, TrainResult, fit

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSettings:
    """What a new model is built from (the encoder and how its maps are made); the fields are
    keywords of :meth:`HFRConfig.build <hfr.config.HFRConfig.build>`; ``resize="auto"`` and
    ``position_weight="auto"`` and ``colour_weight="auto"`` are decided by
    :func:`train_category` from the training images."""

    encoder: str = DEFAULT_ENCODER
    encoder_weights: str | None = None
    feature_location: str = "stage"
    input_size: int | tuple[int, int] = DEFAULT_INPUT_SIZE  # one side or (height, width)
    sigma: float | None = None  # HFRConfig.build's default: 2 with the context decoder, else 4
    scoring: str = DEFAULT_SCORING
    level_weights: tuple[float, float, float] | None = None  # None: the scoring preset's
    position_weight: float | str = 0.0  # the per-position term; "auto": hfr.position.auto_weight
    memory_weight: float = TRAINED_MEMORY_WEIGHT  # the patch memory term (hfr.memory); 0: off
    memory_pooling: int = DEFAULT_MEMORY_POOLING  # its features' local mean (1: none)
    combination: str = DEFAULT_COMBINATION  # fine and coarse evidence summed ("sum") or multiplied
    colour_weight: float | str = AUTO_WEIGHT  # the colour term (hfr.colour); "auto": if aligned
    colour_distance: str = DEFAULT_COLOUR_DISTANCE  # how it measures (see COLOUR_DISTANCES)
    decoder: str | None = None  # HFRConfig.build's default: "context" from 64 px a side
    resize: str = AUTO_RESIZE  # from the training images' aspects (hfr.preprocessing.fitted_resize)


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
    settings = settings or ModelSettings()
    if settings.resize == AUTO_RESIZE:
        settings = replace(settings, resize=fitted_resize(dataset.train))
        logger.info("images fitted to the input by %s", settings.resize)
    auto_position_weight = settings.position_weight == AUTO_WEIGHT
    auto_colour_weight = settings.colour_weight == AUTO_WEIGHT
    if auto_position_weight:  # chosen by fit from the training images' features
        settings = replace(settings, position_weight=0.0)
    if auto_colour_weight:
        settings = replace(settings, colour_weight=0.0)
    options = options or RunOptions()
    torch.manual_seed(options.training.seed)  # the decoder's initialisation
    device = auto_device(options.device)
    model = HFR(**asdict(settings), dataset=dataset.name, category=dataset.category).to(device)
    began = time.perf_counter()
    result = fit(
        model,
        dataset.train,
        options.training,
        checkpoint_dir=f"{output}-checkpoints",
        progress=options.progress,
        on_progress=options.on_progress,
        auto_position_weight=auto_position_weight,
        auto_colour_weight=auto_colour_weight,
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
