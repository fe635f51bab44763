"""``--image-size auto``: the input size chosen by training from the training images' size and
aspect within a pixel budget, recorded in the config, the card and the command line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_images, tiny_model

from hfr import HFR, TrainConfig
from hfr.cli import build_parser
from hfr.config import DEFAULT_INPUT_SIZE, MAX_INPUT_SIDE, HFRConfig
from hfr.errors import ConfigError
from hfr.preprocessing import auto_input_size
from hfr.train import fit

FLOOR = DEFAULT_INPUT_SIZE**2


@pytest.mark.parametrize(
    "source", [(900, 900), (512, 512), (600, 800), (460, 1130), (28, 28), (3000, 4000), (50, 2000)]
)
@pytest.mark.parametrize("budget", [256 * 256, 512 * 512, 768 * 768])
def test_the_chosen_input_keeps_the_aspect_within_the_budget(source, budget) -> None:
    height, width = auto_input_size(source, budget)
    assert height % 16 == 0 and width % 16 == 0 and max(height, width) <= MAX_INPUT_SIDE
    wanted = min(max(source[0] * source[1], FLOOR), budget)
    clamped = max(source) / min(source) > MAX_INPUT_SIDE**2 / wanted  # too long for MAX_INPUT_SIDE
    if not clamped:
        assert height * width <= wanted  # within the budget
        assert (height + 16) * (width + 16) > wanted  # and no 16 px step short of it
        assert math.isclose(height / width, source[0] / source[1], rel_tol=0.1)


def _wide_images(count: int, seed: int = 0) -> list[np.ndarray]:
    """300x500 (height x width) smooth images."""
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 200, 500, dtype=np.float32)[None, :, None]
    return [np.clip(base + rng.normal(0, 8, (300, 500, 3)), 0, 255).astype(np.uint8)] * count


def test_an_auto_input_is_undecided_until_training_chooses_it(tmp_path: Path) -> None:
    model = tiny_model(input_size="auto", input_budget=(256, 384))
    assert "preprocessing.input_size" in model.config.unresolved
    assert model.config.preprocessing.input_size == (DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE)
    assert model.config.to_dict()["preprocessing"]["input_budget"] == 256 * 384
    assert HFRConfig.from_dict(model.config.to_dict()) == model.config

    fit(model, _wide_images(8), TrainConfig(epochs=1, batch_size=8), progress=False)
    config, training = model.config, model.config.training
    # 150,000 source pixels, 98,304 allowed: the 3:5 aspect at 240x400 (96,000 pixels)
    assert config.preprocessing.input_size == (240, 400)
    assert config.preprocessing.input_budget is None and config.unresolved == []
    assert training["auto_input_size"] is True and training["input_budget"] == 256 * 384
    assert training["resolution"] == (
        "trained at 400x240 from 500x300 images "
        "(each side 1.2x smaller; 1.5x the pixels and time per image of 256x256)"
    )
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert "input_budget" not in saved["preprocessing"]  # a trained model's size is fixed
    assert "within 98304 pixels (`--image-size auto`)" in str(model.generate_model_card())
    loaded = HFR.from_pretrained(tmp_path)
    assert loaded.config.preprocessing.input_size == (240, 400)
    (result,) = loaded.predict(_wide_images(1, seed=1)[0])
    assert result.anomaly_map.shape == (300, 500)


def test_a_fixed_input_records_no_budget() -> None:
    model = tiny_model()
    fit(model, synthetic_images(8, size=96), TrainConfig(epochs=1, batch_size=8), progress=False)
    assert model.config.preprocessing.input_size == (64, 64)
    assert model.config.training["auto_input_size"] is False
    assert model.config.training["input_budget"] is None


def test_tiles_choose_the_input_from_the_tile() -> None:
    model = tiny_model(input_size="auto", input_budget=512, tile=(96, 160))
    fit(model, synthetic_images(8, size=200), TrainConfig(epochs=1, batch_size=8), progress=False)
    # a 96x160 tile has fewer pixels than 256x256: the input is that many, at its aspect
    assert model.config.preprocessing.input_size == auto_input_size((96, 160), 512 * 512)
    assert model.config.preprocessing.input_size == (192, 320)


def test_the_command_line_takes_auto_and_a_budget() -> None:
    parser = build_parser()
    args = parser.parse_args(
        [
            "train",
            "--train-dir",
            "x",
            "--output",
            "y",
            "--image-size",
            "auto",
            "--input-budget",
            "384x512",
        ]
    )
    assert (args.input_size, args.input_budget) == ("auto", (384, 512))
    for wrong in (["--image-size", "automatic"], ["--input-budget", "10"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["train", "--train-dir", "x", "--output", "y", *wrong])


@pytest.mark.parametrize("budget", [8, 0, "512", (512,)])
def test_a_budget_that_is_not_a_size_is_refused(budget) -> None:
    with pytest.raises(ConfigError, match="input_budget"):
        tiny_model(input_size="auto", input_budget=budget)


def test_a_budget_without_auto_is_refused_rather_than_ignored() -> None:
    with pytest.raises(ConfigError, match="give input_size='auto'"):
        tiny_model(input_budget=384)  # a fixed 64x64 input
    assert tiny_model(input_size="auto", input_budget=384).config.preprocessing.input_budget == (
        384 * 384
    )


@pytest.mark.parametrize(
    ("size", "sigma", "stride"),
    [
        (64, 2.0, 16),
        (256, 2.0, 16),
        ((288, 400), 2.0, 16),
        (512, 4.0, 32),
        ((432, 576), 4.0, 32),
        (1024, 4.0, 32),
    ],
)
def test_the_smoothing_and_memory_cells_follow_the_input_scale(size, sigma, stride) -> None:
    """An input of about twice 256x256's side smooths twice as much and describes each memory
    cell over twice the pixels, so that both see as much of the part as at 256x256."""
    config = HFRConfig.build(encoder="resnet18", encoder_weights="random", input_size=size)
    assert (config.sigma, config.scoring.memory_stride) == (sigma, stride)
    given = HFRConfig.build(encoder="resnet18", input_size=size, sigma=3.0, memory_stride=64)
    assert (given.sigma, given.scoring.memory_stride) == (3.0, 64)  # what a user gives stays


def test_an_auto_input_decides_its_smoothing_and_memory_cells_with_its_size() -> None:
    model = tiny_model(input_size="auto", input_budget=512, memory_weight=1.0)
    assert {"sigma", "scoring.memory_stride"} <= set(model.config.unresolved)
    assert model.config.map_sigma == 2.0  # what the 256x256 input it has until training needs
    fit(model, synthetic_images(8, size=512), TrainConfig(epochs=1, batch_size=8), progress=False)
    config = model.config
    assert config.preprocessing.input_size == (512, 512) and config.unresolved == []
    assert (config.sigma, config.scoring.memory_stride, model.term("memory").stride) == (
        4.0,
        32,
        32,
    )
    assert model.predict(synthetic_images(1, size=512, seed=3)[0])[0].anomaly_map.shape == (
        512,
        512,
    )


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"sigma": "auto"}, "sigma"), ({"memory_stride": "auto"}, "scoring.memory_stride")],
)
def test_a_decided_input_with_an_undecided_setting_is_refused(changes, field) -> None:
    values = HFRConfig.build(encoder="resnet18", input_size=64).to_dict()
    if "memory_stride" in changes:
        values["scoring"] = {**values["scoring"], **changes}
    else:
        values |= changes
    with pytest.raises(ConfigError, match=field):
        HFRConfig.from_dict(values)
