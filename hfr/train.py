"""Training the decoder on normal images, then calibrating the scores on held-out normal images.

The encoder is frozen and no augmentation is used, so each image's features are computed once
and reused in every epoch (``cache_features``).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from hfr import anomaly
from hfr.calibration import Calibration
from hfr.errors import TrainingDivergedError
from hfr.images import ImageInput, load_rgb
from hfr.model import HFR

CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class TrainConfig:
    """Optimiser and schedule. SGD settings are the paper's (those of STFPM)."""

    epochs: int = 50
    batch_size: int = 16
    lr: float = 0.4
    momentum: float = 0.9
    weight_decay: float = 1e-4
    seed: int = 0
    calibration_fraction: float = 0.1
    cache_features: bool = True


@dataclass
class TrainResult:
    """Per-epoch losses and timings of a run."""

    losses: list[float] = field(default_factory=list)
    feature_seconds: float = 0.0
    train_seconds: float = 0.0
    calibration_seconds: float = 0.0
    num_train_images: int = 0
    num_calibration_images: int = 0


def split_for_calibration(
    images: Sequence[ImageInput], fraction: float, seed: int
) -> tuple[list[ImageInput], list[ImageInput]]:
    """Split normal images into (training, held-out calibration), seeded."""
    count = len(images)
    held_out = max(2, round(fraction * count))
    if count - held_out < 2:
        raise ValueError(
            f"need at least {held_out + 2} normal images "
            f"(2 to train, {held_out} to calibrate), got {count}"
        )
    order = np.random.default_rng(seed).permutation(count)
    return [images[i] for i in order[held_out:]], [images[i] for i in order[:held_out]]


