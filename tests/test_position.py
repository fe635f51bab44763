"""The per-position term (scoring.position_weight): statistics, training, scoring, save/load."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import (
    TERM_CONFIG,
    TERM_IMAGES,
    model_from_settings,
    shifted_images,
    synthetic_images,
    tiny_model,
    trained_tiny_model,
)
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from hfr import HFR
from hfr.cards import scoring_text
from hfr.data import AnomalyDataset
from hfr.errors import ConfigError, ModelFormatError, TrainingError
from hfr.pipeline import ModelSettings, RunOptions, train_category
from hfr.scoring import maps as anomaly
from hfr.scoring.terms.position import (
    MIN_ALIGNED_IMAGES,
    VARIANCE_FLOOR,
    FeatureMoments,
    PositionStatistics,
    alignment_hint,
    auto_weight,
)
from hfr.train import TrainConfig, fit, split_for_calibration

IMAGES, CONFIG = TERM_IMAGES, TERM_CONFIG


@pytest.fixture(scope="module")
def trained() -> HFR:
    return trained_tiny_model(position_weight=1.5)


def test_statistics_are_the_floored_gaussian_of_every_position() -> None:
    features = torch.randn(10, 4, 3, 5) * torch.arange(1, 5).view(1, 4, 1, 1) + 2
    stats = PositionStatistics.from_features(features.split(3))  # batches of 3, 3, 3, 1
    variance = features.double().var(0, unbiased=False)
    expected = variance + VARIANCE_FLOOR * variance.mean()
    torch.testing.assert_close(stats.mean, features.double().mean(0).float())
    torch.testing.assert_close(stats.variance, expected.float())
    sample = torch.randn(2, 4, 3, 5)
    expected_map = ((sample - stats.mean) ** 2 / stats.variance).mean(1)
    torch.testing.assert_close(stats(sample), expected_map)
    with pytest.raises(ConfigError, match="input size differs"):
        stats(torch.randn(2, 4, 6, 10))
    with pytest.raises(TrainingError, match="two images or more"):
        PositionStatistics.from_features([torch.randn(1, 4, 3, 5)])


def test_a_feature_that_never_varies_gets_the_floor_not_zero() -> None:
    features = torch.randn(6, 2, 2, 2)
    features[:, 0, 0, 0] = 3.0  # constant: a letterbox border
    stats = PositionStatistics.from_features([features])
    assert stats.variance[0, 0, 0] > 0 and torch.isfinite(stats(features)).all()


def test_training_measures_statistics_and_scale_and_the_map_adds_the_term(trained: HFR) -> None:
    scoring = trained.config.scoring
    assert scoring.position_weight == 1.5 and scoring.position_scale > 0
    train_images, _ = split_for_calibration(IMAGES, CONFIG.calibration_fraction, CONFIG.seed)
    with torch.inference_mode():
        f2 = trained.encode(trained.preprocess(train_images))[1]
    expected = PositionStatistics.from_features([f2])
    torch.testing.assert_close(trained.term("position").mean, expected.mean)
    torch.testing.assert_close(trained.term("position").variance, expected.variance)
    images = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        out = trained(images)
        position = trained.term("position")(trained.encode(images)[1])
    levels = anomaly.weigh_levels(
        out.level_maps, scales=scoring.level_scales, weights=scoring.level_weights
    )
    levels.append(position * 1.5 / scoring.position_scale)
    torch.testing.assert_close(out.maps, anomaly.anomaly_map(levels, (64, 64), 2.0))
    assert "plus 1.5 x the distance of each stride-8 feature" in scoring_text(scoring)


def test_statistics_are_the_same_without_the_feature_cache(trained: HFR) -> None:
    model = tiny_model(position_weight=1.5)
    fit(model, IMAGES, replace(CONFIG, cache_features=False), progress=False)
    torch.testing.assert_close(model.term("position").mean, trained.term("position").mean)
    torch.testing.assert_close(model.term("position").variance, trained.term("position").variance)


def test_statistics_travel_with_the_weights_and_score_the_same(
    trained: HFR, tmp_path: Path
) -> None:
    trained.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as handle:
        keys = set(handle.keys())
    assert {"position.mean", "position.variance"} <= keys
    loaded = HFR.from_pretrained(tmp_path)
    assert loaded.config.scoring == trained.config.scoring
    image = synthetic_images(1, seed=8)[0]
    assert loaded.predict(image)[0].score == trained.predict(image)[0].score


def _rewrite_weights(folder: Path, **changes: torch.Tensor | None) -> None:
    state = load_file(folder / "model.safetensors")
    for key, value in changes.items():
        name = key.replace("_", ".", 1)
        if value is None:
            del state[name]
        else:
            state[name] = value
    save_file(state, folder / "model.safetensors")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"position_mean": None, "position_variance": None}, "holds no per-position statistics"),
        ({"position_variance": None}, "lacks 'position.variance'"),
        ({"position_mean": torch.full((128, 8, 8), float("nan"))}, "NaN or infinite"),
        ({"position_mean": torch.zeros(7, 8, 8)}, r"expected float32 \(128, H, W\)"),
        ({"position_variance": torch.zeros(128, 8, 8)}, "be above 0"),
    ],
)
def test_missing_or_corrupt_statistics_are_refused(
    trained: HFR, tmp_path: Path, changes: dict, message: str
) -> None:
    trained.save_pretrained(tmp_path)
    _rewrite_weights(tmp_path, **changes)
    with pytest.raises(ModelFormatError, match=message):
        HFR.from_pretrained(tmp_path)


def test_a_zero_weight_scores_without_the_term(trained: HFR, tmp_path: Path) -> None:
    trained.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["scoring"]["position_weight"] = 0
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = HFR.from_pretrained(tmp_path)
    images = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        out = loaded(images)
    scoring = loaded.config.scoring
    levels = anomaly.weigh_levels(
        out.level_maps, scales=scoring.level_scales, weights=scoring.level_weights
    )
    torch.testing.assert_close(out.maps, anomaly.anomaly_map(levels, (64, 64), 2.0))


def test_command_line_position_weight_reaches_the_model() -> None:
    from hfr.cli import build_parser
    from hfr.commands.common import model_settings
    from hfr.config.options import weight_or_auto

    parser = build_parser()
    base = ["train", "--train-dir", "good", "--output", "m", "--encoder", "resnet18"]
    assert model_settings(parser.parse_args(base)).position_weight == 0.0
    auto = model_settings(parser.parse_args([*base, "--position-weight", "auto"]))
    assert auto.position_weight == "auto"
    settings = model_settings(parser.parse_args([*base, "--position-weight", "1"]))
    assert model_from_settings(settings).config.scoring.position_weight == 1.0
    for bad in ("-1", "inf", "nan", "one", "Auto"):
        with pytest.raises(SystemExit):
            parser.parse_args([*base, "--position-weight", bad])
    with pytest.raises(argparse.ArgumentTypeError, match="expected auto or a number >= 0"):
        weight_or_auto("Auto")


def test_position_share_tells_aligned_features_from_ones_placed_at_random() -> None:
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(300, 3, 4, 4, generator=generator)
    pattern = torch.randn(1, 3, 4, 4, generator=generator) * 5
    aligned = FeatureMoments.of([pattern + noise]).position_share()
    anywhere = FeatureMoments.of([noise + 2]).position_share()  # every position alike
    assert aligned > 0.9 and abs(anywhere) < 0.05


def test_auto_weight_needs_aligned_parts_and_enough_images() -> None:
    assert auto_weight(0.88, 188)[0] == 1.0  # bottles from above
    assert auto_weight(0.8, MIN_ALIGNED_IMAGES)[0] == 1.0
    weight, reason = auto_weight(0.88, MIN_ALIGNED_IMAGES - 1)
    assert weight == 0.0 and "too noisy" in reason
    weight, reason = auto_weight(0.6, 1000)  # centred digits: the term lost on MNIST
    assert weight == 0.0 and "do not look aligned" in reason


def test_alignment_hint_speaks_only_when_the_weight_and_the_auto_choice_disagree() -> None:
    assert "look aligned, and the per-position term may help" in alignment_hint(0.88, 0.0, 188)
    assert "do not look aligned" in alignment_hint(0.15, 1.0, 288)
    assert "too noisy" in alignment_hint(0.88, 1.0, 19)
    assert alignment_hint(0.88, 1.0, 188) is None and alignment_hint(0.15, 0.0, 288) is None
    assert alignment_hint(0.88, 0.0, 19) is None


@pytest.mark.parametrize(
    ("count", "shifted", "weight"),
    [(50, False, 1.0), (50, True, 0.0), (20, False, 0.0)],
    ids=["aligned", "placed-anywhere", "too-few"],
)
def test_auto_weight_is_chosen_from_the_training_images(
    tmp_path: Path, count: int, shifted: bool, weight: float
) -> None:
    images = synthetic_images(count, seed=5)  # a gradient across every image: aligned
    images = shifted_images(images, 0) if shifted else images
    settings = ModelSettings(
        encoder="resnet18", encoder_weights="random", input_size=64, position_weight="auto"
    )
    options = RunOptions(training=TrainConfig(epochs=1, batch_size=8), progress=False)
    dataset = AnomalyDataset("custom", "part", images, [])
    model, _ = train_category(dataset, tmp_path / "m", settings=settings, options=options)
    share = model.config.training["position_share"]
    expected, _ = auto_weight(share, model.config.training["num_train_images"])
    assert expected == weight, share  # the images are what the case says
    loaded = HFR.from_pretrained(tmp_path / "m")
    assert loaded.config.scoring.position_weight == weight
    assert (loaded.term("position") is not None) == (weight > 0)
    assert loaded.config.training["auto_position_weight"] is True
    card = (tmp_path / "m" / "README.md").read_text()
    assert "chosen from the training images (`--position-weight auto`" in card
    assert f"the per-position term is {'on' if weight else 'off'}" in card


def test_training_records_the_position_share_and_the_card_shows_it(
    trained: HFR, tmp_path: Path
) -> None:
    train_images, _ = split_for_calibration(IMAGES, CONFIG.calibration_fraction, CONFIG.seed)
    with torch.inference_mode():
        f2 = trained.encode(trained.preprocess(train_images))[1]
    share = FeatureMoments.of([f2]).position_share()
    assert trained.config.training["position_share"] == pytest.approx(share, abs=1e-4)
    trained.save_pretrained(tmp_path)
    card = (tmp_path / "README.md").read_text()
    assert f"Position explains {100 * share:.0f} % of the variance" in card
    assert "the per-position term is on" in card
    assert ", the mean and variance\nof the normal stride-8 features at each position" in card
    plain = tiny_model()
    fit(plain, IMAGES, replace(CONFIG, cache_features=False), progress=False)
    assert plain.config.training["position_share"] is None  # no cache, no term: not measured
    plain.save_pretrained(tmp_path / "plain")
    assert "Position explains" not in (tmp_path / "plain" / "README.md").read_text()


def test_the_alignment_rule_reads_a_larger_input_at_the_256_scale() -> None:
    """The auto rules read the share on about 32x32 stride-8 cells: features of a 512x512
    input (64x64 cells) that repeat each 32x32 cell 2x2 give the 32x32 share, while the
    position term keeps its statistics at 64x64."""
    from hfr.scoring.terms.base import TrainingEvidence

    generator = torch.Generator().manual_seed(0)
    coarse = torch.randn(6, 4, 32, 32, generator=generator) + torch.randn(1, 4, 32, 32) * 2

    def doubled(values: torch.Tensor) -> torch.Tensor:
        return values.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)

    # each image's own detail within a cell, averaging to 0 over its 2x2 block
    checker = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(32, 32)
    detail = doubled(torch.randn(coarse.shape, generator=generator)) * checker
    fine = doubled(coarse) + detail

    def evidence(level: torch.Tensor) -> TrainingEvidence:
        return TrainingEvidence(
            features=lambda: iter([[level, level, level]]),
            images=lambda: iter([]),
            colours=None,
            count=len(level),
            training=TrainConfig(),
        )

    at_512, at_256 = evidence(fine), evidence(coarse)
    assert at_512.measured_share() == pytest.approx(at_256.measured_share(), abs=1e-4)
    assert FeatureMoments.of([fine]).position_share() < at_512.measured_share() - 0.05
    assert at_512.moments.mean.shape == (4, 64, 64)
    assert at_256.measured_share() == round(FeatureMoments.of([coarse]).position_share(), 4)
