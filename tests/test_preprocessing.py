"""Fitting images to the network input: stretch (every model before 0.7) and letterbox."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import as_format_1, synthetic_images, tiny_model
from PIL import Image

from hfr import HFR
from hfr.cli import build_parser
from hfr.commands.common import model_settings
from hfr.config import DEFAULT_INPUT_SIZE, HFRConfig, Preprocessing, TrainConfig
from hfr.data import AnomalyDataset
from hfr.errors import ConfigError
from hfr.images import image_shape
from hfr.pipeline import ModelSettings, RunOptions, train_category
from hfr.preprocessing import content_box, fitted_resize, to_batch
from hfr.scoring import maps as anomaly

LETTERBOX = Preprocessing((64, 64), resize="letterbox")
STRETCH = Preprocessing((64, 64))


@pytest.mark.parametrize(
    ("image_size", "box"),
    [
        ((48, 64), (8, 0, 48, 64)),  # landscape 4:3: rows of padding above and below
        ((64, 48), (0, 8, 64, 48)),  # portrait: columns of padding
        ((900, 900), (0, 0, 64, 64)),  # the input's aspect: no padding
        ((2, 500), (31, 0, 1, 64)),  # a sliver keeps one row
    ],
)
def test_content_box(image_size: tuple[int, int], box: tuple[int, int, int, int]) -> None:
    assert content_box(image_size, LETTERBOX) == box
    assert content_box(image_size, STRETCH) == (0, 0, 64, 64)


def test_letterbox_pads_with_the_mean_and_keeps_the_image_undistorted() -> None:
    image = synthetic_images(1, size=48, seed=1)[0][:, :]  # 48x48
    wide = np.concatenate([image, image[:, :16]], axis=1)  # 48x64: 4:3
    batch = to_batch([wide], LETTERBOX, "cpu")
    assert torch.equal(batch[..., :8, :], torch.zeros(1, 3, 8, 64))  # the mean colour, normalised
    assert torch.equal(batch[..., 56:, :], torch.zeros(1, 3, 8, 64))
    unpadded = to_batch([wide], Preprocessing((48, 64)), "cpu")  # same aspect: no resize at all
    torch.testing.assert_close(batch[..., 8:56, :], unpadded, rtol=0, atol=0)
    assert not torch.equal(to_batch([wide], STRETCH, "cpu"), batch)


def test_square_images_are_fitted_the_same_either_way() -> None:
    images = synthetic_images(3, size=96, seed=2)
    torch.testing.assert_close(
        to_batch(images, LETTERBOX, "cpu"), to_batch(images, STRETCH, "cpu"), rtol=0, atol=0
    )


def test_mixed_sizes_in_one_batch_equal_one_by_one() -> None:
    images = [np.full((30, 80, 3), 50, np.uint8), np.full((90, 40, 3), 200, np.uint8)]
    images.append(synthetic_images(1, size=48)[0])
    together = to_batch(images, LETTERBOX, "cpu")
    for index, image in enumerate(images):
        alone = to_batch([image], LETTERBOX, "cpu")
        torch.testing.assert_close(together[index : index + 1], alone, rtol=0, atol=0)


def test_predicted_maps_cover_the_image_not_the_padding() -> None:
    model = tiny_model(resize="letterbox")
    image = np.concatenate([synthetic_images(1, size=48, seed=3)[0]] * 2, axis=1)  # 48x96
    prediction = model.predict(image, return_level_maps=True)[0]
    assert prediction.anomaly_map.shape == (48, 96)
    assert [level.shape for level in prediction.level_maps] == [(48, 96)] * 3
    with torch.inference_mode():
        output = model(to_batch([image], model.config.preprocessing, model.device))
    top, left, height, width = content_box((48, 96), model.config.preprocessing)
    assert (top, left, height, width) == (16, 0, 32, 64)
    expected = anomaly.resize_maps(
        output.maps[:, top : top + height, left : left + width], (48, 96)
    )
    np.testing.assert_allclose(prediction.anomaly_map, expected[0].numpy(), rtol=1e-6)
    at_input = model.predict(image, map_size="input")[0].anomaly_map
    assert at_input.shape == (64, 64)  # the image's part, stretched to the input size
    assert prediction.score == pytest.approx(float(output.scores[0]))


def test_slivers_and_tiny_images_are_letterboxed_too() -> None:
    model = tiny_model(resize="letterbox")
    images = [np.full((1, 300, 3), 90, np.uint8), np.full((300, 2), 90, np.uint8)]
    images.append(np.zeros((1, 1, 3), np.uint8))
    predictions = model.predict(images)
    assert [p.anomaly_map.shape for p in predictions] == [(1, 300), (300, 2), (1, 1)]
    assert all(np.isfinite(p.anomaly_map).all() and np.isfinite(p.score) for p in predictions)


def test_configs_without_resize_load_stretched_and_score_as_before(tmp_path: Path) -> None:
    stretched = tiny_model(resize="stretch")
    stretched.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config = as_format_1(config)
    del config["preprocessing"]["resize"]  # as written before 0.7
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = HFR.from_pretrained(tmp_path)
    assert loaded.config.preprocessing.resize == "stretch"
    wide = np.full((30, 80, 3), 120, np.uint8)
    wide[10:20, 30:40] = 0
    assert loaded.predict(wide)[0].score == stretched.predict(wide)[0].score
    letterboxed = tiny_model(resize="letterbox")
    assert letterboxed.predict(wide)[0].score != stretched.predict(wide)[0].score


def test_bad_resize_is_a_config_error() -> None:
    config = HFRConfig.build(encoder="resnet18", encoder_weights="random", input_size=64)
    values = config.to_dict()
    values["preprocessing"]["resize"] = "crop"
    with pytest.raises(ConfigError, match="preprocessing.resize must be one of"):
        HFRConfig.from_dict(values)


def test_command_line_takes_height_by_width_and_the_resize() -> None:
    parser = build_parser()
    base = ["train", "--train-dir", "good", "--output", "m"]
    settings = model_settings(parser.parse_args([*base, "--image-size", "192x256"]))
    assert (settings.input_size, settings.resize) == ((192, 256), "auto")
    settings = model_settings(parser.parse_args([*base, "--resize", "letterbox"]))
    assert (settings.input_size, settings.resize) == (DEFAULT_INPUT_SIZE, "letterbox")
    for bad in ("192x", "x256", "192x256x3", "big"):
        with pytest.raises(SystemExit):
            parser.parse_args([*base, "--image-size", bad])
    config = HFRConfig.build(encoder="resnet18", input_size=settings.input_size)
    assert config.preprocessing.input_size == (256, 256)


def test_the_training_images_aspects_decide_the_fit(tmp_path: Path) -> None:
    paths = []
    for index, (height, width) in enumerate([(300, 400), (303, 400), (30, 40), (400, 300)]):
        paths.append(tmp_path / f"{index}.png")
        Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(paths[-1])
    assert image_shape(paths[0]) == (300, 400)  # from the header
    assert fitted_resize(paths[:3]) == "stretch"  # one aspect, within 2 %
    assert fitted_resize(paths) == "letterbox"  # a portrait among landscapes


@pytest.mark.parametrize(("heights", "resize"), [((36, 36), "stretch"), ((36, 24), "letterbox")])
def test_training_fits_images_as_their_aspects_say(tmp_path, heights, resize) -> None:
    images = [image[: heights[i % 2]] for i, image in enumerate(synthetic_images(6, size=48))]
    dataset = AnomalyDataset("custom", "wide", images, [])
    settings = ModelSettings(encoder="resnet18", encoder_weights="random", input_size=64)
    assert settings.resize == "auto"
    options = RunOptions(training=TrainConfig(epochs=1, batch_size=4), progress=False)
    model, _ = train_category(dataset, tmp_path / "wide", settings=settings, options=options)
    assert HFR.from_pretrained(tmp_path / "wide").config.preprocessing.resize == resize
    assert model.predict(images[1])[0].anomaly_map.shape == (heights[1], 48)


def test_the_card_says_how_images_are_fitted() -> None:
    for resize, text in (("letterbox", "letterboxed: its aspect kept"), ("stretch", "stretched")):
        model = tiny_model(resize=resize)
        model.config = model.config.replace(training={"epochs": 1, "lr": 0.4})
        assert f"Input 64x64 (height x width), bicubic resize of the whole image, {text}" in str(
            model.generate_model_card()
        )
