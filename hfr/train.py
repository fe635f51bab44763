"""Training a model on normal images in three steps: the decoder, then the scoring terms, then
the calibration on held-out normal images (:func:`fit`).

The encoder is frozen and no augmentation is used, so each image's features are computed once
and reused in every epoch (``cache_features``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from hfr.calibrate import (
    held_out_maps,
    image_scores,
    measured_scales,
    recalibrate,
    report_calibration,
)
from hfr.checkpoints import CHECKPOINT_FILE, data_fingerprint, resume, save_checkpoint
from hfr.config import AUTO, TERMS, TrainConfig, default_epochs
from hfr.device import precision_autocast, training_precision
from hfr.errors import TrainingDivergedError, TrainingError
from hfr.feature_passes import encode_all, feature_batches, image_batches
from hfr.images import ImageInput
from hfr.model import HFR
from hfr.preprocessing import auto_input_size, fitted_resize, reduction_hint, typical_size
from hfr.progress import ProgressCallback, TrainingProgress, ignore_progress
from hfr.scoring import maps as anomaly
from hfr.scoring.calibration import Calibration
from hfr.scoring.terms import TrainingEvidence, term_type
from hfr.scoring.terms.memory import search_dims, vector_width
from hfr.tiling import image_scores_of, resolution_summary, tiles_of

__all__ = [
    "CHECKPOINT_FILE",
    "ProgressCallback",
    "TrainResult",
    "TrainingProgress",
    "fit",
    "recalibrate",
    "split_for_calibration",
    "training_layout",
    "training_split",
    "training_step",
]
logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Per-epoch losses and timings of a run; ``resumed_epochs`` came from a checkpoint."""

    losses: list[float] = field(default_factory=list)
    resumed_epochs: int = 0
    feature_seconds: float = 0.0
    train_seconds: float = 0.0
    calibration_seconds: float = 0.0
    num_train_images: int = 0
    num_calibration_images: int = 0


def split_for_calibration(
    images: Sequence[ImageInput], fraction: float, seed: int
) -> tuple[list[ImageInput], list[ImageInput]]:
    """Split normal images into (training, held-out calibration), seeded: ``fraction`` of them
    are held out, at least 2, and at least 5 from 20 images on (a threshold estimated from two
    scores is a guess)."""
    count = len(images)
    held_out = max(5 if count >= 20 else 2, round(fraction * count))
    if count - held_out < 2:
        raise TrainingError(
            f"need at least {held_out + 2} normal images "
            f"(2 to train, {held_out} to calibrate), got {count}"
        )
    order = np.random.default_rng(seed).permutation(count)
    return [images[i] for i in order[held_out:]], [images[i] for i in order[:held_out]]


def training_split(
    model: HFR, images: Sequence[ImageInput]
) -> tuple[list[ImageInput], list[ImageInput]]:
    """The (training, held-out) split of :func:`split_for_calibration` that training ``model``
    on ``images`` made, in the order training used them, from the seed and fraction its config
    records (the defaults of :class:`~hfr.config.TrainConfig` where it records none), so that a
    study can rebuild what training built and score the held-out images again."""
    defaults, training = TrainConfig(), model.config.training or {}
    fraction = training.get("calibration_fraction", defaults.calibration_fraction)
    return split_for_calibration(images, fraction, training.get("seed", defaults.seed))


