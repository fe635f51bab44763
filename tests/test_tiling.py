"""Tiled models (``--tile``): the tile grid, stitching, training and calibration on tiles, the
config, and a small defect in a 4000x3000 image that one pass over the whole image cannot see."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import calibrate, synthetic_images, tiny_model, write_pngs

import hfr.tiling
from hfr import HFR, TrainConfig
from hfr.cli import build_parser, main
from hfr.config import TILE_OVERLAP, HFRConfig, ModelSettings
from hfr.errors import ConfigError
from hfr.images import load_rgb
from hfr.tiling import TiledImages, tile_boxes, tile_starts, working_size
from hfr.train import fit, training_split

TILE = 64  # the tiny model's input side: a tile is scored at its own size


def _untiled(model: HFR) -> HFR:
    """The same network and calibration, scoring each image in one pass."""
    single = tiny_model()
    single.load_state_dict(model.state_dict())
    preprocessing = replace(model.config.preprocessing, tile=None)
    single.config = model.config.replace(preprocessing=preprocessing)
    return single.eval()


@pytest.mark.parametrize("length", [1, 63, 64, 65, 100, 160, 1000, 4000])
@pytest.mark.parametrize("tile", [64, 512])
def test_tiles_cover_each_side_and_overlap_by_a_quarter(length: int, tile: int) -> None:
    starts = tile_starts(length, tile)
    side = min(tile, length)
    assert starts[0] == 0 and starts[-1] + side == length
    gaps = np.diff(starts)
    assert (gaps > 0).all() and (gaps <= side * (1 - TILE_OVERLAP)).all()


def test_one_tile_scores_as_one_pass() -> None:
    model = tiny_model(tile=TILE).eval()
    image = synthetic_images(1, size=TILE)[0]
    tiled, single = model.predict(image)[0], _untiled(model).predict(image)[0]
    assert tiled.score == single.score
    np.testing.assert_array_equal(tiled.anomaly_map, single.anomaly_map)


def test_the_map_is_each_tiles_map_in_its_place_the_larger_where_they_overlap() -> None:
    model = tiny_model(tile=TILE).eval()
    image = synthetic_images(1, size=112, seed=3)[0]  # 2 x 2 tiles, overlapping by 16 px
    single = _untiled(model)
    expected = np.full(image.shape[:2], -np.inf, dtype=np.float32)
    scores = []
    for top, left, height, width in tile_boxes(image.shape[:2], (TILE, TILE)):
        crop = single.predict(image[top : top + height, left : left + width])[0]
        region = expected[top : top + height, left : left + width]
        np.maximum(region, crop.anomaly_map, out=region)
        scores.append(crop.score)
    (tiled,) = model.predict(image, return_level_maps=True)
    np.testing.assert_allclose(tiled.anomaly_map, expected, rtol=1e-5, atol=1e-6)
    assert tiled.score == pytest.approx(max(scores), rel=1e-6)
    assert [level.shape for level in tiled.level_maps] == [image.shape[:2]] * 3
    assert tiled.notes == ("scored in 4 tiles of 64x64 px (2 x 2), each at 64x64",)


def test_map_size_input_is_the_tiles_scale() -> None:
    model = tiny_model(tile=128).eval()  # a 128 px tile seen at 64x64: half scale
    image = synthetic_images(1, size=200)[0]
    assert working_size(image.shape[:2], model.config.preprocessing) == (100, 100)
    assert model.predict(image, map_size="input")[0].anomaly_map.shape == (100, 100)
    assert model.predict(image)[0].anomaly_map.shape == (200, 200)


def test_training_calibrates_on_each_held_out_images_largest_tile() -> None:
    images = synthetic_images(20, size=100, seed=5)  # 4 tiles each
    model = tiny_model(tile=TILE)
    result = fit(model, images, TrainConfig(epochs=1, batch_size=8), progress=False)
    assert (result.num_train_images, result.num_calibration_images) == (15, 5)
    calibration = model.config.calibration
    assert calibration.num_images == 5
    _, held_out = training_split(model, images)
    scores = [p.score for p in model.predict(held_out)]
    np.testing.assert_allclose(np.sort(calibration.recorded_scores()), np.sort(scores), rtol=1e-5)


def test_tiles_are_read_image_by_image_each_decoded_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = write_pngs(tmp_path, 3, size=100, seed=7)
    images = synthetic_images(3, size=100, seed=7)
    decoded = []

    def counting(source: object) -> np.ndarray:
        decoded.append(source)
        return load_rgb(source)

    monkeypatch.setattr(hfr.tiling, "load_rgb", counting)
    tiles = TiledImages(paths, (TILE, TILE))
    crops = tiles[0 : len(tiles)]
    assert len(crops) == 12 and tiles.owners.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert decoded == paths
    np.testing.assert_array_equal(crops[5], images[1][:TILE, 100 - TILE :])


def test_the_config_records_tiles_and_an_untiled_config_reads_as_before(tmp_path: Path) -> None:
    assert "tile" not in tiny_model().config.to_dict()["preprocessing"]
    model = tiny_model(tile=(96, 128))
    model.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["preprocessing"]["tile"] == [96, 128]
    assert HFR.from_pretrained(tmp_path).config == model.config


def test_tiles_turn_the_per_position_terms_off() -> None:
    settings = {"encoder": "resnet18", "encoder_weights": "random", "input_size": 64}
    config = HFRConfig.build(**settings, tile=256)  # position and colour "auto" by default
    assert (config.scoring.position_weight, config.scoring.colour_weight) == (0.0, 0.0)
    assert config.preprocessing.resize == "stretch"
    for term in ("position", "colour"):
        with pytest.raises(ConfigError, match=rf"scoring.{term}_weight must be 0 with tiles"):
            HFRConfig.build(**settings, tile=256, **{f"{term}_weight": 1.0})
    with pytest.raises(ConfigError, match="preprocessing.resize must be 'stretch' with tiles"):
        HFRConfig.build(**settings, tile=256, resize="letterbox")
    with pytest.raises(ConfigError, match=r"preprocessing.tile must be .*\[16, 65535\]"):
        HFRConfig.build(**settings, tile=8)


def test_hfr_train_tile_trains_a_tiled_model(tmp_path: Path) -> None:
    folder = tmp_path / "good"
    write_pngs(folder, 8, size=100)
    options = ["--encoder", "resnet18", "--encoder-weights", "random", "--image-size", "64",
               "--epochs", "1", "--batch-size", "8", "--tile", "64"]  # fmt: skip
    output = tmp_path / "m"
    arguments = ["train", "--train-dir", str(folder), "--output", str(output), *options]
    assert build_parser().parse_args(arguments).tile == 64 and ModelSettings().tile is None
    assert main(arguments) == 0
    model = HFR.from_pretrained(output)
    assert model.config.preprocessing.tile == (64, 64)
    assert model.config.training["num_train_images"] == 6  # images, not their 24 tiles
    assert model.predict(folder / "000.png")[0].notes[-1].startswith("scored in 4 tiles")


def _grains(seed: int, height: int, width: int) -> np.ndarray:
    """Grey noise in 2x2-pixel grains: a fine texture that a 4000x3000 image shrunk to 256x256
    averages to a flat grey."""
    rng = np.random.default_rng(seed)
    grains = rng.normal(128, 40, (height // 2, width // 2)).clip(0, 255).astype(np.uint8)
    return np.repeat(np.repeat(grains, 2, 0), 2, 1)[..., None].repeat(3, 2)


_PEAK_PROBE = """
import sys
from pathlib import Path
import numpy as np
from hfr import HFR

