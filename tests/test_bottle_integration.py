"""Real ImageNet weights (torchvision MobileNetV2) on real MVTec AD bottle images."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hfr import HFR
from hfr.cli import main
from hfr.config import TrainConfig
from hfr.data import load_mvtec
from hfr.device import training_precision
from hfr.metrics import pixel_auroc
from hfr.train import fit

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(bottle: Path, mobilenet_weights: str) -> HFR:
    torch.manual_seed(0)
    dataset = load_mvtec(bottle.parent, "bottle")
    model = HFR(encoder="mobilenetv2_100", encoder_weights=mobilenet_weights)
    # 4 held-out images cannot estimate a 1 % false-alarm rate: the conservative rule of 0.2
    config = TrainConfig(epochs=12, batch_size=8, target_fpr=None)
    fit(model, dataset.train[:40], config, progress=False)
    return model


def test_map_is_clearly_higher_inside_defects(trained: HFR, bottle: Path) -> None:
    dataset = load_mvtec(bottle.parent, "bottle")
    defective = [s for s in dataset.test if s.label == 1][::8]
    good = [s for s in dataset.test if s.label == 0][:4]
    predictions = trained.predict([s.image for s in defective + good])
    masks = np.stack([s.mask((900, 900)) for s in defective])
    maps = np.stack([p.anomaly_map for p in predictions[: len(defective)]])
    assert maps.shape == masks.shape == (len(defective), 900, 900)
    inside, outside = maps[masks].mean(), maps[~masks].mean()
    assert inside > 2.0 * outside, (inside, outside)
    assert pixel_auroc(masks, maps) > 0.95
    defect_scores = [p.score for p in predictions[: len(defective)]]
    good_scores = [p.score for p in predictions[len(defective) :]]
    assert min(defect_scores) > max(good_scores)
    assert all(p.is_anomalous for p in predictions[: len(defective)])
    assert sum(p.is_anomalous for p in predictions[len(defective) :]) <= 1


def _pairwise_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """The share of (defective, good) pairs ranked the right way round, ties counting half."""
    gaps = scores[labels == 1][:, None] - scores[labels == 0][None, :]
    return float(((gaps > 0) + 0.5 * (gaps == 0)).mean())


def _subset(bottle: Path, target: Path) -> Path:
    """A small MVTec-layout copy made of links to the real files (nothing is copied)."""
    base = target / "bottle"
    picks = {"train/good": 24, "test/good": 3, "test/broken_large": 3}
    for folder, count in picks.items():
        (base / folder).mkdir(parents=True)
        for image in sorted((bottle / folder).glob("*.png"))[:count]:
            (base / folder / image.name).symlink_to(image)
    (base / "ground_truth" / "broken_large").mkdir(parents=True)
    for mask in sorted((bottle / "ground_truth" / "broken_large").glob("*.png"))[:3]:
        (base / "ground_truth" / "broken_large" / mask.name).symlink_to(mask)
    return target


def test_the_hfr_command_from_outside_the_checkout(
    bottle: Path,
    mobilenet_weights: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """train of the installed ``hfr`` in a process of its own, run in a folder outside the
    repository (so the checkout's files cannot stand in for the package); then evaluate,
    predict and push --dry-run there through the same entry point, :func:`hfr.cli.main`."""
    data = _subset(bottle, tmp_path / "data")
    model_dir, results = tmp_path / "model", tmp_path / "results.json"
    training_run = subprocess.run(
        [sys.executable, "-m", "hfr", "train", "--data", data, "--category", "bottle",
         "--encoder", "mobilenetv2_100", "--encoder-weights", mobilenet_weights,
         "--epochs", "3", "--batch-size", "8", "--image-size", "128", "--output", model_dir],
        cwd=tmp_path, check=True, capture_output=True, text=True,
    )  # fmt: skip
    config = json.loads((model_dir / "config.json").read_text())
    assert config["encoder_weights"] == mobilenet_weights
    precision = training_precision("auto", torch.device("cpu"))
    assert config["training"]["precision"] == precision
    assert f"s/epoch ({precision}); trained 3 epochs" in training_run.stdout
    assert config["preprocessing"]["input_size"] == [128, 128]
    monkeypatch.chdir(tmp_path)
    command = ["evaluate", "--model", model_dir, "--data", data, "--category", "bottle"]
    assert main([str(arg) for arg in [*command, "--output", results]]) == 0
    metrics = json.loads(results.read_text())
    # the image AUROC, recomputed from the saved model's own predictions, pair by pair
    test = load_mvtec(data, "bottle").test
    scores = np.array(
        [p.score for p in HFR.from_pretrained(model_dir).predict([s.image for s in test])]
    )
    labels = np.array([s.label for s in test])
    assert metrics["image_auroc"] == pytest.approx(_pairwise_auroc(scores, labels), abs=1e-9)
    assert metrics["pixel_auroc"] > 0.8 and metrics["aupro"] > 0.5
    assert metrics["resolution"] == "128x128" and "hfr evaluate" in metrics["command"]
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    out = tmp_path / "predictions"
    broken = data / "bottle" / "test" / "broken_large"
    predict = ["predict", "--model", model_dir, broken, junk, "--output", out]
    assert main([str(arg) for arg in predict]) == 0
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert len(rows) == 4
    assert "cannot read image" in next(r for r in rows if r["image"].endswith("junk.png"))["error"]
    assert len(list((out / "overlays").glob("*.png"))) == 3
    capsys.readouterr()
    assert main(["push", "--model", str(model_dir), "--org", "acme", "--dry-run"]) == 0
    push = capsys.readouterr()
    assert "dry run:" in push.out and "acme/hfr-mvtec-bottle" in push.out


def test_the_bundled_model_scores_its_held_out_images_as_it_recorded(
    bottle: Path, mobilenet_weights: str
) -> None:
    """A saved model scores as it did when it was saved: the bundled bottle model (calibrated by
    0.21) gives its 21 held-out training images the normal scores its calibration recorded, to
    float32 rounding (later versions reorder sums: the memory search in blocks, BatchNorm folded
    into the decoder's convolutions)."""
    from hfr.train import training_split

    model = HFR.from_pretrained("hfr-mvtec-bottle-mobilenetv2")
    held_out = training_split(model, load_mvtec(bottle.parent, "bottle").train)[1]
    scores = np.sort([p.score for p in model.predict(held_out)])
    recorded = np.sort(model.config.calibration.scores)
    np.testing.assert_allclose(scores, recorded, rtol=1e-6, atol=0)
