"""Recalibration: a trained model's threshold set afresh from normal images given by the user,
through the API (``hfr.train.recalibrate``) and the ``hfr calibrate`` command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_images, tiny_model, write_pngs

from hfr import HFR
from hfr.cli import main
from hfr.config import TrainConfig
from hfr.errors import ConfigError, TrainingError
from hfr.pipeline import save_model
from hfr.scoring.calibration import Calibration
from hfr.train import fit, recalibrate

SOURCE = "normal images given to recalibrate"


@pytest.fixture
def trained() -> HFR:
    model = tiny_model(memory_weight=1.0)
    fit(model, synthetic_images(12), TrainConfig(epochs=2, batch_size=4), progress=False)
    return model


def test_recalibrate_sets_the_threshold_from_the_given_images(trained: HFR) -> None:
    images = synthetic_images(9, seed=7)
    scores = np.array([p.score for p in trained.predict(images)])
    trained.config = trained.config.replace(
        evaluation={"image_auroc": 0.9, "threshold_tpr": 0.5, "threshold_fpr": 0.2}
    )
    before = trained.config.calibration

    calibration = recalibrate(trained, images, target_fpr=0.05, progress=False)

    expected = Calibration.from_normal_scores(scores, target_fpr=0.05, source=SOURCE)
    assert calibration.threshold == pytest.approx(expected.threshold, rel=1e-5)
    assert calibration.num_images == 9 and SOURCE in calibration.method
    assert trained.config.calibration == calibration != before
    # the scores stay; the verdict rates measured at the old threshold go
    assert np.allclose([p.score for p in trained.predict(images)], scores, rtol=1e-5)
    assert trained.config.evaluation == {"image_auroc": 0.9}


@pytest.mark.parametrize(
    ("images", "target_fpr", "error", "message"),
    [
        (0, 0.01, TrainingError, "at least two"),
        (1, 0.01, TrainingError, "at least two"),
        (4, 0.7, ConfigError, "target_fpr"),
        (4, 0.0, ConfigError, "target_fpr"),
    ],
)
def test_recalibrate_refuses_bad_requests_and_keeps_the_model(
    trained: HFR, images: int, target_fpr: float, error: type, message: str
) -> None:
    before = trained.config
    with pytest.raises(error, match=message):
        recalibrate(trained, synthetic_images(images), target_fpr=target_fpr, progress=False)
    assert trained.config == before


def test_recalibrate_refuses_a_bad_batch_size(trained: HFR) -> None:
    with pytest.raises(TrainingError, match="batch_size"):
        recalibrate(trained, synthetic_images(4), batch_size=0, progress=False)


def test_recalibrate_refuses_a_model_never_trained() -> None:
    with pytest.raises(TrainingError, match="never calibrated"):
        recalibrate(tiny_model(), synthetic_images(4), progress=False)


def test_calibrate_command_saves_the_recalibrated_model(trained: HFR, tmp_path: Path) -> None:
    save_model(trained, tmp_path / "model")
    paths = write_pngs(tmp_path / "good", 8, seed=3)
    output = tmp_path / "recalibrated"

    argv = ["calibrate", "--model", str(tmp_path / "model"), str(tmp_path / "good")]
    assert main([*argv, "--output", str(output), "--target-fpr", "0.02"]) == 0

    loaded = HFR.from_pretrained(output)
    expected = recalibrate(trained, paths, target_fpr=0.02, progress=False)
    assert loaded.config.calibration.num_images == 8
    assert loaded.config.calibration.threshold == pytest.approx(expected.threshold, rel=1e-5)
    assert SOURCE in (output / "README.md").read_text()


def test_calibrate_command_refuses_an_empty_folder(trained: HFR, tmp_path: Path, capsys) -> None:
    save_model(trained, tmp_path / "model")
    (tmp_path / "empty").mkdir()
    argv = ["calibrate", "--model", str(tmp_path / "model"), str(tmp_path / "empty")]
    assert main([*argv, "--output", str(tmp_path / "out")]) == 2
    assert "at least two normal images, got 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_calibrate_command_reports_an_unreadable_image_and_writes_nothing(
    trained: HFR, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    save_model(trained, tmp_path / "model")
    write_pngs(tmp_path / "good", 4)
    (tmp_path / "good" / "broken.png").write_bytes(b"not a png")
    output = tmp_path / "recalibrated"

    argv = ["calibrate", "--model", str(tmp_path / "model"), str(tmp_path / "good")]
    assert main([*argv, "--output", str(output)]) == 2

    assert "broken.png" in capsys.readouterr().err
    assert not output.exists()