def memory_mb(key):
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields[key].split()[0]) / 1024

model = HFR.from_pretrained(sys.argv[1])
image = np.load(sys.argv[2])
model.predict(image[:512, :512])  # warm: the peak below is the large image's own
Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from here
before = memory_mb("VmRSS")
(prediction,) = model.predict(image)
row, column = np.unravel_index(prediction.anomaly_map.argmax(), prediction.anomaly_map.shape)
print(memory_mb("VmHWM") - before, prediction.score, row, column, prediction.notes[-1], sep="\\n")
"""


@pytest.mark.slow
def test_tiles_find_a_20_pixel_defect_in_a_4000x3000_image_that_one_pass_cannot_see(
    tmp_path: Path, mobilenet_weights: str
) -> None:
    """MobileNetV2 trained on 512 px tiles of fine-grained normal texture, each seen at 256x256
    (half scale). The defect is a flat 20x20-pixel patch of the texture's mean grey: in one pass
    over the whole image (256x256, 1/15 scale) it averages away into the grey around it."""
    torch.manual_seed(0)
    model = HFR(encoder="mobilenetv2_100", encoder_weights=mobilenet_weights, tile=512)
    normal = [_grains(seed, 1024, 1024) for seed in range(6)]  # 9 tiles each
    fit(model, normal, TrainConfig(epochs=20), progress=False)
    model.save_pretrained(tmp_path / "model")
    clean = _grains(10, 3000, 4000)
    defective = clean.copy()
    defective[1500:1520, 2000:2020] = 128
    np.save(tmp_path / "defective.npy", defective)

    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            _PEAK_PROBE,
            str(tmp_path / "model"),
            str(tmp_path / "defective.npy"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    peak_mb, score, row, column, note = probe.stdout.strip().split("\n")
    assert note == "scored in 88 tiles of 512x512 px (8 x 11), each at 256x256"
    assert float(peak_mb) < 500  # 12 megapixels: 294 MB measured (the maps at full size)
    assert 1500 - 8 <= int(row) < 1520 + 8 and 2000 - 8 <= int(column) < 2020 + 8
    tiled_clean = model.predict(clean)[0].score
    assert float(score) > tiled_clean * 1.1

    single = model.eval()
    single.config = model.config.replace(
        preprocessing=replace(model.config.preprocessing, tile=None)
    )
    one_pass_defective, one_pass_clean = single.predict([defective, clean])
    assert one_pass_defective.score == pytest.approx(one_pass_clean.score, rel=1e-3)
    row, column = np.unravel_index(
        one_pass_defective.anomaly_map.argmax(), one_pass_defective.anomaly_map.shape
    )
    assert not (1400 <= row < 1620 and 1900 <= column < 2120)


def test_an_exported_tiled_model_scores_its_tiles_as_pytorch(tmp_path: Path) -> None:
    from hfr.export import export_onnx
    from hfr.onnx_runtime import OnnxModel

    model = calibrate(tiny_model(tile=TILE).eval(), synthetic_images(4, size=100, seed=2))
    onnx_model = OnnxModel(export_onnx(model, tmp_path / "model.onnx"), threads=1)
    assert onnx_model.config.preprocessing.tile == (TILE, TILE)
    image = synthetic_images(1, size=150, seed=9)[0]
    (expected,) = model.predict(image, return_level_maps=True)
    (got,) = onnx_model.predict(image, return_level_maps=True)
    assert got.notes == expected.notes == ("scored in 9 tiles of 64x64 px (3 x 3), each at 64x64",)
    assert got.score == pytest.approx(expected.score, rel=1e-5, abs=1e-5)
    assert got.is_anomalous == expected.is_anomalous
    np.testing.assert_allclose(got.anomaly_map, expected.anomaly_map, rtol=1e-4, atol=1e-4)


def test_training_says_how_much_smaller_the_network_sees_the_images(tmp_path: Path) -> None:
    small = tiny_model()
    fit(small, synthetic_images(8, size=200), TrainConfig(epochs=1, batch_size=8), progress=False)
    training = small.config.training
    assert training["source_size"] == [200, 200]
    assert training["resolution"] == "trained at 64x64 from 200x200 images (each side 3.1x smaller)"
    assert training["resolution_hint"] is None  # within 4x: no advice
    large = tiny_model()
    fit(large, synthetic_images(8, size=320), TrainConfig(epochs=1, batch_size=8), progress=False)
    assert large.config.training["resolution_hint"].startswith(
        "a defect under about 20 px across then covers fewer than 4 input pixels"
    )
    card = str(large.generate_model_card())
    assert "- Trained at 64x64 from 320x320 images (each side 5x smaller); a defect under" in card
    tiled = tiny_model(tile=128)
    fit(tiled, synthetic_images(8, size=320), TrainConfig(epochs=1, batch_size=8), progress=False)
    assert tiled.config.training["resolution"] == (
        "trained on 128x128 px tiles at 64x64 from 320x320 images (9 tiles each)"
    )
    assert tiled.config.training["resolution_hint"] is None


def test_evaluate_measures_a_tiled_model_at_its_tiles_scale(tmp_path: Path) -> None:
    from PIL import Image

    from hfr.data import AnomalyDataset, TestSample
    from hfr.evaluate import evaluate

    images = synthetic_images(4, size=200, seed=11)
    samples = []
    for index, image in enumerate(images):
        mask = None
        if index >= 2:
            image[80:120, 80:120] = 255
            mask = tmp_path / f"{index}_mask.png"
            pixels = np.zeros((200, 200), np.uint8)
            pixels[80:120, 80:120] = 255
            Image.fromarray(pixels).save(mask)
        samples.append(TestSample(image, int(index >= 2), "good" if index < 2 else "spot", mask))
    model = calibrate(tiny_model(tile=128).eval(), synthetic_images(4, size=200, seed=12))
    result = evaluate(model, AnomalyDataset("folder", "widget", [], samples), progress=False)
    assert result["resolution"] == "100x100"  # 200 px seen through 128 px tiles at 64x64
    assert result["image_auroc"] == 1.0 and result["pixel_auroc"] > 0.5  # masks read at 100x100


def test_an_image_smaller_than_a_tile_is_scored_with_a_note_on_its_scale() -> None:
    model = tiny_model(tile=128).eval()
    (prediction,) = model.predict(synthetic_images(1, size=48)[0])
    assert prediction.anomaly_map.shape == (48, 48) and np.isfinite(prediction.score)
    assert prediction.notes == (
        "scored in 1 tile of 48x48 px (1 x 1), each at 64x64; the image is smaller than the "
        "model's 128x128 px tiles, so the network sees it at another scale than in training: "
        "its score is less reliable",
    )
