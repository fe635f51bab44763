"""ONNX export gives the same maps and scores as PyTorch, for any batch size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from conftest import tiny_model

from hfr.export import export_onnx


def test_onnx_matches_torch_and_carries_the_config(tmp_path: Path) -> None:
    model = tiny_model()
    path = export_onnx(model, tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        images = torch.randn(batch, 3, 64, 64)
        maps, scores = session.run(None, {"images": images.numpy()})
        with torch.no_grad():
            expected = model(images)
        np.testing.assert_allclose(maps, expected.maps.numpy(), atol=1e-5)
        np.testing.assert_allclose(scores, expected.scores.numpy(), atol=1e-5)
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    fingerprint = json.loads(metadata["hfr_config"])["encoder_fingerprint"]
    assert fingerprint == model.config.encoder_fingerprint
    # eager use after tracing still works (the cached operators were not poisoned by the export)
    model.decoder.train()
    model(torch.randn(2, 3, 64, 64)).maps.sum().backward()


def test_onnx_export_of_expansion_features_matches_torch(tmp_path: Path) -> None:
    model = tiny_model(encoder="mobilenetv2_100", feature_location="expansion", input_size=32)
    path = export_onnx(model, tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = torch.randn(2, 3, 32, 32)
    maps, scores = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        expected = model(images)
    np.testing.assert_allclose(maps, expected.maps.numpy(), atol=1e-5)
    np.testing.assert_allclose(scores, expected.scores.numpy(), atol=1e-5)
