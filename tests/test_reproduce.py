"""`hfr reproduce` end to end on a tiny one-class IDX set: records, summary, resuming."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_idx

from hfr import HFR
from hfr.data import load_idx_one_class


def _tiny_digits(root: Path) -> None:
    """28x28 'digits': class 0 is a bright square, class 1 a bright bar, with pixel noise."""
    root.mkdir()
    rng = np.random.default_rng(0)
    labels = np.array([0, 1] * 12)
    images = rng.integers(0, 40, size=(len(labels), 28, 28))
    for image, label in zip(images, labels, strict=True):
        if label == 0:
            image[8:20, 8:20] = 255
        else:
            image[2:26, 12:16] = 255
    for split in ("train", "t10k"):
        write_idx(root / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels)


@pytest.mark.slow
def test_one_class_protocol_records_summarises_and_resumes(tmp_path: Path) -> None:
    _tiny_digits(tmp_path / "data")
    output = tmp_path / "out"
    command = [
        sys.executable, "-m", "hfr", "reproduce", "mnist", "--data", str(tmp_path / "data"),
        "--encoder", "resnet18", "--encoder-weights", "random", "--epochs", "1",
        "--only", "0", "--output-dir", str(output),
    ]  # fmt: skip
    first = subprocess.run(command, cwd=tmp_path, check=True, capture_output=True, text=True)
    record = json.loads((output / "0.json").read_text())
    assert record["run"] == "0"
    # the record's AUROC, recomputed from the saved model's scores of the test split
    test = load_idx_one_class(tmp_path / "data", 0).test
    model = HFR.from_pretrained(output / "models" / "0")
    scores = np.array([p.score for p in model.predict([s.image for s in test])])
    labels = np.array([s.label for s in test])
    gaps = scores[labels == 1][:, None] - scores[labels == 0][None, :]
    assert record["image_auroc"] == pytest.approx(((gaps > 0) + 0.5 * (gaps == 0)).mean())
    assert (record["image_size"], record["lr"], record["epochs"]) == (32, 0.04, 1)  # defaults
    config = json.loads((output / "models" / "0" / "config.json").read_text())
    assert config["preprocessing"]["input_size"] == [32, 32]
    assert record["position_weight"] == 0.0  # the per-position term is off unless asked for
    assert record["position_share"] == config["training"]["position_share"]
    summary = (output / "summary.md").read_text()
    assert "hfr reproduce mnist" in summary
    assert f"| HFR (ours), resnet18, 1 classes | {record['image_auroc']:.4f} |" in summary
    assert "HFR paper, R18 | 0.985" in summary
    assert "done before" not in first.stderr

    again = subprocess.run(command, cwd=tmp_path, check=True, capture_output=True, text=True)
    assert "0: done before, kept" in again.stderr
    assert json.loads((output / "0.json").read_text()) == record
