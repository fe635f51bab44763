"""Smoke tests of the measuring scripts: repo_sizes, app_latency (latency, load), predict_memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def test_repo_sizes_table(tmp_path: Path) -> None:
    table = tmp_path / "sizes.md"
    subprocess.run(
        [sys.executable, "scripts/repo_sizes.py", "--encoders", "resnet18", "--output", table],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    row = next(line for line in table.read_text().splitlines() if line.startswith("| resnet18"))
    decoder_mib, full_mib = (float(cell.split()[0]) for cell in row.split("|")[2:4])
    assert 0 < decoder_mib < full_mib


@pytest.mark.slow
def test_app_latency_records_cold_and_warm(tmp_path: Path) -> None:
    image, output = tmp_path / "image.png", tmp_path / "latency.json"
    pixels = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(image)
    subprocess.run(
        [sys.executable, "scripts/app_latency.py", "--image", image, "--warm-runs", "2",
         "--output", output],
        cwd=ROOT, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    record = json.loads(output.read_text())
    assert record["image_size"] == record["overlay_size"] == "400x300"
    assert len(record["warm_seconds"]) == 2 and record["cold_seconds"] > 0


@pytest.mark.slow
def test_app_load_run_records_correctness_memory_and_temp_files(tmp_path: Path) -> None:
    image, output = tmp_path / "image.png", tmp_path / "load.json"
    pixels = np.random.default_rng(1).integers(0, 256, (200, 240, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(image)
    subprocess.run(
        [sys.executable, "scripts/app_latency.py", "--image", image, "--clients", "3",
         "--requests", "2", "--temp-max-age", "600", "--cleanup-wait", "0", "--output", output],
        cwd=ROOT, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    record = json.loads(output.read_text())
    assert record["correct"] == record["requests"] == 6 and record["failures"] == []
    assert 0 < record["p50_seconds"] <= record["p95_seconds"]
    assert 0 < record["rss_mb_after_first_request"] <= record["rss_mb_peak"]
    assert record["temp_files_at_start"] == 0 < record["temp_files_after_run"]


def test_predict_memory_reports_the_peak_above_the_model(tmp_path: Path) -> None:
    output = tmp_path / "memory.json"
    subprocess.run(
        [sys.executable, "scripts/predict_memory.py", "--width", "1200", "--height", "900",
         "--output", output],
        cwd=ROOT, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    record = json.loads(output.read_text())
    assert record["map_shape"] == [900, 1200] and record["megapixels"] == 1.1
    assert 0 < record["peak_mb_above_loaded_model"] < 500
