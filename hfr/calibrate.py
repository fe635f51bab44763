"""Calibration on normal images the decoder did not train on: the normal mean of each residual
level and scoring term (its scale), then the threshold and the normalisation of the image score
(:class:`~hfr.scoring.calibration.Calibration`). Training calibrates on its held-out images;
:func:`recalibrate` sets a trained model's threshold afresh from other normal images.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from hfr.config import DEFAULT_TARGET_FPR, HFRConfig, Scoring
from hfr.errors import TrainingError
from hfr.images import ImageInput
from hfr.model import HFR
from hfr.progress import ProgressCallback, batches, ignore_progress
from hfr.scoring import maps as anomaly
from hfr.scoring.calibration import (
    LEGACY_THRESHOLD_FIT,
    Calibration,
    check_count,
    check_target_fpr,
    check_threshold_fit,
)
from hfr.tiling import image_scores_of, tiles_of

# What `evaluate` measured at the calibrated threshold: stale once the threshold moves.
THRESHOLD_RESULTS = (
    "threshold_tpr",
    "threshold_fpr",
    "threshold_tpr_interval",
    "threshold_fpr_interval",
    "guaranteed_fpr",
)
logger = logging.getLogger(__name__)

Maps = tuple[list[list[torch.Tensor]], list[dict[str, torch.Tensor]]]


@torch.inference_mode()
def held_out_maps(
    model: HFR,
    images: Sequence[ImageInput],
    batch_size: int,
    progress: bool,
    report: ProgressCallback,
) -> Maps:
    """The residual levels and the term maps of normal ``images`` at the network's input size,
    batch by batch, in one pass."""
    residuals, terms = [], []
    for chunk in batches(images, batch_size, "calibration", progress, report):
        batch = model.preprocess(chunk)
        features, reconstructions = model.reconstruct(batch)
        residuals.append(anomaly.residual_maps(features, reconstructions))
        terms.append(model.scorer.term_maps(features, batch, model.config))
    return residuals, terms


def measured_scales(
    scoring: Scoring, residuals: list[list[torch.Tensor]], terms: list[dict[str, torch.Tensor]]
) -> Scoring:
    """``scoring`` with the scales it still lacks measured on normal maps: each level's mean
    when it scales levels by them, and the mean of each term it weighs."""
    if scoring.needs_level_scales:
        means = [torch.cat([batch[k] for batch in residuals]).double().mean() for k in range(3)]
        scoring = replace(scoring, level_scales=tuple(max(float(m), 1e-6) for m in means))
    for term in terms[0]:
        if getattr(scoring, f"{term}_scale") is None:
            mean = float(torch.cat([batch[term] for batch in terms]).double().mean())
            scoring = replace(scoring, **{f"{term}_scale": max(mean, 1e-6)})
    return scoring


@torch.inference_mode()
def image_scores(
    model: HFR,
    config: HFRConfig,
    residuals: list[list[torch.Tensor]],
    terms: list[dict[str, torch.Tensor]],
) -> np.ndarray:
    """The image scores of :func:`held_out_maps` by ``model``'s scorer under ``config``."""
    size = config.preprocessing.input_size
    return np.concatenate(
        [
            model.scorer.score_residuals(batch, size, config, batch_terms)[1].float().cpu().numpy()
            for batch, batch_terms in zip(residuals, terms, strict=True)
        ]
    )


def recalibrate(
    model: HFR,
    images: Sequence[ImageInput],
    *,
    target_fpr: float | None = DEFAULT_TARGET_FPR,
    threshold_fit: str | None = None,
    add: bool = False,
    batch_size: int = 16,
    progress: bool = True,
) -> Calibration:
    """Set the threshold of a trained ``model`` afresh from normal ``images`` it was not trained
    on: more of them, or closer to what it will see, than the tenth of its training images held
    out at training; with ``add``, from its recorded normal scores and those of ``images``
    together. The scores do not change (the level and term scales stay), only the threshold,
    the rate it guarantees and the normalisation (a term scale set to None, as a study that
    changes a term's weight sets it, is measured on these images first); the verdict rates in
    ``config.evaluation`` measured the old threshold and are dropped. ``threshold_fit``
    (one of :data:`~hfr.scoring.calibration.THRESHOLD_FITS`) defaults to the model's own:
    ``"normal"`` for a model calibrated before 0.17.

    Raises :class:`TrainingError` for a model never calibrated, fewer than two images, a bad
    ``batch_size``, a score that is not finite, or ``add`` on a model whose calibration
    recorded no scores (before 0.21); :class:`~hfr.errors.ConfigError` for a ``target_fpr``
    outside (0, 0.5) or an unknown ``threshold_fit``; :class:`~hfr.errors.ImageLoadError` for
    an unreadable image. The model is unchanged when it raises.

    Example:
        >>> model = HFR.from_pretrained("org/hfr-mvtec-bottle")  # doctest: +SKIP
        >>> good = sorted(Path("line3/good").glob("*.png"))  # doctest: +SKIP
        >>> recalibrate(model, good, target_fpr=0.02).threshold  # doctest: +SKIP
        >>> model.save_pretrained("hfr-bottle-line3")  # doctest: +SKIP
    """
    own = model.config.calibration
    if own is None or model.config.scoring.needs_level_scales:
        raise TrainingError("the model was never calibrated: train it first")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise TrainingError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    check_target_fpr(target_fpr)
    fit = threshold_fit or own.fit or LEGACY_THRESHOLD_FIT
    check_threshold_fit(fit)  # before scoring: a bad fit costs no forward pass
    if add:
        own.recorded_scores()  # refuses before scoring when there are none
    images = list(images)
    if not add:
        check_count(len(images))
    elif not images:
        raise TrainingError("give at least one normal image to add")
    items = tiles_of(images, model.config.preprocessing)
    residuals, terms = held_out_maps(model, items, batch_size, progress, ignore_progress)
    scored = model.config.replace(scoring=measured_scales(model.config.scoring, residuals, terms))
    scores = image_scores_of(image_scores(model, scored, residuals, terms), items)
    if add:
        calibration = own.with_scores(scores, target_fpr=target_fpr, fit=fit)
    else:
        calibration = Calibration.from_normal_scores(
            scores, target_fpr=target_fpr, fit=fit, source="normal images given to recalibrate"
        )
    evaluation = {
        key: value
        for key, value in (scored.evaluation or {}).items()
        if key not in THRESHOLD_RESULTS
    }
    model.config = scored.replace(calibration=calibration, evaluation=evaluation or None)
    logger.info("recalibrated on %d normal images", calibration.num_images)
    report_calibration(calibration)
    return calibration


def report_calibration(calibration: Calibration) -> None:
    """Log the rate the threshold guarantees, and warn when it misses its target (too few
    normal images) or when a fitted threshold's tail looks heavier than the fit assumed."""
    guarantee = calibration.guarantee()
    if guarantee:
        logger.info("threshold: %s", guarantee)
    for warning in (calibration.shortfall(), calibration.tail_warning()):
        if warning:
            logger.warning(warning)
