"""ONNX export gives the same maps and scores as PyTorch, for any batch size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from conftest import tiny_model

from hfr.export import LEVEL_OUTPUTS, export_onnx


def _exported_outputs(
    model: torch.nn.Module, folder: Path, images: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Maps and scores of ``images`` from ``model`` exported to ONNX and run by onnxruntime."""
    path = export_onnx(model, folder / "model.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    maps, scores = session.run(["maps", "scores"], {"images": images.numpy()})
    return maps, scores


def test_onnx_matches_torch_and_carries_the_config(tmp_path: Path) -> None:
    model = tiny_model()
    path = export_onnx(model, tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        images = torch.randn(batch, 3, 64, 64)
        maps, scores, *levels = session.run(None, {"images": images.numpy()})
        with torch.no_grad():
            expected = model(images)
        np.testing.assert_allclose(maps, expected.maps.numpy(), atol=1e-5)
        np.testing.assert_allclose(scores, expected.scores.numpy(), atol=1e-5)
        for level, expected_level in zip(levels, expected.level_maps, strict=True):
            np.testing.assert_allclose(level, expected_level.numpy(), atol=1e-5)
    assert [o.name for o in session.get_outputs()] == ["maps", "scores", *LEVEL_OUTPUTS]
    metadata = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    fingerprint = json.loads(metadata["hfr_config"])["encoder_fingerprint"]
    assert fingerprint == model.config.encoder_fingerprint
    # eager use after tracing still works (the cached operators were not poisoned by the export)
    model.decoder.train()
    model(torch.randn(2, 3, 64, 64)).maps.sum().backward()


@pytest.mark.parametrize(
    "options",
    [
        {"encoder": "mobilenetv2_100", "feature_location": "expansion", "input_size": 32},
        {"decoder_blocks": "separable"},  # ResNet18's default: depthwise convolutions
    ],
)
def test_onnx_export_of_other_networks_matches_torch(tmp_path: Path, options: dict) -> None:
    model = tiny_model(**options)
    side = model.config.preprocessing.input_size[0]
    images = torch.randn(2, 3, side, side)
    maps, scores = _exported_outputs(model, tmp_path, images)
    with torch.no_grad():
        expected = model(images)
    np.testing.assert_allclose(maps, expected.maps.numpy(), atol=1e-5)
    np.testing.assert_allclose(scores, expected.scores.numpy(), atol=1e-5)


@pytest.mark.parametrize(
    "terms",
    [
        {"position_weight": 1.0, "memory_weight": 1.0, "memory_pooling": 3, "colour_weight": 0.25},
        {"memory_weight": 1.0, "combination": "product"},
        {"memory_weight": 1.0, "memory_stride": 32},
    ],
)
def test_onnx_export_carries_the_added_terms(tmp_path: Path, terms: dict) -> None:
    """Every added term is in the exported graph: the ONNX maps equal PyTorch's, and PyTorch's
    maps change when any one of the terms is left out."""
    from conftest import synthetic_images

    from hfr.train import TrainConfig, fit

    model = tiny_model(**terms)
    fit(model, synthetic_images(12, seed=2), TrainConfig(epochs=1, batch_size=4), progress=False)
    images = torch.randn(2, 3, 64, 64)
    maps, scores = _exported_outputs(model, tmp_path, images)
    with torch.no_grad():
        expected = model(images)
        features = model.encode(images)
        term_maps = model.scorer.term_maps(features, images, model.config)
    assert sorted(term_maps) == sorted(k.removesuffix("_weight") for k in terms if "weight" in k)
    # random images lie far from the normal ones: the maps reach thousands, so a relative bound
    np.testing.assert_allclose(maps, expected.maps.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores, expected.scores.numpy(), rtol=1e-5, atol=1e-5)
    for left_out in term_maps:
        others = {name: m for name, m in term_maps.items() if name != left_out}
        without = model.scorer.score_residuals(expected.level_maps, (64, 64), model.config, others)[
            0
        ]
        assert not np.allclose(maps, without.numpy(), atol=1e-3), left_out


def test_onnx_export_carries_a_memory_searched_in_fewer_directions(tmp_path: Path) -> None:
    """ResNet18's memory vectors (384 numbers and their 3x3 context), with enough of them kept,
    are searched in 256 of their 768 directions: the exported graph searches the same way and
    measures the same distances."""
    from conftest import synthetic_images

    from hfr.train import TrainConfig, fit

    model = tiny_model(memory_weight=1.0, memory_context=2.0)
    training = TrainConfig(epochs=1, batch_size=4, memory_fraction=1.0)
    fit(model, synthetic_images(24, seed=2), training, progress=False)
    assert model.term("memory").search_dims == 256
    images = torch.randn(2, 3, 64, 64)
    maps, scores = _exported_outputs(model, tmp_path, images)
    with torch.no_grad():
        expected = model(images)
    np.testing.assert_allclose(maps, expected.maps.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores, expected.scores.numpy(), rtol=1e-5, atol=1e-5)


def test_the_export_command_writes_a_checked_model(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from hfr.cli import main

    tiny_model().save_pretrained(tmp_path / "model")
    output = tmp_path / "model.onnx"
    assert main(["export", "--model", str(tmp_path / "model"), "--output", str(output)]) == 0
    assert "max |onnx - torch|" in capsys.readouterr().out and output.stat().st_size


@pytest.fixture(scope="module")
def calibrated() -> torch.nn.Module:
    from conftest import trained_tiny_model

    return trained_tiny_model(memory_weight=1.0)


@pytest.fixture(scope="module")
def calibrated_onnx(calibrated, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``calibrated`` exported once for the tests that only read the file."""
    return export_onnx(calibrated, tmp_path_factory.mktemp("onnx") / "model.onnx")


def test_onnx_runtime_predicts_what_pytorch_predicts(calibrated, calibrated_onnx: Path) -> None:
    """The exported file predicts on its own (its config travels in it): the same scores,
    maps and verdicts as the PyTorch model, for images of any size and mode."""
    from conftest import synthetic_images

    from hfr.onnx_runtime import OnnxModel

    onnx_model = OnnxModel(calibrated_onnx, threads=1)
    assert onnx_model.config == calibrated.config
    images = [*synthetic_images(5, seed=3), np.full((40, 90), 200, np.uint8)]
    expected = calibrated.predict(images, batch_size=4, return_level_maps=True)
    got = onnx_model.predict(images, batch_size=4, return_level_maps=True)
    assert [p.is_anomalous for p in got] == [p.is_anomalous for p in expected]
    np.testing.assert_allclose(
        [p.score for p in got], [p.score for p in expected], rtol=1e-5, atol=1e-5
    )
    for ours, theirs in zip(got, expected, strict=True):
        assert ours.anomaly_map.shape == theirs.anomaly_map.shape
        np.testing.assert_allclose(ours.anomaly_map, theirs.anomaly_map, rtol=1e-4, atol=1e-4)
        assert ours.notes == theirs.notes
        assert len(ours.level_maps) == 3
        for level, expected_level in zip(ours.level_maps, theirs.level_maps, strict=True):
            np.testing.assert_allclose(level, expected_level, rtol=1e-4, atol=1e-5)


def test_a_file_without_level_maps_scores_but_says_it_has_none(
    calibrated, calibrated_onnx: Path, tmp_path: Path
) -> None:
    """A file exported before the level outputs existed (made here by removing them from the
    graph) predicts maps and scores; asking it for level maps is refused with the fix."""
    from conftest import synthetic_images

    from hfr.errors import ModelFormatError
    from hfr.onnx_runtime import OnnxModel

    graph = onnx.load(str(calibrated_onnx))
    kept = [output for output in graph.graph.output if output.name not in LEVEL_OUTPUTS]
    del graph.graph.output[:]
    graph.graph.output.extend(kept)
    onnx.save(graph, str(tmp_path / "old.onnx"))
    old = OnnxModel(tmp_path / "old.onnx", threads=1)
    images = synthetic_images(2, seed=5)
    assert not old.has_level_maps
    np.testing.assert_allclose(
        [p.score for p in old.predict(images)],
        [p.score for p in calibrated.predict(images)],
        rtol=1e-5,
        atol=1e-5,
    )
    with pytest.raises(ModelFormatError, match="has no level maps .* export it again"):
        old.predict(images, return_level_maps=True)


def test_the_predict_command_runs_on_onnx_runtime(calibrated, tmp_path: Path) -> None:
    """``--backend onnxruntime`` exports the model to OUTPUT/model.onnx and scores with it
    (scores.csv as PyTorch's, to float32 rounding); the written file then serves as --model;
    an .onnx model without the backend, and a file that is not an hfr export, are refused."""
    import csv

    from conftest import synthetic_images
    from PIL import Image

    from hfr.cli import main
    from hfr.errors import ModelFormatError
    from hfr.onnx_runtime import OnnxModel

    calibrated.save_pretrained(tmp_path / "model")
    folder = tmp_path / "images"
    folder.mkdir()
    for index, image in enumerate(synthetic_images(4, seed=4)):
        Image.fromarray(image).save(folder / f"{index}.png")

    def scores(output: Path) -> dict[str, float]:
        rows = csv.DictReader((output / "scores.csv").open())
        return {Path(row["image"]).name: float(row["score"]) for row in rows}

    base = ["predict", str(folder), "--no-overlays", "--output"]
    assert main([*base, str(tmp_path / "torch"), "--model", str(tmp_path / "model")]) == 0
    onnx_run = [*base, str(tmp_path / "onnx"), "--model", str(tmp_path / "model")]
    assert main([*onnx_run, "--backend", "onnxruntime"]) == 0
    exported = tmp_path / "onnx" / "model.onnx"
    again = [*base, str(tmp_path / "again"), "--model", str(exported), "--backend", "onnxruntime"]
    assert main(again) == 0
    expected = scores(tmp_path / "torch")
    for run in ("onnx", "again"):
        got = scores(tmp_path / run)
        assert got.keys() == expected.keys()
        # float32 rounding of a random-init model's memory search: within 2e-5 of the score
        assert all(abs(got[name] - expected[name]) <= 2e-5 * expected[name] for name in got)
    with pytest.raises(SystemExit):
        main([*base, str(tmp_path / "refused"), "--model", str(exported)])
    bare = onnx.load(str(exported))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(ModelFormatError, match="holds no 'hfr_config' metadata"):
        OnnxModel(tmp_path / "bare.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelFormatError, match="is not a readable ONNX model"):
        OnnxModel(tmp_path / "junk.onnx")
