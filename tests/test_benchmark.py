"""The benchmark script's interface (outside checks rely on its JSON keys)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_model

from hfr.timing import interleaved_medians, time_pipeline

ROOT = Path(__file__).resolve().parents[1]


def test_time_pipeline_measures_each_piece() -> None:
    """A decoder slowed by a known 40 ms per call must show up in the decoder and full times."""
    model = tiny_model()
    decode = model.decoder.forward

    def slow_decode(deepest):
        time.sleep(0.04)
        return decode(deepest)

    model.decoder.forward = slow_decode
    timing = time_pipeline(model, 2, repeats=3, warmup=1)
    assert timing.batch_size == 2 and timing.image_size == 64
    assert timing.decoder_ms_per_image >= 20.0  # 40 ms over a batch of 2
    assert timing.encoder_ms_per_image < timing.decoder_ms_per_image
    assert timing.full_ms_per_image >= timing.decoder_ms_per_image
    assert timing.full_over_encoder > 1.5
    assert 0 < timing.maps_share_of_full < 0.5


def test_interleaved_medians_time_each_step() -> None:
    calls = {"a": 0, "b": 0}

    def step(name: str):
        def run() -> None:
            calls[name] += 1

        return run

    medians = interleaved_medians(
        {"a": step("a"), "b": step("b")}, torch.device("cpu"), warmup=1, repeats=3
    )
    assert calls == {"a": 4, "b": 4} and set(medians) == {"a", "b"}


@pytest.mark.slow
def test_benchmark_script_writes_the_documented_records(tmp_path: Path) -> None:
    output, table = tmp_path / "bench.json", tmp_path / "bench.md"
    command = [
        sys.executable, "-m", "hfr", "benchmark", "--device", "cpu", "--encoders", "resnet18",
        "--batch-size", "1,2", "--image-size", "64", "--repeats", "1", "--position-weight", "1",
        "--colour-weight", "0.25", "--output", str(output), "--markdown", str(table),
    ]  # fmt: skip
    subprocess.run(command, cwd=tmp_path, check=True, capture_output=True)
    records = json.loads(output.read_text())
    assert [r["batch_size"] for r in records] == [1, 2]
    for record in records:
        for key in ("encoder", "device", "batch_size", "encoder_ms_per_image", "full_ms_per_image",
                    "peak_memory_mb", "train_seconds_per_epoch"):  # fmt: skip
            assert key in record
        assert record["encoder"] == "resnet18" and record["device"] == "cpu"
        assert record["position_weight"] == 1.0  # the per-position term was in the timed forward
        assert record["colour_weight"] == 0.25  # and the colour term
        assert record["peak_memory_mb"] > 50
        by_precision = record["train_seconds_per_epoch_by_precision"]
        assert set(by_precision) == {record["train_precision"], "fp32"}
        assert record["train_seconds_per_epoch"] == by_precision[record["train_precision"]] > 0
    assert "| resnet18 | 2 |" in table.read_text()
