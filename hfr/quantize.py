"""int8 quantisation of an exported model (ONNX Runtime's static quantisation), kept only when
it detects as well as the float model on a labelled test set.

``scope="decoder"`` quantises the decoder's convolutions; ``"all"`` the encoder's as well. The
maps compare the encoder's features with their reconstructions, so the encoder's rounding errors
reach every pixel: on screw, ``"all"`` cost MobileNetV2 0.089 image AUROC and EfficientNet-Lite0
0.59, ``"decoder"`` at most 0.0008 on bottle and screw with both (``research/results/int8_0.23``).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from hfr.config.settings import INT8_SCOPES, MAX_INT8_DROPS
from hfr.data import AnomalyDataset
from hfr.errors import HFRError
from hfr.evaluate import collect, compute_metrics
from hfr.export import ENCODER_PREFIX, QUANTIZATION_KEY, export_onnx, set_metadata
from hfr.extras import require
from hfr.images import ImageInput, read_image
from hfr.model import HFR
from hfr.preprocessing import to_batch
from hfr.tiling import tiles_of

if TYPE_CHECKING:
    from hfr.onnx_runtime import OnnxModel

CALIBRATION_IMAGES = 32
METRIC_NAMES = {"image_auroc": "image AUROC", "aupro": "AUPRO"}


class AccuracyGateError(HFRError):
    """The quantised model lost more image AUROC or AUPRO than allowed; nothing was written."""


def quantize_onnx(
    model: HFR,
    source: str | Path,
    target: str | Path,
    *,
    calibration_images: Sequence[ImageInput],
    scope: str = "decoder",
) -> Path:
    """Write an int8 copy of ``source`` (``model`` exported by :func:`hfr.export.export_onnx`).

    Activation ranges come from ``calibration_images`` (normal images, preprocessed as the
    model's config says; a tiled model's, their tiles); weights are int8 per output channel.
    The scoring (maps, memory search, smoothing) stays float. Returns ``target``.
    """
    if scope not in INT8_SCOPES:
        raise HFRError(f"scope must be one of {INT8_SCOPES}, got {scope!r}")
    if not calibration_images:
        raise HFRError("int8 quantisation needs at least one normal image to calibrate on")
    onnx = require("onnx", "export")
    quantization = require("onnxruntime.quantization", "export")
    shape_inference = require("onnxruntime.quantization.shape_inference", "export")
    nodes = _convolutions(model, onnx.load(str(source)), scope)
    items = tiles_of(calibration_images, model.config.preprocessing)
    batches = [
        {"images": to_batch(chunk, model.config.preprocessing, torch.device("cpu")).numpy()}
        for chunk in _chunks([read_image(item).pixels for item in items], 8)
    ]

    class Reader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self.remaining = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.remaining, None)

    with tempfile.TemporaryDirectory() as folder:
        folded = Path(folder, "folded.onnx")  # constants folded: the decoder's weights fixed
        shape_inference.quant_pre_process(str(source), str(folded), skip_symbolic_shape=True)
        quantization.quantize_static(
            str(folded),
            str(target),
            Reader(),
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=True,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            op_types_to_quantize=["Conv"],
            nodes_to_quantize=nodes,
        )
    return Path(target)


def export_int8(
    model: HFR,
    target: str | Path,
    dataset: AnomalyDataset,
    *,
    scope: str = "decoder",
    max_auroc_drop: float = MAX_INT8_DROPS["image_auroc"],
    max_aupro_drop: float = MAX_INT8_DROPS["aupro"],
    batch_size: int = 16,
) -> dict:
    """Export ``model`` to ONNX, quantise it and keep it at ``target`` only if, on ``dataset``'s
    test split, its image AUROC is at most ``max_auroc_drop`` and (where the test images have
    masks) its AUPRO at most ``max_aupro_drop`` below the float export's.

    Calibrates on up to 32 of ``dataset``'s training images, evenly spaced. Returns the gate's
    record (also stored in the file's metadata under ``hfr_int8``); raises
    :class:`AccuracyGateError` and writes nothing when a drop is larger.

    Example:
        >>> export_int8(HFR.from_pretrained("models/bottle"), "bottle.int8.onnx",
        ...             load_mvtec("mvtec_ad", "bottle"))  # doctest: +SKIP
        {'scope': 'decoder', 'float': {'image_auroc': 1.0, ...}, 'int8': {...}, ...}
    """
    from hfr.onnx_runtime import OnnxModel

    if scope not in INT8_SCOPES:
        raise HFRError(f"scope must be one of {INT8_SCOPES}, got {scope!r}")
    limits = {"image_auroc": max_auroc_drop, "aupro": max_aupro_drop}
    for name, limit in limits.items():
        if not 0 <= limit <= 1:
            raise HFRError(f"the largest {name} drop must be within [0, 1], got {limit}")
    training = list(dataset.train)
    count = min(CALIBRATION_IMAGES, len(training))
    picks = np.round(np.linspace(0, len(training) - 1, count)).astype(int)
    with tempfile.TemporaryDirectory() as folder:
        float_path = export_onnx(model, Path(folder, "float.onnx"))
        int8_path = quantize_onnx(
            model,
            float_path,
            Path(folder, "int8.onnx"),
            calibration_images=[training[i] for i in picks],
            scope=scope,
        )
        measured = {
            name: _detection_metrics(OnnxModel(path), dataset, batch_size)
            for name, path in (("float", float_path), ("int8", int8_path))
        }
        drops = {
            name: measured["float"][name] - measured["int8"][name]
            for name in limits
            if name in measured["float"]
        }
        record = {
            "scope": scope,
            **measured,
            "drops": drops,
            "max_drops": {name: limits[name] for name in drops},
            "dataset": f"{dataset.name}/{dataset.category}",
            "calibration_images": len(picks),
        }
        failed = [
            f"{drop:.4f} {METRIC_NAMES[name]} ({measured['float'][name]:.4f} -> "
            f"{measured['int8'][name]:.4f}, more than {limits[name]})"
            for name, drop in drops.items()
            if drop > limits[name]
        ]
        if failed:
            raise AccuracyGateError(
                f"int8 ({scope}) lost {' and '.join(failed)} on {record['dataset']}; nothing was "
                "written. Try --int8 decoder, or accept the loss with --max-auroc-drop or "
                "--max-aupro-drop."
            )
        set_metadata(int8_path, {QUANTIZATION_KEY: json.dumps(record)})
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(int8_path).replace(target)
    return record


def _convolutions(model: HFR, graph, scope: str) -> list[str]:
    """Names of the Conv nodes to quantise: the decoder's (every Conv whose weight is not an
    encoder parameter: the scoring has none), and with ``"all"`` the encoder's too."""
    convs = [node for node in graph.graph.node if node.op_type == "Conv"]
    decoder = [node.name for node in convs if not node.input[1].startswith(ENCODER_PREFIX)]
    expected = sum(isinstance(m, torch.nn.Conv2d) for m in model.network.decoder.modules())
    if len(decoder) != expected:
        raise HFRError(
            f"the exported graph has {len(decoder)} decoder convolutions where the model has "
            f"{expected}: it was not written by this version's export_onnx"
        )
    return [node.name for node in convs] if scope == "all" else decoder


def _detection_metrics(
    model: OnnxModel, dataset: AnomalyDataset, batch_size: int
) -> dict[str, float]:
    """Image AUROC (and pixel AUROC and AUPRO where there are masks) of ``model`` on the test
    split."""
    maps, _ = collect(model, dataset, batch_size=batch_size, progress=False)
    values = compute_metrics(maps)
    if "image_auroc" not in values:
        raise HFRError(
            f"{dataset.name}/{dataset.category} needs good and defective test images to measure "
            "the int8 model's accuracy"
        )
    return {k: values[k] for k in ("image_auroc", "pixel_auroc", "aupro") if k in values}


def _chunks(items: list, size: int) -> list[list]:
    return [items[start : start + size] for start in range(0, len(items), size)]
