"""Checkpoints of a training run: written after every epoch, atomically, and resumed only by
the same run (the same images, encoder weights and settings)."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from hfr.config import TrainConfig
from hfr.device import scoring_precision
from hfr.errors import TrainingError
from hfr.images import ImageInput

if TYPE_CHECKING:
    from hfr.model import HFR
    from hfr.train import TrainResult

CHECKPOINT_FILE = "checkpoint.pt"
logger = logging.getLogger(__name__)


def data_fingerprint(images: Sequence[ImageInput]) -> str:
    """Identifies a training set: file paths and sizes, or array contents (16 hex digits)."""
    digest = hashlib.sha256()
    for image in images:
        if isinstance(image, (str, os.PathLike)):
            path = Path(image)
            size = path.stat().st_size if path.is_file() else -1
            digest.update(f"{path.resolve()}:{size}".encode())
        else:
            digest.update(np.ascontiguousarray(np.asarray(image)).tobytes())
    return digest.hexdigest()[:16]


def save_checkpoint(
    path: Path,
    model: HFR,
    optimizer: torch.optim.Optimizer,
    epochs_done: int,
    result: TrainResult,
    config: TrainConfig,
    data_id: str,
) -> None:
    """Write atomically, so a crash mid-write never loses the previous checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "decoder": model.decoder.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epochs_done": epochs_done,
        "losses": result.losses,
        "encoder_fingerprint": model.config.encoder_fingerprint,
        "data_fingerprint": data_id,
        "config": asdict(config),
    }
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def resume(
    model: HFR,
    optimizer: torch.optim.Optimizer,
    path: Path | None,
    result: TrainResult,
    config: TrainConfig,
    data_id: str,
) -> int:
    """Load a checkpoint of the same run if there is one; return the number of finished epochs.

    A checkpoint of other images, encoder weights or settings raises :class:`TrainingError`
    naming what differs.
    """
    if path is None or not path.is_file():
        return 0
    state = torch.load(path, map_location=model.device, weights_only=True)
    saved = {k: v for k, v in state["config"].items() if k != "epochs"}
    saved.setdefault("precision", scoring_precision(model.device))  # checkpoints before 0.18
    current = {k: v for k, v in asdict(config).items() if k != "epochs"}
    differences = [
        f"{k} {saved.get(k)!r} (now {v!r})" for k, v in current.items() if saved.get(k) != v
    ]
    if state["encoder_fingerprint"] != model.config.encoder_fingerprint:
        differences.append("encoder weights")
    if state.get("data_fingerprint") != data_id:
        differences.append("training images")
    if differences:
        raise TrainingError(
            f"{path} belongs to another run ({', '.join(differences)} differ); "
            "delete it or train into another output folder"
        )
    model.decoder.load_state_dict(state["decoder"])
    optimizer.load_state_dict(state["optimizer"])
    result.losses = list(state["losses"])
    done = min(int(state["epochs_done"]), config.epochs)
    logger.info("resuming from %s: %d of %d epochs done", path, done, config.epochs)
    return done