def fit(
    model: HFR,
    images: Sequence[ImageInput],
    config: TrainConfig | None = None,
    *,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    on_progress: ProgressCallback | None = None,
) -> TrainResult:
    """Train ``model`` on normal ``images``: its decoder, then the scoring terms it weighs
    (``model.terms``), then its scales and threshold on held-out images (``calibration``).

    A tiled model (``preprocessing.tile``) trains and calibrates on its images' tiles
    (:mod:`hfr.tiling`), its threshold on each held-out image's largest tile score.

    The model's ``"auto"`` settings are decided from the training images: the input size by
    :func:`hfr.preprocessing.auto_input_size` (from their typical size, or the tiles'),
    ``resize`` by :func:`hfr.preprocessing.fitted_resize`, a term's weight by its rule
    (:meth:`~hfr.scoring.terms.base.ScoringTerm.chosen_weight`), from the training images'
    features.

    ``on_progress`` is called with a :class:`TrainingProgress` at the start of each stage, after
    each batch of feature extraction and calibration and after each epoch; an exception it raises
    (:class:`~hfr.errors.TrainingCancelled`, say) stops the run there, the model and checkpoint
    left at the last finished epoch.

    Checkpoints are written to ``checkpoint_dir`` after every epoch; a run started again with the
    same folder, images and settings resumes there, and one with other images or settings is
    refused. A NaN or infinite loss raises :class:`TrainingDivergedError` and leaves the model
    and the checkpoint at the last good epoch.

    Example:
        >>> model = HFR(encoder="mobilenetv2_100", encoder_weights="mobilenet_v2-b0353104.pth")
        >>> images = sorted(Path("bottle/train/good").glob("*.png"))
        >>> fit(model, images, TrainConfig(epochs=50))  # doctest: +SKIP
    """
    config = config or TrainConfig()
    source = typical_size(images)
    budget = model.config.preprocessing.input_budget
    auto_terms = _settle_auto_settings(model, images, source)
    resolution = resolution_summary(source, model.config.preprocessing)
    hint = reduction_hint(source, model.config.preprocessing)
    logger.info("%s%s", resolution, f". Note: {hint}" if hint else "")
    if model.config.decoder_blocks == "separable":
        logger.info(
            "separable decoder blocks (depthwise, then 1x1): --decoder-blocks dense for dense"
        )
    train_images, calibration_images = split_for_calibration(
        images, config.calibration_fraction, config.seed
    )
    result = TrainResult(
        num_train_images=len(train_images), num_calibration_images=len(calibration_images)
    )
    train_images, calibration_images = (
        tiles_of(part, model.config.preprocessing) for part in (train_images, calibration_images)
    )
    if len(train_images) != result.num_train_images:
        logger.info("%d tiles of %d training images", len(train_images), result.num_train_images)
    if config.epochs is None:
        config = replace(config, epochs=default_epochs(len(train_images), config.batch_size))
        unit = "images" if len(train_images) == result.num_train_images else "tiles"
        logger.info("%d training %s: %d epochs", len(train_images), unit, config.epochs)
    config = replace(
        config,
        precision=training_precision(config.precision, model.device),
        memory_search_dims=search_dims(
            vector_width(model.encoder.channels, model.config.scoring.memory_context),
            config.memory_search_dims,
        ),
    )
    report = on_progress or ignore_progress
    checkpoint = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir else None
    cache, colours = _train_decoder(
        model, train_images, config, result, checkpoint, data_fingerprint(images), progress, report
    )

    started = time.perf_counter()
    model.eval()
    evidence = TrainingEvidence(
        features=lambda: feature_batches(
            model, train_images, cache, config.batch_size, progress, report
        ),
        images=lambda: image_batches(model, train_images, config.batch_size, progress, report),
        colours=colours,
        count=len(train_images),
        training=config,
    )
    if cache is not None:  # the alignment is recorded whenever it costs no extra pass
        evidence.measured_share()
    notes = _fit_terms(model, evidence, auto_terms)

    residuals, terms = held_out_maps(model, calibration_images, config.batch_size, progress, report)
    scored = model.config.replace(scoring=measured_scales(model.config.scoring, residuals, terms))
    calibration = Calibration.from_normal_scores(
        image_scores_of(image_scores(model, scored, residuals, terms), calibration_images),
        target_fpr=config.target_fpr,
        fit=config.threshold_fit,
    )
    result.calibration_seconds = time.perf_counter() - started
    sizes = {"source_size": list(source), "resolution": resolution, "resolution_hint": hint}
    sizes |= {"auto_input_size": budget is not None, "input_budget": budget}
    training = _training_record(config, result, evidence, auto_terms, notes, sizes)
    model.config = scored.replace(calibration=calibration, training=training)
    logger.info("calibrated on %d held-out normal images", result.num_calibration_images)
    report_calibration(model.config.calibration)
    return result


