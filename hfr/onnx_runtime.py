"""An exported model (:func:`hfr.export.export_onnx`) run by ONNX Runtime on the CPU.

The ONNX file carries the model's config in its metadata, so it predicts on its own: the same
preprocessing, maps, scores and verdicts as the PyTorch model it was exported from
(``hfr predict --backend onnxruntime``).
"""

from __future__ import annotations

import copy
import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from hfr.config import HFRConfig
from hfr.errors import ModelFormatError
from hfr.export import CONFIG_KEY, LEVEL_OUTPUTS, OUTPUTS, QUANTIZATION_KEY
from hfr.extras import require
from hfr.images import ImageInput
from hfr.prediction import predict_images
from hfr.scoring.calibration import Calibration
from hfr.scoring.maps import AnomalyOutput
from hfr.scoring.postprocess import Prediction


class OnnxModel:
    """An ONNX file written by ``hfr export``, with the config it carries.

    Args:
        path: the ``.onnx`` file.
        threads: ONNX Runtime's intra-op threads (default: its own choice, every core).

    Example:
        >>> model = OnnxModel("bottle.onnx")  # doctest: +SKIP
        >>> model.predict(["good.png"])[0].score  # doctest: +SKIP
        14.2
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None) -> None:
        onnxruntime = require("onnxruntime", "export")
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFormatError(f"{self.path} does not exist: write it with `hfr export`")
        options = onnxruntime.SessionOptions()
        # its threads sleep between runs rather than spin, leaving the cores to the
        # preprocessing (torch) that runs between batches
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own untyped errors
            raise ModelFormatError(f"{self.path} is not a readable ONNX model: {error}") from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        if CONFIG_KEY not in metadata:
            raise ModelFormatError(
                f"{self.path} holds no {CONFIG_KEY!r} metadata: export it with `hfr export`"
            )
        self.config = HFRConfig.from_dict(
            json.loads(metadata[CONFIG_KEY]), source=f"{self.path} ({CONFIG_KEY})"
        )
        gate = metadata.get(QUANTIZATION_KEY)
        # the int8 scope and accuracy gate of ``hfr export --int8``; None for a float model
        self.quantization: dict | None = json.loads(gate) if gate else None
        outputs = {output.name for output in self.session.get_outputs()}
        self.has_level_maps = set(LEVEL_OUTPUTS) <= outputs
        self.device = torch.device("cpu")

    def __call__(self, images: torch.Tensor, *, level_maps: bool = True) -> AnomalyOutput:
        """Maps, scores and (with ``level_maps``, where the file has them) level maps of a
        normalised ``(B, 3, H, W)`` batch."""
        levels_wanted = level_maps and self.has_level_maps
        names = [*OUTPUTS, *LEVEL_OUTPUTS] if levels_wanted else list(OUTPUTS)
        maps, scores, *levels = self.session.run(names, {"images": images.float().cpu().numpy()})
        return AnomalyOutput(
            torch.from_numpy(maps), torch.from_numpy(scores), [torch.from_numpy(m) for m in levels]
        )

    def with_calibration(self, calibration: Calibration) -> OnnxModel:
        """This model with another calibration (threshold and normalisation), sharing the
        session, as :meth:`hfr.HFR.with_calibration`."""
        view = copy.copy(self)
        view.config = self.config.replace(calibration=calibration)
        return view

    def predict(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        batch_size: int = 16,
        threshold: float | None = None,
        return_level_maps: bool = False,
        map_size: str = "original",
    ) -> list[Prediction]:
        """Score images as :meth:`hfr.HFR.predict` does."""
        if return_level_maps and not self.has_level_maps:
            raise ModelFormatError(
                f"{self.path} has no level maps (exported before hfr 0.23): export it again"
            )
        return predict_images(
            functools.partial(self, level_maps=return_level_maps),
            self.config,
            images,
            device=self.device,
            batch_size=batch_size,
            threshold=threshold,
            return_level_maps=return_level_maps,
            map_size=map_size,
        )
