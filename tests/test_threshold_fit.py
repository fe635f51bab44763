"""How the held-out normal scores are read for a target false-alarm rate: the conformal rank (the
default from 0.21), by their logarithms (0.17 to 0.20) or as they are (0.3 to 0.16), and what
each model records of it."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import as_format_1, synthetic_images, tiny_model, train_options
from PIL import Image
from scipy.stats import t

from hfr import HFR
from hfr.cli import main
from hfr.config import HFRConfig, TrainConfig
from hfr.errors import ConfigError, TrainingError
from hfr.pipeline import save_model
from hfr.scoring.calibration import DEFAULT_THRESHOLD_FIT, Calibration
from hfr.train import fit, recalibrate

# 21 positive scores with a tail longer to the right than to the left, like held-out bottles
SKEWED = np.exp(np.random.default_rng(0).normal(2.5, 0.15, 21))
NORMAL_FIT = ("--threshold-fit", "normal")
CONFIG = TrainConfig(epochs=1, batch_size=4, calibration_fraction=0.25)


def robust_threshold(values: np.ndarray, target_fpr: float) -> float:
    """median + t quantile x sqrt(1 + 1/n) x 1.4826 MAD, written out independently."""
    n = values.size
    median = np.median(values)
    mad = np.median(np.abs(values - median))
    return median + t.ppf(1 - target_fpr, n - 1) * math.sqrt(1 + 1 / n) * 1.4826 * mad


def test_the_default_fit_is_the_conformal_rank() -> None:
    assert DEFAULT_THRESHOLD_FIT == "conformal" == TrainConfig().threshold_fit
    calibration = Calibration.from_normal_scores(SKEWED, target_fpr=0.01)
    assert (calibration.fit, calibration.threshold) == ("conformal", SKEWED.max())


def test_the_lognormal_fit_reads_the_logarithms_of_the_scores() -> None:
    calibration = Calibration.from_normal_scores(SKEWED, target_fpr=0.01, fit="lognormal")
    assert calibration.fit == "lognormal"
    expected = math.exp(robust_threshold(np.log(SKEWED), 0.01))
    assert calibration.threshold == pytest.approx(expected, rel=1e-12)
    assert (
        "exp(median + 2.587 x 1.4826 MAD) of the logarithms of the scores of 21"
        in calibration.method
    )
    # the normalisation keeps its anchors: the median at 0.05, the threshold at 0.5
    anchors = torch.tensor([float(np.median(SKEWED)), calibration.threshold], dtype=torch.float64)
    assert calibration.normalize(anchors).tolist() == pytest.approx([0.05, 0.5])


def test_the_normal_fit_is_the_rule_of_earlier_versions() -> None:
    calibration = Calibration.from_normal_scores(SKEWED, target_fpr=0.02, fit="normal")
    assert calibration.fit == "normal"
    assert calibration.threshold == pytest.approx(robust_threshold(SKEWED, 0.02), rel=1e-12)
    assert "MAD of the scores of 21" in calibration.method


def test_the_lognormal_threshold_sits_higher_the_wider_the_scores_spread() -> None:
    def lift(spread: float) -> float:
        """The lognormal threshold's distance above the median over the normal fit's."""
        scores = 10.0 + spread * np.random.default_rng(1).standard_normal(21)
        median = np.median(scores)
        lognormal = Calibration.from_normal_scores(scores, target_fpr=0.01, fit="lognormal")
        lognormal = lognormal.threshold
        normal = Calibration.from_normal_scores(scores, target_fpr=0.01, fit="normal").threshold
        return (lognormal - median) / (normal - median)

    narrow, screw_like, bottle_like = lift(0.05), lift(0.5), lift(1.8)
    assert narrow == pytest.approx(1.0, abs=0.02)  # a spread of 0.5 % of the median: as before
    assert narrow < screw_like < bottle_like
    assert bottle_like > 1.08  # a spread of 18 % of the median, as bottle's: about a tenth


def test_scores_not_above_zero_fall_back_to_the_normal_fit_and_say_so() -> None:
    scores = np.r_[0.0, np.linspace(0.5, 1.5, 20)]
    calibration = Calibration.from_normal_scores(scores, target_fpr=0.01, fit="lognormal")
    assert calibration.fit == "normal"
    assert calibration.threshold == pytest.approx(robust_threshold(scores, 0.01), rel=1e-12)
    assert "a score not above 0: no logarithm" in calibration.method


def test_the_legacy_rule_records_no_fit() -> None:
    calibration = Calibration.from_normal_scores(SKEWED)
    assert (calibration.target_fpr, calibration.fit) == (None, None)
    assert calibration.threshold >= SKEWED.max()


@pytest.mark.parametrize("bad", ["gumbel", "", None, 1])
def test_an_unknown_fit_is_refused_everywhere(bad: object) -> None:
    with pytest.raises(ConfigError, match="threshold fit"):
        Calibration.from_normal_scores(SKEWED, target_fpr=0.01, fit=bad)
    with pytest.raises(TrainingError, match="threshold_fit"):
        TrainConfig(threshold_fit=bad)
    values = Calibration.from_normal_scores(SKEWED, target_fpr=0.01).to_dict()
    if bad is not None:
        with pytest.raises(ConfigError, match="threshold fit"):
            Calibration.from_dict({**values, "fit": bad})


def test_a_config_without_a_fit_loads_as_before_and_a_new_one_round_trips() -> None:
    values = Calibration.from_normal_scores(SKEWED, target_fpr=0.01, fit="normal").to_dict()
    written_later = ("fit", "guaranteed_fpr", "fpr_bound", "scores")
    older = {k: v for k, v in values.items() if k not in written_later}  # written by 0.14-0.16
    config = tiny_model().config.to_dict()
    loaded = HFRConfig.from_dict(as_format_1({**config, "calibration": older})).calibration
    assert loaded.fit is None and loaded.threshold == values["threshold"]
    new = Calibration.from_normal_scores(SKEWED, target_fpr=0.01)
    assert Calibration.from_dict(json.loads(json.dumps(new.to_dict()))) == new


def test_training_records_the_fit_and_recalibration_keeps_the_models_own(tmp_path: Path) -> None:
    images = synthetic_images(12)
    model = tiny_model()
    fit(model, images, CONFIG, progress=False)
    assert model.config.calibration.fit == "conformal"
    assert model.config.training["threshold_fit"] == "conformal"
    assert recalibrate(model, images[:6], progress=False).fit == "conformal"
    assert recalibrate(model, images[:6], threshold_fit="lognormal", progress=False).fit == (
        "lognormal"
    )
    assert recalibrate(model, images[:6], threshold_fit="normal", progress=False).fit == "normal"

    older = tiny_model()
    fit(older, images, replace(CONFIG, threshold_fit="normal"), progress=False)
    save_model(older, tmp_path / "older")
    config = json.loads((tmp_path / "older" / "config.json").read_text())
    config = as_format_1(config)
    del config["calibration"]["fit"]  # as a 0.16 model wrote it
    (tmp_path / "older" / "config.json").write_text(json.dumps(config))
    loaded = HFR.from_pretrained(tmp_path / "older")
    assert loaded.config.calibration.fit is None
    assert recalibrate(loaded, images[:6], progress=False).fit == "normal"


def test_the_command_line_fit_reaches_training_and_calibrate(tmp_path: Path) -> None:
    assert train_options().threshold_fit == "conformal"
    assert train_options("--threshold-fit", "normal").threshold_fit == "normal"
    with pytest.raises(SystemExit):
        train_options("--threshold-fit", "gumbel")

    images = synthetic_images(12)
    model = tiny_model()
    fit(model, images, CONFIG, progress=False)
    save_model(model, tmp_path / "model")
    folder = tmp_path / "normal"
    folder.mkdir()
    for index, image in enumerate(images[:6]):
        Image.fromarray(image).save(folder / f"{index}.png")
    out = tmp_path / "recalibrated"
    model_dir = str(tmp_path / "model")
    code = main(["calibrate", "--model", model_dir, str(folder), "--output", str(out), *NORMAL_FIT])
    assert code == 0
    assert HFR.from_pretrained(out).config.calibration.fit == "normal"
