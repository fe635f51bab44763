"""Training the decoder on normal images, then calibrating the scores on held-out normal images.

The encoder is frozen and no augmentation is used, so each image's features are computed once
and reused in every epoch (``cache_features``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from hfr import anomaly
from hfr.calibration import (
    LEGACY_THRESHOLD_FIT,
    Calibration,
    check_count,
    check_target_fpr,
    check_threshold_fit,
)
from hfr.config import AUTO, DEFAULT_TARGET_FPR, TERMS, TrainConfig, default_epochs
from hfr.device import precision_autocast, scoring_precision, training_precision
from hfr.errors import TrainingDivergedError, TrainingError
from hfr.images import ImageInput
from hfr.model import HFR
from hfr.preprocessing import fitted_resize
from hfr.scoring.terms import TrainingEvidence, term_type
from hfr.scoring.terms.colour import pooled_colour

CHECKPOINT_FILE = "checkpoint.pt"
# What `evaluate` measured at the calibrated threshold: stale once the threshold moves.
THRESHOLD_RESULTS = ("threshold_tpr", "threshold_fpr")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingProgress:
    """Where a run is: ``done`` of ``total`` steps of ``stage`` (``"features"``, ``"epochs"`` or
    ``"calibration"``; the steps are batches, or epochs), with the last epoch's mean loss."""

    stage: str
    done: int
    total: int
    loss: float | None = None


ProgressCallback = Callable[[TrainingProgress], None]


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
    """Train ``model.decoder`` on normal ``images`` and set ``model.calibration`` (and
    ``model.position``, ``model.memory`` and ``model.colour``, the per-position statistics, the
    patch memory and the per-position colour statistics, when the scoring weighs them).

    The model's ``"auto"`` settings are decided from the training images: ``resize`` by
    :func:`hfr.preprocessing.fitted_resize`, a term's weight by its rule
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
    auto_terms = _settle_auto_settings(model, images)
    train_images, calibration_images = split_for_calibration(
        images, config.calibration_fraction, config.seed
    )
    if config.epochs is None:
        config = replace(config, epochs=default_epochs(len(train_images), config.batch_size))
        logger.info("%d training images: %d epochs", len(train_images), config.epochs)
    config = replace(config, precision=training_precision(config.precision, model.device))
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
    data_id = data_fingerprint(images)
    start_epoch = _resume(model, optimizer, checkpoint, result, config, data_id)
    report = on_progress or _ignore_progress
    result.resumed_epochs = start_epoch

    started = time.perf_counter()
    cache = colours = None
    if config.cache_features and start_epoch < config.epochs:
        cache, colours = _encode_all(model, train_images, config.batch_size, progress, report)
    result.feature_seconds = time.perf_counter() - started

    generator = torch.Generator().manual_seed(config.seed)
    for _ in range(start_epoch):  # replay the shuffles of finished epochs
        torch.randperm(len(train_images), generator=generator)
    bar = tqdm(range(start_epoch, config.epochs), desc="epochs", disable=not progress)
    report(TrainingProgress("epochs", start_epoch, config.epochs))
    started = time.perf_counter()
    with training_layout(model.decoder):
        for epoch in bar:
            good_state = {k: v.clone() for k, v in model.decoder.state_dict().items()}
            order = torch.randperm(len(train_images), generator=generator)
            loss = _run_epoch(model, optimizer, order, cache, train_images, config)
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
                _save_checkpoint(checkpoint, model, optimizer, epoch + 1, result, config, data_id)
            report(TrainingProgress("epochs", epoch + 1, config.epochs, loss))
    result.train_seconds = time.perf_counter() - started

    started = time.perf_counter()
    model.eval()
    evidence = TrainingEvidence(
        features=lambda: _feature_batches(
            model, train_images, cache, config.batch_size, progress, report
        ),
        images=lambda: _image_batches(model, train_images, config.batch_size, progress, report),
        colours=colours,
        count=len(train_images),
        training=config,
    )
    if cache is not None:  # the alignment is recorded whenever it costs no extra pass
        evidence.measured_share()
    notes = _fit_terms(model, evidence, auto_terms)
    scores = _calibration_scores(model, calibration_images, config.batch_size, progress, report)
    result.calibration_seconds = time.perf_counter() - started
    model.config = model.config.replace(
        calibration=Calibration.from_normal_scores(
            scores, target_fpr=config.target_fpr, fit=config.threshold_fit
        ),
        training={
            **asdict(config),
            "final_loss": result.losses[-1] if result.losses else None,
            "num_train_images": result.num_train_images,
            "num_calibration_images": result.num_calibration_images,
            "position_share": evidence.position_share,
            **{f"auto_{name}_weight": name in auto_terms for name in TERMS},
            "term_notes": notes,
        },
    )
    logger.info("calibrated on %d held-out normal images", len(calibration_images))
    _warn_of_tail(model.config.calibration)
    return result


def _settle_auto_settings(model: HFR, images: Sequence[ImageInput]) -> list[str]:
    """Decide ``resize`` from ``images`` where it is ``"auto"``, and set the ``"auto"`` term
    weights to 0 until the training features decide them; return those terms' names."""
    config = model.config
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


