"""The benchmark script's interface (outside checks rely on its JSON keys)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_model

from hfr import timing as timing_module
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
    # only the injected delay is asserted: timings of real work depend on the machine's load
    assert timing.decoder_ms_per_image >= 20.0  # 40 ms over a batch of 2
    assert timing.full_ms_per_image >= 20.0
    assert timing.full_over_encoder == pytest.approx(
        timing.full_ms_per_image / timing.encoder_ms_per_image
    )
    assert 0 < timing.maps_share_of_full < 1


def test_interleaved_medians_time_each_step(monkeypatch) -> None:
    """Steps that take known times on a fake clock: each median is its step's middle time,
    and the steps run in turns (a, b, a, b, ...), warm-up included."""
    now = [0.0]
    monkeypatch.setattr(timing_module, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    durations = {"a": iter([100.0, 5.0, 1.0, 3.0]), "b": iter([100.0, 2.0, 9.0, 4.0])}
    order = []

    def step(name: str):
        def run() -> None:
            order.append(name)
            now[0] += next(durations[name])

        return run

    medians = interleaved_medians(
        {"a": step("a"), "b": step("b")}, torch.device("cpu"), warmup=1, repeats=3
    )
    assert medians == {"a": 3.0, "b": 4.0}
    assert order == ["a", "b"] * 4


@pytest.mark.slow
def test_benchmark_script_writes_the_documented_records(tmp_path: Path) -> None:
    output, table = tmp_path / "bench.json", tmp_path / "bench.md"
    command = [
        sys.executable, "-m", "hfr", "benchmark", "--device", "cpu", "--encoders", "resnet18",
        "--batch-size", "1,2", "--image-size", "64,64x96", "--repeats", "1",
        "--position-weight", "1", "--colour-weight", "0.25", "--output", str(output),
        "--markdown", str(table),
        "--onnxruntime", "--decoder-blocks", "separable",
    ]  # fmt: skip
    subprocess.run(command, cwd=tmp_path, check=True, capture_output=True)
    records = json.loads(output.read_text())
    assert [(r["input"], r["batch_size"]) for r in records] == [
        ("64x64", 1), ("64x64", 2), ("96x64", 1), ("96x64", 2)
    ]  # fmt: skip
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
        assert record["decoder_width"] is None  # hfr train's default: full width
        assert record["decoder_blocks"] == "separable"
        # 160 memory vectors of 384 numbers (10 images' 16 or 24 cells): searched in 128
        assert (record["memory_search_dims"], record["memory_vector_dims"]) == (128, 384)
        assert record["onnxruntime_ms_per_image"] > 0
        assert record["onnxruntime_over_encoder"] == pytest.approx(
            record["onnxruntime_ms_per_image"] / record["encoder_ms_per_image"]
        )
    assert "| resnet18 | 64x64 | full, separable | 128 of 384 | 2 |" in table.read_text()
    assert "| resnet18 | 96x64 | full, separable | 128 of 384 | 1 |" in table.read_text()
