"""Smoke tests of the benchmark scripts in scripts/: repo_sizes, app_latency (latency, load)
and predict_memory."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import random_png, run_repo_script


def run_script(name: str, *args: object, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``scripts/<name>.py`` with ``args``; raise if it fails."""
    return run_repo_script(f"scripts/{name}.py", *args, timeout=timeout)


def test_repo_sizes_table(tmp_path: Path) -> None:
    table = tmp_path / "sizes.md"
    run_script("repo_sizes", "--encoders", "resnet18", "--output", table)
    row = next(line for line in table.read_text().splitlines() if line.startswith("| resnet18"))
    decoder_mib, full_mib = (float(cell.split()[0]) for cell in row.split("|")[2:4])
    assert 0 < decoder_mib < full_mib


@pytest.mark.slow
def test_app_latency_records_cold_and_warm(tmp_path: Path) -> None:
    image = random_png(tmp_path / "image.png", (300, 400, 3), seed=0)
    output = tmp_path / "latency.json"
    run_script("app_latency", "--image", image, "--warm-runs", "2", "--output", output)
    record = json.loads(output.read_text())
    assert record["image_size"] == record["overlay_size"] == "400x300"
    assert len(record["warm_seconds"]) == 2 and record["cold_seconds"] > 0


@pytest.mark.slow
def test_app_load_run_records_correctness_memory_and_temp_files(tmp_path: Path) -> None:
    image = random_png(tmp_path / "image.png", (200, 240, 3), seed=1)
    output = tmp_path / "load.json"
    run_script(
        "app_latency", "--image", image, "--clients", "3", "--requests", "2", "--temp-max-age",
        "600", "--cleanup-wait", "0", "--output", output
    )  # fmt: skip
    record = json.loads(output.read_text())
    assert record["correct"] == record["requests"] == 6 and record["failures"] == [], record
    assert 0 < record["p50_seconds"] <= record["p95_seconds"], record
    assert 0 < record["rss_mb_after_first_request"] <= record["rss_mb_peak"], record
    assert record["temp_files_at_start"] < record["temp_files_after_run"], record


def test_predict_memory_reports_the_peak_above_the_model(tmp_path: Path) -> None:
    output = tmp_path / "memory.json"
    run_script("predict_memory", "--width", "1200", "--height", "900", "--output", output)
    record = json.loads(output.read_text())
    assert record["map_shape"] == [900, 1200] and record["megapixels"] == 1.1
    assert 0 < record["peak_mb_above_loaded_model"] < 500