def recalibrate(
    model: HFR,
    images: Sequence[ImageInput],
    *,
    target_fpr: float | None = DEFAULT_TARGET_FPR,
    threshold_fit: str | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> Calibration:
    """Set the threshold of a trained ``model`` afresh from normal ``images`` it was not trained
    on: more of them, or closer to what it will see, than the tenth of its training images held
    out at training. The scores do not change (the level and term scales stay), only the
    threshold and the normalisation; the verdict rates in ``config.evaluation`` measured the old
    threshold and are dropped. ``threshold_fit`` (``"lognormal"`` or ``"normal"``) defaults to
    the model's own: ``"normal"`` for a model calibrated before 0.17.

    Raises :class:`TrainingError` for a model never calibrated, fewer than two images, a bad
    ``batch_size`` or a score that is not finite; :class:`~hfr.errors.ConfigError` for a
    ``target_fpr`` outside (0, 0.5) or an unknown ``threshold_fit``;
    :class:`~hfr.errors.ImageLoadError` for an unreadable image. The model is unchanged when it
    raises.

    Example:
        >>> model = HFR.from_pretrained("org/hfr-mvtec-bottle")  # doctest: +SKIP
        >>> good = sorted(Path("line3/good").glob("*.png"))  # doctest: +SKIP
        >>> recalibrate(model, good, target_fpr=0.02).threshold  # doctest: +SKIP
        >>> model.save_pretrained("hfr-bottle-line3")  # doctest: +SKIP
    """
    if model.config.calibration is None or model.config.scoring.needs_level_scales:
        raise TrainingError("the model was never calibrated: train it first")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise TrainingError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    check_target_fpr(target_fpr)
    own_fit = model.config.calibration.fit or LEGACY_THRESHOLD_FIT
    fit = own_fit if threshold_fit is None else threshold_fit
    check_threshold_fit(fit)  # before scoring: a bad fit costs no forward pass
    images = list(images)
    check_count(len(images))
    scores = _calibration_scores(model, images, batch_size, progress, _ignore_progress)
    calibration = Calibration.from_normal_scores(
        scores, target_fpr=target_fpr, fit=fit, source="normal images given to recalibrate"
    )
    evaluation = {
        key: value
        for key, value in (model.config.evaluation or {}).items()
        if key not in THRESHOLD_RESULTS
    }
    model.config = model.config.replace(calibration=calibration, evaluation=evaluation or None)
    logger.info("recalibrated on %d normal images", len(images))
    _warn_of_tail(calibration)
    return calibration


def _warn_of_tail(calibration: Calibration) -> None:
    """Log :meth:`Calibration.tail_warning`, if there is one."""
    warning = calibration.tail_warning()
    if warning:
        logger.warning(warning)


def _ignore_progress(_: TrainingProgress) -> None:
    """The progress callback of a run nobody watches."""


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


def _batches(
    images: Sequence[ImageInput],
    batch_size: int,
    stage: str,
    progress: bool,
    report: ProgressCallback,
):
    """Chunks of ``images``; each is reported once the caller is done with it."""
    starts = range(0, len(images), batch_size)
    total = len(starts)
    report(TrainingProgress(stage, 0, total))
    for done, start in enumerate(
        tqdm(starts, desc=stage, unit="batch", disable=not progress, leave=False), start=1
    ):
        yield images[start : start + batch_size]
        report(TrainingProgress(stage, done, total))


def _encode_all(
    model: HFR,
    images: Sequence[ImageInput],
    batch_size: int,
    progress: bool,
    report: ProgressCallback,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Encoder features of every image, ``[f1, f2, f3]`` each ``(N, C_k, H_k, W_k)``, on device,
    and the mean colour of each of its cells (:func:`~.colour.pooled_colour`), from the same
    pass, so that the colour statistics need not read the images again."""
    levels: list[list[torch.Tensor]] = [[], [], []]
    colours = []
    with torch.inference_mode():
        for chunk in _batches(images, batch_size, "features", progress, report):
            batch = model.preprocess(chunk)
            for level, tensor in zip(levels, model.encode(batch), strict=True):
                level.append(tensor)
            colours.append(pooled_colour(batch))
    logger.info("encoded %d training images once (feature cache)", len(images))
    return [torch.cat(level) for level in levels], torch.cat(colours)


def _image_batches(
    model: HFR,
    images: Sequence[ImageInput],
    batch_size: int,
    progress: bool,
    report: ProgressCallback,
) -> Iterator[torch.Tensor]:
    """The training images as normalised input batches, in one more pass over them."""
    for chunk in _batches(images, batch_size, "training statistics", progress, report):
        with torch.inference_mode():
            yield model.preprocess(chunk)


def _feature_batches(
    model: HFR,
    images: Sequence[ImageInput],
    cache: list[torch.Tensor] | None,
    batch_size: int,
    progress: bool,
    report: ProgressCallback,
) -> Iterator[list[torch.Tensor]]:
    """The training images' features ``[f1, f2, f3]`` batch by batch: from the feature cache,
    or from one more encoder pass without it."""
    if cache is not None:
        yield from (
            list(levels) for levels in zip(*(f.split(batch_size) for f in cache), strict=True)
        )
        return
    for chunk in _batches(images, batch_size, "training statistics", progress, report):
        with torch.inference_mode():
            yield model.encode(model.preprocess(chunk))


@torch.inference_mode()
def _calibration_scores(
    model: HFR,
    images: Sequence[ImageInput],
    batch_size: int,
    progress: bool,
    report: ProgressCallback,
) -> np.ndarray:
    """Image scores of held-out normal ``images`` at the network's input size, in one pass.

    When the scoring scales levels by their normal means and has none yet, the means of these
    residuals are measured first and saved in ``model.config.scoring``; so is the mean of each
    added term (per-position, patch memory, colour) that weighs and has no scale yet.
    """
    residuals, terms = [], []
    for chunk in _batches(images, batch_size, "calibration", progress, report):
        batch = model.preprocess(chunk)
        features, reconstructions = model.reconstruct(batch)
        residuals.append(anomaly.residual_maps(features, reconstructions))
        terms.append(model.term_maps(features, batch))
    scoring = model.config.scoring
    if scoring.needs_level_scales:
        means = [torch.cat([batch[k] for batch in residuals]).double().mean() for k in range(3)]
        scoring = replace(scoring, level_scales=tuple(max(float(m), 1e-6) for m in means))
    for term in terms[0]:
        if getattr(scoring, f"{term}_scale") is None:
            mean = float(torch.cat([batch[term] for batch in terms]).double().mean())
            scoring = replace(scoring, **{f"{term}_scale": max(mean, 1e-6)})
    model.config = model.config.replace(scoring=scoring)
    size = model.config.preprocessing.input_size
    return np.concatenate(
        [
            model.score_residuals(batch, size, batch_terms)[1].float().cpu().numpy()
            for batch, batch_terms in zip(residuals, terms, strict=True)
        ]
    )


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


def _save_checkpoint(
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


def _resume(
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
