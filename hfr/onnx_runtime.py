"""An exported model (:func:`hfr.export.export_onnx`) run by ONNX Runtime on the CPU.

The ONNX file carries the model's config in its metadata, so it predicts on its own: the same
preprocessing, maps, scores and verdicts as the PyTorch model it was exported from
(``hfr predict --backend onnxruntime``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from hfr.config import HFRConfig
from hfr.errors import ModelFormatError
from hfr.export import CONFIG_KEY
from hfr.extras import require
from hfr.images import ImageInput
from hfr.prediction import is_single_image, predict_images
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

    def __call__(self, images: torch.Tensor) -> AnomalyOutput:
        """Maps and scores of a normalised ``(B, 3, H, W)`` batch."""
        maps, scores = self.session.run(None, {"images": images.float().cpu().numpy()})
        return AnomalyOutput(torch.from_numpy(maps), torch.from_numpy(scores), [])

    def predict(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        batch_size: int = 16,
        threshold: float | None = None,
        map_size: str = "original",
    ) -> list[Prediction]:
        """Score images as :meth:`hfr.HFR.predict` does (without the level maps, which the
        exported graph does not return)."""
        return predict_images(
            self,
            self.config,
            [images] if is_single_image(images) else list(images),
            device=torch.device("cpu"),
            batch_size=batch_size,
            threshold=threshold,
            return_level_maps=False,
            map_size=map_size,
        )
