"""ONNX export of the whole pipeline: normalised images in, anomaly maps and scores out.

The model's config (encoder, preprocessing, calibration) travels in the ONNX metadata under
``hfr_config``, so a runtime without Python HFR can preprocess and threshold the same way.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hfr.extras import require
from hfr.model import HFR

logger = logging.getLogger(__name__)
CONFIG_KEY = "hfr_config"  # the ONNX metadata entry that holds config.json's contents
QUANTIZATION_KEY = "hfr_int8"  # the int8 scope and accuracy gate of hfr.quantize.export_int8
ENCODER_PREFIX = "model.network.encoder."  # the exported names of the encoder's parameters


OUTPUTS = ("maps", "scores")
LEVEL_OUTPUTS = ("level1", "level2", "level3")  # the residual maps at strides 4, 8 and 16


def _out_of_place(model: HFR) -> HFR:
    """A copy of ``model`` whose activations return new tensors instead of writing in place.

    The exporter rewrites every in-place activation (MobileNetV2's ReLU6s, the decoder's
    LeakyReLUs) through its reference implementation under the symbolic batch size, about 0.2 s
    each; out of place they translate directly. The outputs are the same.
    """
    exported = copy.deepcopy(model)
    for module in exported.modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False
    return exported


class _MapsAndScores(nn.Module):
    def __init__(self, model: HFR) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        output = self.model(images)
        return output.maps, output.scores, *output.level_maps


def export_onnx(model: HFR, path: str | Path, *, opset: int = 18) -> Path:
    """Write ``model`` as ONNX with a dynamic batch dimension.

    Input ``images``: ``(B, 3, H, W)`` float32, preprocessed as ``config["preprocessing"]`` says
    (with ``resize: letterbox``, padded as :func:`hfr.preprocessing.content_box` places the
    image). Outputs ``maps`` ``(B, H, W)`` over the whole input, ``scores`` ``(B,)`` and the
    residual maps of the three levels, ``level1`` to ``level3`` ``(B, H / s, W / s)`` at strides
    4, 8 and 16 (files written before hfr 0.23 lack them).

    Example:
        >>> export_onnx(HFR.from_pretrained("models/bottle"), "bottle.onnx")  # doctest: +SKIP
    """
    require("onnx", "export")
    require("onnxscript", "export")
    path = Path(path)
    model = model.to("cpu").eval()
    height, width = model.config.preprocessing.input_size
    example = torch.randn(2, 3, height, width)
    batch = torch.export.Dim("batch", min=1, max=4096)
    logger.info("tracing %s for ONNX opset %d", model.config.encoder, opset)
    program = torch.onnx.export(
        _MapsAndScores(_out_of_place(model)).eval(),
        (example,),
        input_names=["images"],
        output_names=[*OUTPUTS, *LEVEL_OUTPUTS],
        dynamic_shapes={"images": {0: batch}},
        opset_version=opset,
        dynamo=True,
    )
    program.save(str(path))
    set_metadata(path, {CONFIG_KEY: json.dumps(model.config.to_dict())})
    logger.info("wrote %s", path)
    return path


def set_metadata(path: str | Path, entries: dict[str, str]) -> None:
    """Add ``entries`` to the ONNX file's metadata, replacing those of the same keys."""
    onnx = require("onnx", "export")
    graph = onnx.load(str(path))
    kept = [entry for entry in graph.metadata_props if entry.key not in entries]
    del graph.metadata_props[:]
    graph.metadata_props.extend(kept)
    for key, value in entries.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(graph, str(path))


def max_onnx_difference(model: HFR, path: str | Path, *, batch_size: int = 3) -> dict[str, float]:
    """Largest absolute difference between onnxruntime and PyTorch, on a random batch.

    Returns ``{"maps": ..., "scores": ...}``.
    """
    onnxruntime = require("onnxruntime", "export")
    model = model.to("cpu").eval()
    images = torch.randn(batch_size, 3, *model.config.preprocessing.input_size)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    maps, scores = session.run(list(OUTPUTS), {"images": images.numpy()})
    with torch.inference_mode():
        expected = model(images)
    return {
        "maps": float(np.abs(maps - expected.maps.numpy()).max()),
        "scores": float(np.abs(scores - expected.scores.numpy()).max()),
    }