def _training_record(
    config: TrainConfig,
    result: TrainResult,
    evidence: TrainingEvidence,
    auto_terms: list[str],
    notes: list[str],
    sizes: dict,
) -> dict:
    """What ``config.json`` records of a run: its settings, as resolved, and what it found
    (``sizes``: the training images' typical size and how the network saw them)."""
    return {
        **asdict(config),
        "final_loss": result.losses[-1] if result.losses else None,
        "num_train_images": result.num_train_images,
        "num_calibration_images": result.num_calibration_images,
        "position_share": evidence.position_share,
        **{f"auto_{name}_weight": name in auto_terms for name in TERMS},
        "term_notes": notes,
        **sizes,
    }


def _train_decoder(
    model: HFR,
    images: Sequence[ImageInput],
    config: TrainConfig,
    result: TrainResult,
    checkpoint: Path | None,
    data_id: str,
    progress: bool,
    report: ProgressCallback,
) -> tuple[list[torch.Tensor] | None, torch.Tensor | None]:
    """Train ``model.decoder`` on ``images`` for ``config.epochs``, from ``checkpoint`` if it
    holds the same run, recording into ``result``; return the feature cache and the cells'
    colours (None without the cache)."""
    torch.manual_seed(config.seed)
    optimizer = torch.optim.SGD(
        model.decoder.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    start_epoch = resume(model, optimizer, checkpoint, result, config, data_id)
    result.resumed_epochs = start_epoch

    started = time.perf_counter()
    cache = colours = None
    if config.cache_features and start_epoch < config.epochs:
        cache, colours = encode_all(model, images, config.batch_size, progress, report)
    result.feature_seconds = time.perf_counter() - started

    generator = torch.Generator().manual_seed(config.seed)
    for _ in range(start_epoch):  # replay the shuffles of finished epochs
        torch.randperm(len(images), generator=generator)
    bar = tqdm(range(start_epoch, config.epochs), desc="epochs", disable=not progress)
    report(TrainingProgress("epochs", start_epoch, config.epochs))
    started = time.perf_counter()
    with training_layout(model.decoder):
        for epoch in bar:
            good_state = {k: v.clone() for k, v in model.decoder.state_dict().items()}
            order = torch.randperm(len(images), generator=generator)
            loss = _run_epoch(model, optimizer, order, cache, images, config)
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
                save_checkpoint(checkpoint, model, optimizer, epoch + 1, result, config, data_id)
            report(TrainingProgress("epochs", epoch + 1, config.epochs, loss))
    result.train_seconds = time.perf_counter() - started
    return cache, colours


def _settle_auto_settings(
    model: HFR, images: Sequence[ImageInput], source: tuple[int, int]
) -> list[str]:
    """Decide the input size (from ``source``, the images' typical size, or the tiles') and
    ``resize`` from ``images`` where they are ``"auto"``, and set the ``"auto"`` term weights
    to 0 until the training features decide them; return those terms' names."""
    config = model.config
    budget = config.preprocessing.input_budget
    if budget is not None:
        seen = config.preprocessing.tile or source
        size = auto_input_size(seen, budget)
        config = config.with_input_size(size)
        logger.info(
            "input %dx%d chosen within %d pixels: patch-memory cells of %d px, sigma %g",
            size[1],
            size[0],
            budget,
            config.scoring.memory_stride,
            config.sigma,
        )
    if config.preprocessing.resize == AUTO:
        preprocessing = replace(config.preprocessing, resize=fitted_resize(images))
        config = config.replace(preprocessing=preprocessing)
        logger.info("images fitted to the input by %s", preprocessing.resize)
    auto_terms = [name for name in TERMS if getattr(config.scoring, f"{name}_weight") == AUTO]
    scoring = replace(config.scoring, **{f"{name}_weight": 0.0 for name in auto_terms})
    model.config = config.replace(scoring=scoring)
    return auto_terms


def _fit_terms(model: HFR, evidence: TrainingEvidence, auto_terms: list[str]) -> list[str]:
    """Choose the ``auto_terms``' weights from ``evidence``, then fit every term the scoring
    weighs into ``model.terms``; return the sentences that say what was chosen or advised."""
    notes = []
    for name in auto_terms:
        term = term_type(name)
        weight, reason = term.chosen_weight(evidence, model.config.scoring)
        scoring = replace(model.config.scoring, **{f"{name}_weight": weight})
        model.config = model.config.replace(scoring=scoring)
        notes.append(f"{term.label.capitalize()} {'on' if weight else 'off'}: {reason}")
    for name in TERMS:
        advice = name not in auto_terms and term_type(name).advice(evidence, model.config.scoring)
        if advice:
            notes.append(f"Note: {advice[0].upper()}{advice[1:]} (--{name}-weight)")
    for note in notes:
        logger.info("%s", note)
    model.terms.clear()
    for name in TERMS:
        if getattr(model.config.scoring, f"{name}_weight") > 0:
            term = term_type(name).fit(evidence, model.config.scoring)
            model.terms[name] = term.to(model.device)
    return notes


@contextmanager
def training_layout(decoder: torch.nn.Module) -> Iterator[None]:
    """Hold ``decoder`` in the channels-last layout that training uses (its steps take about a
    sixth less time on CPU than in the contiguous layout; feed it channels-last features), and
    give it back contiguous, as loading leaves it, so that a model scores the same whether it
    was just trained or read from its files."""
    decoder.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        decoder.to(memory_format=torch.contiguous_format)


def _run_epoch(
    model: HFR,
    optimizer: torch.optim.Optimizer,
    order: torch.Tensor,
    cache: list[torch.Tensor] | None,
    images: Sequence[ImageInput],
    config: TrainConfig,
) -> float:
    """One pass over the training images; returns the mean loss (NaN/inf as soon as seen)."""
    model.decoder.train()
    total, count = 0.0, 0
    for start in range(0, len(order), config.batch_size):
        indices = order[start : start + config.batch_size]
        if len(indices) < 2 and len(order) >= 2:
            continue  # BatchNorm needs two samples; the image comes back next epoch
        if cache is not None:
            features = [level[indices.to(level.device)] for level in cache]
        else:
            with torch.inference_mode():
                features = model.encode(model.preprocess([images[i] for i in indices.tolist()]))
            features = [f.clone() for f in features]
        loss = training_step(model, optimizer, features, config).item()
        if not math.isfinite(loss):
            return loss
        total += loss * len(indices)
        count += len(indices)
    model.decoder.eval()
    return total / max(count, 1)


def training_step(
    model: HFR,
    optimizer: torch.optim.Optimizer,
    features: list[torch.Tensor],
    config: TrainConfig,
) -> torch.Tensor:
    """One SGD step of ``model.decoder`` on encoder ``features`` ``[f1, f2, f3]``, in
    ``config.precision`` (resolved: ``"bf16"`` or ``"fp32"``) and training's layout
    (:func:`training_layout`); returns the loss. A loss that is not finite is returned without
    a step, so the weights keep their last good values."""
    features = [f.contiguous(memory_format=torch.channels_last) for f in features]
    with precision_autocast(model.device, config.precision):
        reconstructions = model.decoder(features[-1])
    residuals = anomaly.residual_maps(features, reconstructions)
    loss = anomaly.reconstruction_loss(
        residuals, hard_fraction=config.hard_fraction, hard_weight=config.hard_weight
    )
    if torch.isfinite(loss):
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return loss.detach()