def fit(
    model: HFR,
    images: Sequence[ImageInput],
    config: TrainConfig | None = None,
    *,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``model.decoder`` on normal ``images`` and set ``model.calibration``.

    Checkpoints are written to ``checkpoint_dir`` after every epoch; a run started again with the
    same folder resumes there. A NaN or infinite loss raises :class:`TrainingDivergedError` and
    leaves the model and the checkpoint at the last good epoch.

    Example:
        >>> model = HFR(encoder="mobilenetv2_100", encoder_weights="mobilenet_v2-b0353104.pth")
        >>> images = sorted(Path("bottle/train/good").glob("*.png"))
        >>> fit(model, images, TrainConfig(epochs=50))  # doctest: +SKIP
    """
    config = config or TrainConfig()
    if config.epochs < 1 or config.batch_size < 1:
        raise ValueError("epochs and batch_size must be at least 1")
    train_images, calibration_images = split_for_calibration(
        images, config.calibration_fraction, config.seed
    )
    result = TrainResult(
        num_train_images=len(train_images), num_calibration_images=len(calibration_images)
    )
    torch.manual_seed(config.seed)
    optimizer = torch.optim.SGD(
        model.decoder.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    checkpoint = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir else None
    start_epoch = _resume(model, optimizer, checkpoint, result, config)

    started = time.perf_counter()
    cache = _encode_all(model, train_images, config.batch_size) if config.cache_features else None
    result.feature_seconds = time.perf_counter() - started

    generator = torch.Generator().manual_seed(config.seed)
    for _ in range(start_epoch):  # replay the shuffles of finished epochs
        torch.randperm(len(train_images), generator=generator)
    bar = tqdm(range(start_epoch, config.epochs), desc="epochs", disable=not progress)
    started = time.perf_counter()
    for epoch in bar:
        good_state = {k: v.clone() for k, v in model.decoder.state_dict().items()}
        order = torch.randperm(len(train_images), generator=generator)
        loss = _run_epoch(model, optimizer, order, cache, train_images, config.batch_size)
        if not math.isfinite(loss):
            model.decoder.load_state_dict(good_state)
            kept = f"; the checkpoint {checkpoint} keeps epoch {epoch}" if checkpoint else ""
            raise TrainingDivergedError(
                f"training diverged: loss {loss} in epoch {epoch + 1}; lower the learning rate "
                f"(now {config.lr}){kept}"
            )
        result.losses.append(loss)
        bar.set_postfix(loss=f"{loss:.4f}")
        if checkpoint is not None:
            _save_checkpoint(checkpoint, model, optimizer, epoch + 1, result, config)
    result.train_seconds = time.perf_counter() - started

    started = time.perf_counter()
    model.eval()
    predictions = model.predict(calibration_images, batch_size=config.batch_size, map_size="input")
    model.calibration = Calibration.from_normal_scores(np.array([p.score for p in predictions]))
    result.calibration_seconds = time.perf_counter() - started
    model.training_info = {
        **asdict(config),
        "final_loss": result.losses[-1] if result.losses else None,
        "num_train_images": result.num_train_images,
        "num_calibration_images": result.num_calibration_images,
    }
    return result


def _encode_all(model: HFR, images: Sequence[ImageInput], batch_size: int) -> list[torch.Tensor]:
    """Encoder features of every image, ``[f1, f2, f3]`` each ``(N, C_k, H_k, W_k)``, on device."""
    levels: list[list[torch.Tensor]] = [[], [], []]
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = _load_batch(model, images[start : start + batch_size])
            with model._autocast():
                features = model.encoder(batch)
            for level, tensor in zip(levels, features, strict=True):
                level.append(tensor)
    return [torch.cat(level) for level in levels]


def _load_batch(model: HFR, images: Sequence[ImageInput]) -> torch.Tensor:
    return model.preprocessing([load_rgb(image) for image in images], model.device)


def _run_epoch(
    model: HFR,
    optimizer: torch.optim.Optimizer,
    order: torch.Tensor,
    cache: list[torch.Tensor] | None,
    images: Sequence[ImageInput],
    batch_size: int,
) -> float:
    """One pass over the training images; returns the mean loss (NaN/inf as soon as seen)."""
    model.decoder.train()
    total, count = 0.0, 0
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        if len(indices) < 2 and len(order) >= 2:
            continue  # BatchNorm needs two samples; the image comes back next epoch
        if cache is not None:
            features = [level[indices.to(level.device)] for level in cache]
        else:
            with torch.inference_mode(), model._autocast():
                features = model.encoder(_load_batch(model, [images[i] for i in indices.tolist()]))
            features = [f.clone() for f in features]
        with model._autocast():
            reconstructions = model.decoder(features[-1])
        loss = anomaly.reconstruction_loss(anomaly.residual_maps(features, reconstructions))
        if not torch.isfinite(loss):
            return loss.item()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(indices)
        count += len(indices)
    model.decoder.eval()
    return total / max(count, 1)


def _save_checkpoint(
    path: Path,
    model: HFR,
    optimizer: torch.optim.Optimizer,
    epochs_done: int,
    result: TrainResult,
    config: TrainConfig,
) -> None:
    """Write atomically, so a crash mid-write never loses the previous checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "decoder": model.decoder.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epochs_done": epochs_done,
        "losses": result.losses,
        "encoder_fingerprint": model.encoder_fingerprint,
        "config": asdict(config),
    }
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def _resume(
    model: HFR,
    optimizer: torch.optim.Optimizer,
    path: Path | None,
    result: TrainResult,
    config: TrainConfig,
) -> int:
    """Load a checkpoint of the same run if there is one; return the number of finished epochs."""
    if path is None or not path.is_file():
        return 0
    state = torch.load(path, map_location=model.device, weights_only=True)
    if state["encoder_fingerprint"] != model.encoder_fingerprint:
        raise ValueError(f"{path} was written for other encoder weights; use another folder")
    saved = {k: v for k, v in state["config"].items() if k != "epochs"}
    current = {k: v for k, v in asdict(config).items() if k != "epochs"}
    if saved != current:
        raise ValueError(f"{path} was written with other settings {saved}; use another folder")
    model.decoder.load_state_dict(state["decoder"])
    optimizer.load_state_dict(state["optimizer"])
    result.losses = list(state["losses"])
    return min(int(state["epochs_done"]), config.epochs)
