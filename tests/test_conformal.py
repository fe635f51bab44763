"""The conformal threshold (the default from 0.21): the false-alarm rate it guarantees, checked
against brute-force simulation; what a model states when its normal images are too few; adding
normal images to a model's calibration; and configs of earlier formats."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import as_format_1, synthetic_images, tiny_model
from PIL import Image

from hfr import HFR
from hfr.cards import model_card
from hfr.cli import main
from hfr.config import HFRConfig, TrainConfig
from hfr.errors import ConfigError, TrainingError
from hfr.pipeline import save_model
from hfr.scoring.calibration import Calibration
from hfr.scoring.thresholds import conformal_rank, fpr_bound, guaranteed_fpr, images_for
from hfr.train import fit, recalibrate

DRAWS = 20_000


def brute_force_rank(count: int, target: float) -> int:
    """The smallest rank whose threshold's exact rate ``(n + 1 - k) / (n + 1)`` is at most the
    target, or ``count`` when none is."""
    for rank in range(1, count + 1):
        if (count + 1 - rank) / (count + 1) <= target:
            return rank
    return count


@pytest.mark.parametrize("count", [2, 5, 19, 21, 32, 98, 99, 100, 199, 250])
@pytest.mark.parametrize("target", [0.01, 0.02, 0.05, 0.1, 0.25])
def test_the_rank_is_the_smallest_that_keeps_the_target(count: int, target: float) -> None:
    assert conformal_rank(count, target) == brute_force_rank(count, target)


@pytest.mark.parametrize(
    "draw",
    [
        lambda rng, shape: rng.normal(1.0, 0.1, shape),
        lambda rng, shape: rng.lognormal(2.5, 0.4, shape),  # a long right tail
        lambda rng, shape: rng.pareto(1.5, shape),  # a heavy one: no fit survives it
    ],
    ids=["gaussian", "lognormal", "pareto"],
)
@pytest.mark.parametrize(("count", "target"), [(21, 0.01), (32, 0.05), (199, 0.01)])
def test_simulated_false_alarms_stay_within_the_guarantee(draw, count: int, target: float) -> None:
    rng = np.random.default_rng(count)
    normal = draw(rng, (DRAWS, count))
    new = draw(rng, DRAWS)  # one new normal image per calibration set
    calibrations = [Calibration.from_normal_scores(s, target_fpr=target) for s in normal[:200]]
    stated = {c.guaranteed_fpr for c in calibrations}
    assert len(stated) == 1  # continuous scores: the rank, so the guarantee, is fixed by n
    guarantee = stated.pop()
    assert guarantee == guaranteed_fpr(count, count - conformal_rank(count, target))
    rank = conformal_rank(count, target)
    thresholds = np.sort(normal, axis=1)[:, rank - 1]
    realized = float((new > thresholds).mean())
    assert guarantee <= max(target, 1 / (count + 1)) + 1e-12
    # the realized rate is the guarantee up to sampling error (5 standard errors)
    error = math.sqrt(guarantee * (1 - guarantee) / DRAWS)
    assert realized <= guarantee + 5 * error
    assert realized >= guarantee - 5 * error  # and not far below: the rule is not conservative


def test_the_bound_holds_with_its_confidence() -> None:
    rng = np.random.default_rng(7)
    count, above = 99, 1
    normal = rng.normal(size=(DRAWS, count))
    # the rate above the (n - m)-th smallest score, for a standard normal: its survival function
    from scipy.stats import norm

    rates = norm.sf(np.sort(normal, axis=1)[:, count - above - 1])
    bound = fpr_bound(count, above)
    assert abs(float((rates <= bound).mean()) - 0.9) < 0.01
    assert abs(float(rates.mean()) - guaranteed_fpr(count, above)) < 0.001


def test_too_few_images_state_the_rate_they_can_guarantee() -> None:
    scores = np.linspace(1.0, 2.0, 21)
    calibration = Calibration.from_normal_scores(scores, target_fpr=0.01)
    assert calibration.threshold == 2.0 and calibration.num_above == 0
    assert calibration.guaranteed_fpr == pytest.approx(1 / 22)
    assert calibration.shortfall() == (
        "with 21 normal images the lowest false-alarm rate that can be guaranteed is 4.5 %: "
        "add 78 more normal images for 1 %"
    )
    assert images_for(0.01) == 99 and conformal_rank(99, 0.01) == 99
    enough = Calibration.from_normal_scores(np.linspace(1.0, 2.0, 99), target_fpr=0.01)
    assert enough.guaranteed_fpr == pytest.approx(0.01) and enough.shortfall() is None
    assert enough.guarantee().startswith("at most 1 % of new normal images flagged")


def test_adding_scores_recomputes_the_threshold_and_the_guarantee() -> None:
    first = Calibration.from_normal_scores(np.linspace(1.0, 2.0, 21), target_fpr=0.01)
    added = first.with_scores(np.array([5.0]))
    assert added.num_images == 22 and added.threshold == 5.0
    assert added.scores[:21] == first.scores and added.scores[-1] == 5.0
    assert added.guaranteed_fpr == pytest.approx(1 / 23)
    without = Calibration.from_dict({**first.to_dict(), "scores": None})
    with pytest.raises(TrainingError, match="did not record its normal scores"):
        without.with_scores(np.array([1.0]))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"scores": [1.0]}, "scores must be a list of num_images"),
        ({"scores": "many"}, "scores must be a list"),
        ({"guaranteed_fpr": 0}, "guaranteed_fpr must be a number in"),
        ({"fpr_bound": 1.5}, "fpr_bound must be a number in"),
    ],
)
def test_bad_guarantee_fields_name_the_field(changes: dict, message: str) -> None:
    values = Calibration.from_normal_scores(np.linspace(1.0, 2.0, 21), target_fpr=0.01).to_dict()
    with pytest.raises(ConfigError, match=message):
        Calibration.from_dict({**values, **changes})
    values["scores"][3] = math.nan
    with pytest.raises(ConfigError, match="finite"):
        Calibration.from_dict(values)


def test_earlier_configs_state_the_guarantee_of_their_own_threshold() -> None:
    fitted = Calibration.from_normal_scores(
        np.linspace(1.0, 2.0, 21), target_fpr=0.01, fit="normal"
    )
    config = HFRConfig.build(encoder="resnet18", encoder_weights="random", input_size=64)
    values = config.replace(calibration=fitted).to_dict()
    for written in (as_format_1(values), {**values, "format_version": 2}):
        if written["format_version"] == 2:
            for key in ("guaranteed_fpr", "fpr_bound", "scores"):
                del written["calibration"][key]
        loaded = HFRConfig.from_dict(written).calibration
        assert loaded.threshold == fitted.threshold and loaded.scores is None
        assert loaded.guaranteed_fpr == guaranteed_fpr(21, fitted.num_above)
        assert loaded.fpr_bound == fpr_bound(21, fitted.num_above)
    older = as_format_1(values)
    del older["calibration"]["num_above"]  # before 0.14: nothing to state
    assert HFRConfig.from_dict(older).calibration.guaranteed_fpr is None


def test_a_model_trained_on_twenty_images_states_its_guarantee(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = tiny_model()
    config = TrainConfig(epochs=1, batch_size=4, calibration_fraction=0.25)
    with caplog.at_level(logging.INFO, logger="hfr"):
        fit(model, synthetic_images(20), config, progress=False)
    calibration = model.config.calibration
    assert calibration.num_images == 5 and calibration.fit == "conformal"
    assert calibration.guaranteed_fpr == pytest.approx(1 / 6)
    assert calibration.shortfall() in caplog.text
    assert "add 94 more normal images for 1 %" in calibration.shortfall()
    card = str(model_card(model.config, decoder_parameters=1))
    assert f"False alarms: {calibration.guarantee()}." in card
    save_model(model, tmp_path)
    assert HFR.from_pretrained(tmp_path).config.calibration == calibration


def test_calibrate_adds_images_to_the_recorded_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    model = tiny_model()
    fit(model, synthetic_images(12), TrainConfig(epochs=1, batch_size=4), progress=False)
    save_model(model, tmp_path / "model")
    before = model.config.calibration
    folder = tmp_path / "good"
    folder.mkdir()
    extra = synthetic_images(6, seed=4)
    for index, image in enumerate(extra):
        Image.fromarray(image).save(folder / f"{index}.png")
    argv = ["calibrate", "--model", str(tmp_path / "model"), str(folder), "--add"]
    assert main([*argv, "--output", str(tmp_path / "out")]) == 0
    summary = json.loads(capsys.readouterr().out)
    after = HFR.from_pretrained(tmp_path / "out").config.calibration
    assert summary["num_images"] == after.num_images == before.num_images + 6
    assert after.scores[: before.num_images] == before.scores
    new_scores = [p.score for p in model.predict(extra)]
    np.testing.assert_allclose(after.scores[before.num_images :], new_scores, rtol=1e-5)
    assert summary["guarantee"] == after.guarantee() and "scores" not in summary
    # recalibrating without --add replaces them
    replaced = recalibrate(model, extra, progress=False)
    assert replaced.num_images == 6


def test_adding_to_a_model_without_recorded_scores_is_refused_before_scoring(
    tmp_path: Path,
) -> None:
    model = tiny_model()
    fit(model, synthetic_images(12), TrainConfig(epochs=1, batch_size=4), progress=False)
    calibration = Calibration.from_dict({**model.config.calibration.to_dict(), "scores": None})
    model.config = model.config.replace(calibration=calibration)
    with pytest.raises(TrainingError, match="recalibrate it from normal images"):
        recalibrate(model, ["not even an image"], add=True, progress=False)
    assert model.config.calibration == calibration
    trained = tiny_model()
    fit(trained, synthetic_images(12), TrainConfig(epochs=1, batch_size=4), progress=False)
    with pytest.raises(TrainingError, match="at least one normal image to add"):
        recalibrate(trained, [], add=True, progress=False)
