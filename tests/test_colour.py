"""The colour term (scoring.colour_weight): statistics, training, the auto rule, save/load."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import (
    TERM_CONFIG,
    TERM_IMAGES,
    as_format_1,
    model_from_settings,
    shifted_images,
    synthetic_images,
    tiny_model,
    trained_tiny_model,
)
from safetensors.torch import load_file, save_file

from hfr import HFR
from hfr.cards import scoring_text
from hfr.config import ALIGNED_COLOUR_WEIGHTS, Scoring
from hfr.data import AnomalyDataset
from hfr.errors import ConfigError, ModelFormatError
from hfr.pipeline import ModelSettings, RunOptions, train_category
from hfr.scoring import maps as anomaly
from hfr.scoring.terms.colour import (
    COLOUR_STRIDE,
    ColourStatistics,
    chosen_colour_weight,
    colour_distance,
    pooled_colour,
)
from hfr.scoring.terms.position import PositionStatistics
from hfr.train import TrainConfig, fit, split_for_calibration

IMAGES, CONFIG = TERM_IMAGES, TERM_CONFIG


@pytest.fixture(scope="module")
def trained() -> HFR:
    return trained_tiny_model(colour_weight=0.5)


def test_statistics_are_the_per_position_gaussian_of_the_pooled_input() -> None:
    images = torch.randn(9, 3, 16, 24)
    stats = ColourStatistics.from_images(images.split(4))
    expected = PositionStatistics.from_features([pooled_colour(images)])
    torch.testing.assert_close(stats.mean, expected.mean)
    torch.testing.assert_close(stats.variance, expected.variance)
    assert tuple(stats.mean.shape) == (3, 16 // COLOUR_STRIDE, 24 // COLOUR_STRIDE)
    sample = torch.randn(2, 3, 16, 24)
    torch.testing.assert_close(stats(sample), expected(pooled_colour(sample)))
    with pytest.raises(ConfigError, match="the input's colour in 4-pixel cells"):
        stats(torch.randn(1, 3, 32, 32))


def test_a_brighter_region_stands_out_where_the_features_would_not_tell() -> None:
    normal = torch.stack([torch.from_numpy(i).permute(2, 0, 1).float() / 255 for i in IMAGES])
    stats = ColourStatistics.from_images([normal])
    brighter = normal[:2].clone()
    brighter[:, :, :24, :24] *= 1.35  # a smooth quarter, 35 % brighter
    values = stats(brighter)
    inside, outside = values[:, :6, :6], values[:, 6:, 6:]
    assert inside.mean() > 20 * outside.mean()


def test_training_measures_statistics_and_scale_and_the_map_adds_the_term(trained: HFR) -> None:
    scoring = trained.config.scoring
    assert scoring.colour_weight == 0.5 and scoring.colour_scale > 0
    train_images, _ = split_for_calibration(IMAGES, CONFIG.calibration_fraction, CONFIG.seed)
    expected = ColourStatistics.from_images([trained.preprocess(train_images)])
    torch.testing.assert_close(trained.term("colour").mean, expected.mean)
    torch.testing.assert_close(trained.term("colour").variance, expected.variance)
    assert scoring.colour_distance == "mahalanobis"  # the default since 0.14
    images = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        out = trained(images)
        colour = trained.term("colour")(images).sqrt()
    levels = anomaly.weigh_levels(
        out.level_maps, scales=scoring.level_scales, weights=scoring.level_weights
    )
    levels.append(colour * 0.5 / scoring.colour_scale)
    torch.testing.assert_close(out.maps, anomaly.anomaly_map(levels, (64, 64), 2.0))
    assert (
        "plus 0.5 x the Mahalanobis distance (per-channel variances) of the input's colour in "
        "each 4x4-pixel cell" in scoring_text(scoring)
    )


def test_a_config_of_0_13_scores_with_the_squared_distance_as_it_did(
    trained: HFR, tmp_path: Path
) -> None:
    trained.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config = as_format_1(config)
    del config["scoring"]["colour_distance"]  # as 0.13 wrote it
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = HFR.from_pretrained(tmp_path)
    scoring = loaded.config.scoring
    assert scoring.colour_distance == "squared"
    images = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        out = loaded(images)
        colour = loaded.term("colour")(images)  # the mean squared standardised difference, no root
    levels = anomaly.weigh_levels(
        out.level_maps, scales=scoring.level_scales, weights=scoring.level_weights
    )
    levels.append(colour * 0.5 / scoring.colour_scale)
    torch.testing.assert_close(out.maps, anomaly.anomaly_map(levels, (64, 64), 2.0))
    assert "the squared standardised distance of the input's colour" in scoring_text(scoring)


def test_the_distance_is_the_root_of_the_squared_one_or_that_itself() -> None:
    squared = torch.tensor([[0.0, 0.25], [4.0, 100.0]])
    torch.testing.assert_close(
        colour_distance(squared, "mahalanobis"), torch.tensor([[0.0, 0.5], [2.0, 10.0]])
    )
    assert colour_distance(squared, "squared") is squared
    for bad in ("euclidean", None, 1):
        with pytest.raises(ConfigError, match="scoring.colour_distance must be one of"):
            Scoring.preset("hfr", colour_distance=bad)


def test_statistics_are_the_same_without_the_feature_cache(trained: HFR) -> None:
    model = tiny_model(colour_weight=0.5)
    fit(model, IMAGES, replace(CONFIG, cache_features=False), progress=False)
    torch.testing.assert_close(model.term("colour").mean, trained.term("colour").mean)
    torch.testing.assert_close(model.term("colour").variance, trained.term("colour").variance)


def test_statistics_travel_with_the_weights_and_score_the_same(
    trained: HFR, tmp_path: Path
) -> None:
    trained.save_pretrained(tmp_path)
    assert {"colour.mean", "colour.variance"} <= set(load_file(tmp_path / "model.safetensors"))
    loaded = HFR.from_pretrained(tmp_path)
    assert loaded.config.scoring == trained.config.scoring
    image = synthetic_images(1, seed=8)[0]
    assert loaded.predict(image)[0].score == trained.predict(image)[0].score
    card = (tmp_path / "README.md").read_text()
    assert "(`colour.mean`, `colour.variance`), all in" in card


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"colour.mean": None, "colour.variance": None}, "holds no colour statistics"),
        ({"colour.variance": None}, "lacks 'colour.variance'"),
        ({"colour.mean": torch.zeros(1, 16, 16)}, r"expected float32 \(3, H, W\)"),
        ({"colour.variance": torch.full((3, 16, 16), float("inf"))}, "NaN or infinite"),
    ],
)
def test_missing_or_corrupt_statistics_are_refused(
    trained: HFR, tmp_path: Path, changes: dict, message: str
) -> None:
    trained.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    for name, value in changes.items():
        if value is None:
            del state[name]
        else:
            state[name] = value
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ModelFormatError, match=message):
        HFR.from_pretrained(tmp_path)


def test_a_zero_weight_scores_without_the_term(trained: HFR, tmp_path: Path) -> None:
    trained.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["scoring"]["colour_weight"] = 0
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = HFR.from_pretrained(tmp_path)
    images = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        out, with_term = loaded(images), trained(images)
    scoring = loaded.config.scoring
    levels = anomaly.weigh_levels(
        out.level_maps, scales=scoring.level_scales, weights=scoring.level_weights
    )
    torch.testing.assert_close(out.maps, anomaly.anomaly_map(levels, (64, 64), 2.0))
    assert not torch.allclose(out.maps, with_term.maps)


def test_command_line_colour_weight_is_auto_unless_given() -> None:
    from hfr.cli import build_parser
    from hfr.commands.common import model_settings

    parser = build_parser()
    base = ["train", "--train-dir", "good", "--output", "m", "--encoder", "resnet18"]
    assert model_settings(parser.parse_args(base)).colour_weight == "auto"
    assert ModelSettings().colour_weight == "auto"
    settings = model_settings(parser.parse_args([*base, "--colour-weight", "0.5"]))
    assert model_from_settings(settings).config.scoring.colour_weight == 0.5
    assert model_from_settings(settings).config.scoring.colour_distance == "mahalanobis"
    settings = model_settings(parser.parse_args([*base, "--colour-distance", "squared"]))
    assert settings.colour_distance == "squared"
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--colour-distance", "euclidean"])
    for bad in ("-1", "inf", "Auto"):
        with pytest.raises(SystemExit):
            parser.parse_args([*base, "--colour-weight", bad])


def test_the_auto_rule_follows_the_alignment_rule() -> None:
    assert chosen_colour_weight(0.88, 188)[0] == ALIGNED_COLOUR_WEIGHTS["mahalanobis"] == 1.5
    assert chosen_colour_weight(0.88, 188, "squared")[0] == 0.25  # the weight of 0.13
    assert chosen_colour_weight(0.18, 288)[0] == 0.0  # screws turned at random
    assert chosen_colour_weight(0.88, 19)[0] == 0.0  # too few images for the statistics


@pytest.mark.parametrize(
    ("shifted", "distance", "weight"),
    [(False, "mahalanobis", 1.5), (False, "squared", 0.25), (True, "mahalanobis", 0.0)],
)
def test_the_default_settings_choose_the_weight_from_the_training_images(
    tmp_path: Path, shifted: bool, distance: str, weight: float
) -> None:
    images = synthetic_images(50, seed=5)  # a gradient across every image: aligned
    images = shifted_images(images, 0) if shifted else images
    settings = ModelSettings(
        encoder="resnet18", encoder_weights="random", input_size=64, colour_distance=distance
    )
    options = RunOptions(training=TrainConfig(epochs=1, batch_size=8), progress=False)
    dataset = AnomalyDataset("custom", "part", images, [])
    train_category(dataset, tmp_path / "m", settings=settings, options=options)
    loaded = HFR.from_pretrained(tmp_path / "m")
    assert loaded.config.scoring.colour_weight == weight
    assert loaded.config.scoring.colour_distance == distance
    assert (loaded.term("colour") is not None) == (weight > 0)
    assert loaded.config.scoring.position_weight == 0.0  # the feature term stays off
    assert loaded.config.training["auto_colour_weight"] is True
    card = (tmp_path / "m" / "README.md").read_text()
    assert f"the colour term is {'on' if weight else 'off'}, by the same rule" in card
