"""Running a model over a labelled test set and computing every metric."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from hfr import metrics
from hfr.data import AnomalyDataset
from hfr.errors import DatasetLayoutError
from hfr.model import HFR

AUPRO_FPR_LIMIT = 0.3


@dataclass
class EvaluationMaps:
    """Per-image maps and masks at the evaluation resolution, with labels and scores."""

    maps: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    defects: list[str] | None = None


def collect(
    model: HFR, dataset: AnomalyDataset, *, batch_size: int = 16, progress: bool = True
) -> tuple[EvaluationMaps, float]:
    """Maps at the model's input size (a tiled model's: at its tiles' scale) for every test
    sample, and inference seconds per image."""
    if not dataset.test:
        raise DatasetLayoutError(f"{dataset.name}/{dataset.category} has no test samples")
    maps, scores = [], []
    seconds = 0.0
    samples = dataset.test
    for start in tqdm(range(0, len(samples), batch_size), desc="evaluate", disable=not progress):
        chunk = samples[start : start + batch_size]
        began = time.perf_counter()
        predictions = model.predict(
            [s.image for s in chunk], batch_size=batch_size, map_size="input"
        )
        seconds += time.perf_counter() - began
        maps += [p.anomaly_map for p in predictions]
        scores += [p.score for p in predictions]
    masks = (
        np.stack([s.mask(m.shape) for s, m in zip(samples, maps, strict=True)])
        if dataset.has_masks
        else np.zeros(0)
    )
    labels = np.array([s.label for s in samples])
    defects = [s.defect for s in samples]
    result = EvaluationMaps(np.stack(maps), masks, labels, np.array(scores), defects)
    return result, seconds / len(samples)


def compute_metrics(
    result: EvaluationMaps, *, fpr_limit: float = AUPRO_FPR_LIMIT
) -> dict[str, float]:
    """Image AUROC and F1-max; with masks also pixel AUROC, AUPRO and pixel F1-max.

    Metrics that need both normal and anomalous test images are left out when a class is missing.
    """
    values: dict[str, float] = {}
    if 0 < result.labels.sum() < result.labels.size:
        values["image_auroc"] = metrics.image_auroc(result.labels, result.scores)
        values["image_f1_max"], values["image_f1_threshold"] = metrics.f1_max(
            result.labels, result.scores
        )
        if result.defects is not None:
            values["per_defect_image_auroc"] = per_defect_image_auroc(result)
    if result.masks.size and result.masks.any() and not result.masks.all():
        values["pixel_auroc"] = metrics.pixel_auroc(result.masks, result.maps)
        values["aupro"] = metrics.aupro(result.masks, result.maps, fpr_limit=fpr_limit)
        values["pixel_f1_max"], values["pixel_f1_threshold"] = metrics.f1_max(
            result.masks, result.maps
        )
        if result.defects is not None:
            pixel, pro = per_defect_pixel_metrics(result, fpr_limit=fpr_limit)
            values["per_defect_pixel_auroc"], values["per_defect_aupro"] = pixel, pro
    return values


def per_defect_image_auroc(result: EvaluationMaps) -> dict[str, float]:
    """Image AUROC of each defect type against the normal test images: which defects are found."""
    defects = np.array(result.defects)
    normal = result.scores[result.labels == 0]
    table = {}
    for defect in sorted(set(defects[result.labels == 1])):
        found = result.scores[(defects == defect) & (result.labels == 1)]
        labels = np.r_[np.zeros(normal.size), np.ones(found.size)]
        table[defect] = metrics.image_auroc(labels, np.r_[normal, found])
    return table


def per_defect_pixel_metrics(
    result: EvaluationMaps, *, fpr_limit: float = AUPRO_FPR_LIMIT
) -> tuple[dict[str, float], dict[str, float]]:
    """Pixel AUROC and AUPRO of each defect type, over its images and the normal test images:
    which kinds of defect the maps outline. A type whose images carry no mask is left out."""
    defects = np.array(result.defects)
    normal = result.labels == 0
    pixel_auroc, aupro = {}, {}
    for defect in sorted(set(defects[result.labels == 1])):
        chosen = normal | ((defects == defect) & (result.labels == 1))
        masks, maps = result.masks[chosen], result.maps[chosen]
        if masks.any() and not masks.all():
            pixel_auroc[defect] = metrics.pixel_auroc(masks, maps)
            aupro[defect] = metrics.aupro(masks, maps, fpr_limit=fpr_limit)
    return pixel_auroc, aupro


def threshold_rates(model: HFR, result: EvaluationMaps) -> dict[str, Any]:
    """Share of anomalous (TPR) and of normal (FPR) test images the calibrated threshold flags,
    each with its exact 95 % binomial interval (``*_interval``), and the false-alarm rate the
    calibration guarantees (``guaranteed_fpr``), to read beside the measured one."""
    calibration = model.config.calibration
    if calibration is None:
        return {}
    flagged = result.scores > calibration.threshold
    rates: dict[str, Any] = {}
    for key, label in (("threshold_tpr", 1), ("threshold_fpr", 0)):
        chosen = flagged[result.labels == label]
        if chosen.size:
            rates[key] = float(chosen.mean())
            rates[f"{key}_interval"] = metrics.binomial_interval(int(chosen.sum()), chosen.size)
    if calibration.guaranteed_fpr is not None:
        rates["guaranteed_fpr"] = calibration.guaranteed_fpr
    return rates


def evaluate(
    model: HFR, dataset: AnomalyDataset, *, batch_size: int = 16, progress: bool = True
) -> dict:
    """Every metric plus how it was measured (resolution, mask interpolation, timing)."""
    result, seconds_per_image = collect(model, dataset, batch_size=batch_size, progress=progress)
    return report(model, dataset, result, seconds_per_image)


def report(
    model: HFR, dataset: AnomalyDataset, result: EvaluationMaps, seconds_per_image: float
) -> dict:
    """The metrics of collected maps plus how they were measured (``resolution``: the maps',
    the input size, or a tiled model's tiles' scale)."""
    height, width = result.maps.shape[-2:]
    return {
        **compute_metrics(result),
        **threshold_rates(model, result),
        "aupro_fpr_limit": AUPRO_FPR_LIMIT,
        "resolution": f"{height}x{width}",
        "mask_interpolation": "nearest",
        "num_test_images": int(result.labels.size),
        "num_anomalous": int(result.labels.sum()),
        "inference_ms_per_image": 1000.0 * seconds_per_image,
        "device": str(model.device),
        "dataset": dataset.name,
        "category": dataset.category,
    }
