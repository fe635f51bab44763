"""Batched prediction from image inputs, for any forward pass that maps a normalised batch to
anomaly maps and scores: the PyTorch model (:meth:`hfr.HFR.predict`) or an exported one run by
ONNX Runtime (:meth:`hfr.onnx_runtime.OnnxModel.predict`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hfr.config import HFRConfig
from hfr.errors import HFRError
from hfr.images import ImageInput, LoadedImage, read_image
from hfr.preprocessing import content_box, enlargement_notes, to_batch
from hfr.scoring.maps import AnomalyOutput
from hfr.scoring.postprocess import Prediction, check_threshold, to_predictions
from hfr.tiling import tile_note, tiled_forward

MAP_SIZES = ("original", "input")


def is_single_image(images: Any) -> bool:
    """Whether ``images`` is one image input rather than a list of them."""
    if isinstance(images, (str, Path, bytes, bytearray, memoryview, np.ndarray, torch.Tensor)):
        return True
    return hasattr(images, "read") or not isinstance(images, Iterable)


def check_prediction_options(batch_size: object, map_size: object) -> None:
    """Refuse a ``batch_size`` that is not an integer >= 1 and an unknown ``map_size``."""
    if map_size not in MAP_SIZES:
        raise HFRError(f"map_size must be 'original' or 'input', got {map_size!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise HFRError(f"batch_size must be an integer >= 1, got {batch_size!r}")


def predict_images(
    forward: Callable[[torch.Tensor], AnomalyOutput],
    config: HFRConfig,
    images: ImageInput | Sequence[ImageInput],
    *,
    device: torch.device,
    batch_size: int,
    threshold: float | None,
    return_level_maps: bool,
    map_size: str,
) -> list[Prediction]:
    """Read ``images`` (one or a list), run ``forward`` on their normalised batches
    (``config``'s preprocessing, on ``device``; with tiles, on each image's tiles) and make one
    :class:`Prediction` per image under ``config``'s calibration; the arguments as
    :meth:`hfr.HFR.predict` takes them."""
    check_prediction_options(batch_size, map_size)
    threshold = check_threshold(threshold)
    items = [images] if is_single_image(images) else list(images)
    preprocessing = config.preprocessing
    if preprocessing.tile is not None:
        return [
            _predict_tiled(
                forward,
                config,
                read_image(item),
                device=device,
                batch_size=batch_size,
                threshold=threshold,
                return_level_maps=return_level_maps,
                map_size=map_size,
            )
            for item in items
        ]
    predictions: list[Prediction] = []
    for start in range(0, len(items), batch_size):
        loaded = [read_image(item) for item in items[start : start + batch_size]]
        arrays = [image.pixels for image in loaded]
        output = forward(to_batch(arrays, preprocessing, device))
        scored = to_predictions(
            output,
            calibration=config.calibration,
            sizes=[a.shape[:2] for a in arrays] if map_size == "original" else None,
            boxes=[content_box(a.shape[:2], preprocessing) for a in arrays],
            threshold=threshold,
            return_level_maps=return_level_maps,
        )
        for prediction, image in zip(scored, loaded, strict=True):
            size = image.pixels.shape[:2]
            prediction.notes = (*image.notes, *enlargement_notes(size, preprocessing))
        predictions += scored
    return predictions


def _predict_tiled(
    forward: Callable[[torch.Tensor], AnomalyOutput],
    config: HFRConfig,
    image: LoadedImage,
    *,
    device: torch.device,
    batch_size: int,
    threshold: float,
    return_level_maps: bool,
    map_size: str,
) -> Prediction:
    """One image's :class:`Prediction` from its tiles (:func:`hfr.tiling.tiled_forward`), its
    maps at the image's size or, with ``map_size="input"``, at the tiles' working scale."""
    size = image.pixels.shape[:2]
    output = tiled_forward(
        forward,
        image.pixels,
        config.preprocessing,
        device=device,
        batch_size=batch_size,
        level_maps=return_level_maps,
    )
    (prediction,) = to_predictions(
        output,
        calibration=config.calibration,
        sizes=[size] if map_size == "original" else None,
        threshold=threshold,
        return_level_maps=return_level_maps,
    )
    prediction.notes = (*image.notes, tile_note(size, config.preprocessing))
    return prediction
