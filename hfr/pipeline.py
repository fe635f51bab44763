"""One category end to end: train, calibrate, evaluate, save with its model card."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from hfr.data import AnomalyDataset
from hfr.device import auto_device
from hfr.evaluate import evaluate
from hfr.model import HFR
from hfr.train import TrainConfig, TrainResult, fit


def train_category(
    dataset: AnomalyDataset,
    output: str | Path,
    *,
    encoder: str,
    encoder_weights: str | None,
    feature_location: str = "stage",
    image_size: int = 256,
    sigma: float = 4.0,
    config: TrainConfig | None = None,
    device: str | None = None,
    run_evaluation: bool = True,
    command: str | None = None,
    repo_id: str | None = None,
    progress: bool = True,
) -> tuple[HFR, TrainResult]:
    """Train on ``dataset.train``, evaluate on ``dataset.test`` if asked, save to ``output``.

    Checkpoints go to ``<output>-checkpoints`` so an interrupted run resumes. ``repo_id`` is the
    Hub repo named in the model card.
    """
    config = config or TrainConfig()
    torch.manual_seed(config.seed)  # the decoder's initialisation
    chosen = auto_device(device)
    model = HFR(
        encoder=encoder,
        encoder_weights=encoder_weights,
        feature_location=feature_location,
        input_size=image_size,
        sigma=sigma,
        dataset=dataset.name,
        category=dataset.category,
    ).to(chosen)
    began = time.perf_counter()
    result = fit(
        model, dataset.train, config, checkpoint_dir=f"{output}-checkpoints", progress=progress
    )
    model.training_info = {
        **model.training_info,
        "seconds": round(time.perf_counter() - began, 1),
        "device": str(chosen),
        "command": command,
    }
    if run_evaluation and dataset.test:
        model.evaluation = {**evaluate(model, dataset, progress=progress), "command": command}
    model.save_pretrained(output, model_card_kwargs={"repo_id": repo_id})
    return model, result
