"""The calibration's check of a fitted threshold (``lognormal`` or ``normal``, no guarantee): how
many of the normal scores it was set on lie above it, and a warning when more do than the target
false-alarm rate explains. The conformal rule's count is its guarantee (test_conformal.py)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_images, tiny_model

from hfr import HFR
from hfr.cards import model_card
from hfr.cli import main
from hfr.config import HFRConfig, TrainConfig
from hfr.errors import ConfigError
from hfr.pipeline import save_model
from hfr.scoring.calibration import Calibration
from hfr.scoring.thresholds import exceedance_chance
from hfr.train import fit, recalibrate

# 19 scores like the bulk of a category's held-out bottles, and two far above them
FIT = "lognormal"
HEAVY_TAILED = np.r_[np.linspace(0.9, 1.1, 19), 2.0, 2.1]


def test_exceedance_chance_is_the_binomial_tail() -> None:
    assert exceedance_chance(0, 21, 0.01) == pytest.approx(1.0)
    assert exceedance_chance(1, 21, 0.01) == pytest.approx(1 - 0.99**21)
    at_most_one = 0.99**21 + 21 * 0.01 * 0.99**20
    assert exceedance_chance(2, 21, 0.01) == pytest.approx(1 - at_most_one)
    assert exceedance_chance(21, 21, 0.5) == pytest.approx(0.5**21)


def test_the_calibration_counts_the_scores_above_its_threshold() -> None:
    calibration = Calibration.from_normal_scores(HEAVY_TAILED, target_fpr=0.01, fit=FIT)
    assert calibration.target_fpr == 0.01
    assert calibration.num_above == int((calibration.threshold < HEAVY_TAILED).sum()) == 2
    legacy = Calibration.from_normal_scores(HEAVY_TAILED)  # at least the maximum: none above
    assert (legacy.target_fpr, legacy.num_above, legacy.tail_warning()) == (None, 0, None)


def test_a_heavy_tail_is_warned_of_and_a_consistent_count_is_not() -> None:
    warning = Calibration.from_normal_scores(HEAVY_TAILED, target_fpr=0.01, fit=FIT).tail_warning()
    assert warning.startswith("2 of the 21 normal images it was set on score above the threshold")
    chance = 100 * exceedance_chance(2, 21, 0.01)
    assert f"a chance of {chance:.2g} %" in warning and "hfr calibrate" in warning
    one_above = np.r_[np.linspace(0.9, 1.1, 20), 2.0]  # 1 of 21 at 1 %: chance 19 %, no warning
    calibration = Calibration.from_normal_scores(one_above, target_fpr=0.01, fit=FIT)
    assert calibration.num_above == 1 and calibration.tail_warning() is None
    # at a 10 % target, two of 21 above is what the rate predicts
    assert (
        Calibration.from_normal_scores(HEAVY_TAILED, target_fpr=0.1, fit=FIT).tail_warning() is None
    )


def test_the_warning_is_rare_for_normal_scores_and_common_for_a_heavy_tail() -> None:
    rng = np.random.default_rng(0)

    def warned(samples: np.ndarray) -> float:
        calibrations = [
            Calibration.from_normal_scores(s, target_fpr=0.01, fit=FIT) for s in samples
        ]
        return np.mean([c.tail_warning() is not None for c in calibrations])

    for count in (21, 32):  # bottle's and screw's held-out images
        gaussian = rng.normal(1.0, 0.1, (2000, count))
        outliers = rng.random((2000, count)) < 0.1  # a tenth of the images score far above
        contaminated = np.where(outliers, rng.normal(2.0, 0.3, (2000, count)), gaussian)
        # about the 5 % significance (measured 5.4 % and 7.6 %): the threshold is fitted to
        # the same scores, so the count is not exactly binomial
        assert warned(gaussian) < 0.1
        assert warned(contaminated) > 0.6  # measured 67 % and 86 %


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"num_above": -1}, "num_above must be an integer from 0 to 21"),
        ({"num_above": 22}, "num_above must be an integer from 0 to 21"),
        ({"num_above": True}, "num_above"),
        ({"num_above": 1.5}, "num_above"),
        ({"target_fpr": 0.7}, "target_fpr"),
        ({"surprise": 1}, "calibration must be an object with keys"),
    ],
)
def test_bad_counts_in_a_config_name_the_field(changes: dict, message: str) -> None:
    values = Calibration.from_normal_scores(HEAVY_TAILED, target_fpr=0.01, fit=FIT).to_dict()
    with pytest.raises(ConfigError, match=message):
        Calibration.from_dict({**values, **changes})


def test_a_config_written_before_the_count_loads_without_a_verdict_on_its_tail() -> None:
    values = Calibration.from_normal_scores(HEAVY_TAILED, target_fpr=0.01, fit=FIT).to_dict()
    written_later = ("num_above", "target_fpr", "guaranteed_fpr", "fpr_bound", "scores")
    older = {k: v for k, v in values.items() if k not in written_later}
    config = HFRConfig.build(encoder="resnet18", encoder_weights="random", input_size=64)
    format_1 = {**config.to_dict(), "format_version": 1, "calibration": older}
    del format_1["hfr_version"]
    loaded = HFRConfig.from_dict(format_1).calibration
    assert loaded.threshold == values["threshold"] and loaded.num_above is None
    assert loaded.tail_warning() is None
    card = str(model_card(config.replace(calibration=loaded), decoder_parameters=1))
    assert "score above it" not in card and "Warning" not in card


def test_the_card_gives_the_count_and_the_warning() -> None:
    config = HFRConfig.build(encoder="resnet18", encoder_weights="random", input_size=64)
    heavy = Calibration.from_normal_scores(HEAVY_TAILED, target_fpr=0.01, fit=FIT)
    card = str(model_card(config.replace(calibration=heavy), decoder_parameters=1))
    assert "2 of those 21 images score above it." in card
    assert f"**Warning:** {heavy.tail_warning()}." in card
    quiet = Calibration.from_normal_scores(HEAVY_TAILED[:19], target_fpr=0.01, fit=FIT)
    card = str(model_card(config.replace(calibration=quiet), decoder_parameters=1))
    assert f"{quiet.num_above} of those 19 images score above it." in card
    assert "Warning" not in card


@pytest.fixture
def trained() -> HFR:
    model = tiny_model()
    fit(
        model,
        synthetic_images(12),
        TrainConfig(epochs=1, batch_size=4, threshold_fit=FIT),
        progress=False,
    )
    return model


def odd_images(count: int) -> list[np.ndarray]:
    """The synthetic training texture inverted, which the tiny model scores well above it."""
    return [255 - image for image in synthetic_images(count, seed=5)]


def test_recalibrating_on_a_heavy_tail_logs_the_warning(
    trained: HFR, caplog: pytest.LogCaptureFixture
) -> None:
    images = synthetic_images(18, seed=9) + odd_images(3)
    with caplog.at_level(logging.WARNING, logger="hfr.train"):
        calibration = recalibrate(trained, images, target_fpr=0.01, progress=False)
    assert calibration.num_above == 3
    assert calibration.tail_warning() in caplog.text
    assert math.isclose(
        calibration.threshold,
        Calibration.from_normal_scores(
            np.array([p.score for p in trained.predict(images)]), target_fpr=0.01, fit=FIT
        ).threshold,
        rel_tol=1e-5,
    )


def test_the_calibrate_command_reports_the_warning(
    trained: HFR, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from PIL import Image

    save_model(trained, tmp_path / "model")
    folder = tmp_path / "good"
    folder.mkdir()
    for index, image in enumerate(synthetic_images(18, seed=9) + odd_images(3)):
        Image.fromarray(image).save(folder / f"{index:02d}.png")
    argv = ["calibrate", "--model", str(tmp_path / "model"), str(folder)]
    assert main([*argv, "--output", str(tmp_path / "out")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["num_above"] == 3 and summary["tail_warning"].startswith("3 of the 21")
    card = (tmp_path / "out" / "README.md").read_text()
    assert f"**Warning:** {summary['tail_warning']}." in card
