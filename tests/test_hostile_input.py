"""The reproductions of the hostile-input report (issue 10), one test per numbered item.

Each test reruns the report's reproduction through the public API or the command line and
checks the fixed behaviour: a clear :class:`HFRError` naming the input, a bounded cost, or a
correct result. The app's side (uploads, its CSV, its temp files) is in ``test_app.py``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import calibrate, synthetic_images, tiny_model, write_pngs
from PIL import Image
from safetensors.torch import load_file, save_file

from hfr import HFR
from hfr.cli import main
from hfr.errors import (
    ConfigError,
    EncoderWeightsError,
    HFRError,
    ImageLoadError,
    ModelFormatError,
    ModelNotFoundError,
    TrainingError,
)
from hfr.images import read_image
from hfr.train import TrainConfig, fit

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n{ } loop\nshowpage\n"


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    """A calibrated tiny model saved to a folder."""
    folder = tmp_path / "model"
    calibrate(tiny_model(), synthetic_images(4)).save_pretrained(folder)
    return folder


def _rows(output: Path) -> list[dict]:
    with open(output / "scores.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _edit_config(folder: Path, edit) -> None:
    path = folder / "config.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


# --- Hangs and memory -----------------------------------------------------------------------


def test_01_postscript_is_refused_at_once_whatever_its_name(tmp_path: Path, saved: Path) -> None:
    disguised = tmp_path / "part.png"
    disguised.write_bytes(EPS)
    for source in (disguised, EPS, io.BytesIO(EPS)):
        began = time.perf_counter()
        with pytest.raises(ImageLoadError, match="not one of the accepted formats"):
            read_image(source)
        assert time.perf_counter() - began < 1.0
    began = time.perf_counter()
    assert _predict(saved, [disguised], tmp_path / "out") == 0
    assert time.perf_counter() - began < 30  # model load included; before the fix: forever
    (row,) = _rows(tmp_path / "out")
    assert "not one of the accepted formats" in row["error"]


_MEMORY_PROBE = """
import resource, sys
from hfr.errors import ImageLoadError
from hfr.images import read_image
from hfr.train import TrainConfig, fit
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
outcome = "decoded"
try:
    loaded = read_image(sys.argv[1], max_side=int(sys.argv[2]) or None)
    outcome = "x".join(map(str, loaded.pixels.shape[:2]))
except ImageLoadError as error:
    outcome = str(error)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) / 1024, outcome, sep="\\n")
"""


@pytest.fixture(scope="module")
def huge_square(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """A 9999x9999 image file of each format, written once for the module (seconds each)."""
    folder = tmp_path_factory.mktemp("huge")

    def of(suffix: str) -> Path:
        path = folder / f"huge{suffix}"
        if not path.exists():
            Image.new("RGB", (9999, 9999), (90, 100, 110)).save(path)
        return path

    return of


@pytest.mark.parametrize(("suffix", "max_side"), [(".png", 0), (".jpg", 0), (".jpg", 1600)])
def test_02_a_9999_pixel_square_costs_under_500_mb(
    huge_square: Callable[[str], Path], suffix: str, max_side: int
) -> None:
    path = huge_square(suffix)
    probe = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(path), str(max_side)],
        capture_output=True,
        text=True,
        check=True,
    )
    extra_mb, outcome = probe.stdout.strip().split("\n")
    assert float(extra_mb) < 500, outcome
    if suffix == ".png":  # refused from its header, the cap stated
        assert "9999x9999 = 99,980,001 pixels, above the limit of 40,000,000 pixels" in outcome
    else:  # reduced while decoding: by 2 to fit the budget, by 4 then resized for max_side
        assert outcome == ("1600x1600" if max_side else "5000x5000")


def test_03_input_size_has_an_upper_bound(saved: Path) -> None:
    for size in ([2048, 2048], [1e9, 1e9]):
        _edit_config(saved, lambda data, size=size: data["preprocessing"].update(input_size=size))
        with pytest.raises(ConfigError, match=r"input_size.*\[32, 1024\]"):
            HFR.from_pretrained(saved)


# --- Wrong results without an error ----------------------------------------------------------


def test_04_a_model_that_cannot_score_never_says_normal(saved: Path) -> None:
    image = synthetic_images(1)[0]
    with pytest.raises(HFRError, match="threshold must be a number in"):
        HFR.from_pretrained(saved).predict(image, threshold=math.nan)
    model = HFR.from_pretrained(saved)
    with torch.no_grad():
        next(model.decoder.parameters()).fill_(math.nan)
    with pytest.raises(ModelFormatError, match="NaN or infinite scores"):
        model.predict(image)
    state = load_file(saved / "model.safetensors")
    first = next(key for key, value in state.items() if value.is_floating_point())
    state[first] = torch.full_like(state[first], math.nan)
    save_file(state, saved / "model.safetensors")
    with pytest.raises(ModelFormatError, match="NaN or infinite values"):
        HFR.from_pretrained(saved)
    _edit_config(saved, lambda data: data["preprocessing"].update(std=[0.2, math.nan, 0.2]))
    with pytest.raises(ConfigError, match="std"):
        HFR.from_pretrained(saved)


def test_05_weights_of_another_dtype_are_refused(saved: Path) -> None:
    state = load_file(saved / "model.safetensors")
    save_file({k: v.to(torch.int8) for k, v in state.items()}, saved / "model.safetensors")
    with pytest.raises(ModelFormatError, match=r"is torch.int8 .* expected torch.float32"):
        HFR.from_pretrained(saved)


def test_06_bit_depth_follows_the_dtype_not_the_values(tmp_path: Path) -> None:
    gradient = np.arange(64, dtype=np.uint16).reshape(8, 8) * 4  # all <= 255, yet 16-bit
    bumped = gradient.copy()
    bumped[0, 0] = 256
    low, high = tmp_path / "low.png", tmp_path / "high.png"
    Image.fromarray(gradient).save(low)
    Image.fromarray(bumped).save(high)
    read_low, read_high = read_image(low).pixels, read_image(high).pixels
    assert read_low.max() <= 1  # 252 / 257 rounds to 1: a dark 16-bit image stays dark
    assert np.array_equal(read_low[1:], read_high[1:])  # one pixel changes nothing else
    floats = np.full((8, 8), 0.5, np.float32)
    assert read_image(floats).pixels[0, 0, 0] == 128
    floats[0, 0] = 1.5
    with pytest.raises(ImageLoadError, match=r"values in \[0.5, 1.5\]; float images must"):
        read_image(floats)
    with pytest.raises(ImageLoadError, match="dtype int64, which does not say its range"):
        read_image(np.zeros((8, 8), np.int64))


def test_07_batch_size_must_be_a_positive_integer(model: HFR) -> None:
    for batch_size in (-1, 0, 2.5, True):
        with pytest.raises(HFRError, match="batch_size must be an integer >= 1"):
            model.predict([synthetic_images(1)[0]], batch_size=batch_size)


def test_08_a_checkpoint_of_other_images_is_not_resumed(tmp_path: Path) -> None:
    config = TrainConfig(epochs=1, batch_size=4)
    fit(tiny_model(), synthetic_images(8, seed=1), config, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(TrainingError, match=r"another run \(training images differ\)"):
        fit(
            tiny_model(),
            synthetic_images(8, seed=2),
            TrainConfig(epochs=2, batch_size=4),
            checkpoint_dir=tmp_path,
            progress=False,
        )


# --- Unclear errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"\xff\xfe{}", "not UTF-8"),
    ],
)
def test_09_unreadable_configs_name_the_file(saved: Path, content: bytes, message: str) -> None:
    (saved / "config.json").write_bytes(content)
    with pytest.raises(ConfigError, match=message) as failure:
        HFR.from_pretrained(saved)
    assert "config.json" in str(failure.value)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda data: data.update(encoder=123), "encoder must be a timm model name"),
        (lambda data: data["preprocessing"].update(input_size="abc"), "input_size"),
        (lambda data: data["preprocessing"].update(input_size=[256.0, 256]), "integers"),
        (lambda data: data["preprocessing"].update(mean=["a", "b", "c"]), "mean"),
    ],
)
def test_09_bad_config_values_name_the_field(saved: Path, edit, message: str) -> None:
    _edit_config(saved, edit)
    with pytest.raises(ConfigError, match=message):
        HFR.from_pretrained(saved)


def test_09_bad_repo_ids_and_hub_weights_offline(saved: Path, monkeypatch) -> None:
    with pytest.raises(ModelNotFoundError, match="neither a model folder nor a Hub repo id"):
        HFR.from_pretrained("a/b/c")
    _edit_config(saved, lambda data: data.update(encoder_weights=None, encoder_fingerprint=None))
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "http://hub.invalid")
    began = time.perf_counter()
    with pytest.raises(EncoderWeightsError, match="weights for 'resnet18' are not in the cache"):
        HFR.from_pretrained(saved)
    assert time.perf_counter() - began < 5  # before: a minute of retries, then a false message


def test_10_bytes_file_objects_and_unusual_tensors_are_accepted(model: HFR) -> None:
    rgb = synthetic_images(1, size=32)[0]
    encoded = io.BytesIO()
    Image.fromarray(rgb).save(encoded, format="PNG")
    expected = read_image(rgb).pixels
    for source in (
        encoded.getvalue(),
        bytearray(encoded.getvalue()),
        io.BytesIO(encoded.getvalue()),
    ):
        assert np.array_equal(read_image(source).pixels, expected)
    tensor = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    for variant in (tensor.bfloat16(), tensor.half(), tensor.to_sparse()):
        pixels = read_image(variant).pixels
        assert pixels.shape == (32, 32, 3) and np.abs(pixels.astype(int) - expected).max() <= 1
    predictions = model.predict([encoded.getvalue(), tensor.bfloat16(), tensor.to_sparse()])
    assert len(predictions) == 3 and all(math.isfinite(p.score) for p in predictions)
    assert len(model.predict(io.BytesIO(encoded.getvalue()))) == 1  # one file object, one image


def test_11_hub_encoder_offline_fails_fast_with_the_way_out(monkeypatch) -> None:
    from hfr.network.encoder import build_encoder

    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "http://hub.invalid")
    began = time.perf_counter()
    with pytest.raises(EncoderWeightsError, match=r"--encoder-weights.*HFR_ENCODER_WEIGHTS"):
        build_encoder("resnet18.tv_in1k", None)
    assert time.perf_counter() - began < 5  # before: about a minute of retries


def test_11_hub_encoder_offline_loads_from_the_cache(tmp_path: Path, monkeypatch) -> None:
    import timm

    from hfr.network.encoder import build_encoder

    weights = timm.create_model("resnet18", pretrained=False).state_dict()
    snapshot = tmp_path / "models--timm--resnet18.tv_in1k" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    save_file(weights, snapshot / "model.safetensors")
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "http://hub.invalid")
    began = time.perf_counter()
    _, cached = build_encoder("resnet18.tv_in1k", None)
    assert time.perf_counter() - began < 5  # from the cache at once, not after retries
    _, from_file = build_encoder("resnet18", str(snapshot / "model.safetensors"))
    assert cached == from_file


# --- Data loss in the scripts ----------------------------------------------------------------


def _predict(saved: Path, inputs: list[Path], output: Path, *extra: str) -> int:
    command = ["predict", "--model", str(saved), *map(str, inputs), "--output", str(output)]
    return main([*command, *extra])


def test_12_overlays_of_same_named_images_never_collide(tmp_path: Path, saved: Path) -> None:
    rgb = synthetic_images(1)[0]
    paths = [tmp_path / "a/good/000.png", tmp_path / "b/good/000.png", tmp_path / "x.png"]
    paths.append(tmp_path / "x.jpg")
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(path)
    assert _predict(saved, paths, tmp_path / "out") == 0
    assert len(list((tmp_path / "out" / "overlays").iterdir())) == 4


def test_13_results_are_written_as_they_go_and_runs_never_mix(
    tmp_path: Path, saved: Path, monkeypatch
) -> None:
    paths = write_pngs(tmp_path, 6, digits=1)
    original = HFR.predict
    calls = []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(HFR, "predict", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _predict(saved, paths, tmp_path / "out", "--batch-size", "2")
    rows = _rows(tmp_path / "out")
    assert [Path(r["image"]).name for r in rows] == ["0.png", "1.png", "2.png", "3.png"]
    monkeypatch.setattr(HFR, "predict", original)
    assert _predict(saved, paths[:1], tmp_path / "out") == 2  # refused: would mix two runs
    assert _predict(saved, paths[:1], tmp_path / "out", "--overwrite") == 0
    assert len(list((tmp_path / "out" / "overlays").iterdir())) == 1


def test_13_an_interrupted_run_resumes_with_only_the_missing_images(
    tmp_path: Path, saved: Path, monkeypatch
) -> None:
    paths = write_pngs(tmp_path, 6, digits=1)
    original = HFR.predict
    seen: list[int] = []

    def interrupted(self, images, *args, **kwargs):
        if len(seen) >= 2:
            raise KeyboardInterrupt
        seen.append(len(images))
        return original(self, images, *args, **kwargs)

    monkeypatch.setattr(HFR, "predict", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _predict(saved, paths, tmp_path / "out", "--batch-size", "2")
    with open(tmp_path / "out" / "scores.csv", "a") as handle:
        handle.write(str(paths[4])[:-3])  # a row cut off by the kill
    monkeypatch.setattr(HFR, "predict", original)
    assert _predict(saved, paths, tmp_path / "out", "--resume") == 0
    rows = _rows(tmp_path / "out")
    assert [Path(r["image"]).name for r in rows] == [f"{i}.png" for i in range(6)]
    assert all(r["score"] for r in rows)


def test_14_push_dry_run_leaves_the_model_folder_untouched(saved: Path) -> None:
    before = {p.name: p.read_bytes() for p in saved.iterdir()}
    assert main(["push", "--model", str(saved), "--org", "acme", "--dry-run"]) == 0
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == before


def test_16_multi_frame_files_say_only_the_first_frame_was_scored(
    tmp_path: Path, saved: Path
) -> None:
    frames = [Image.fromarray(rgb) for rgb in synthetic_images(3)]
    for name in ("anim.gif", "pages.tif"):
        frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:])
    model = HFR.from_pretrained(saved)
    for prediction in model.predict([tmp_path / "anim.gif", tmp_path / "pages.tif"]):
        assert prediction.notes == ("3 frames; only the first was scored",)
    assert _predict(saved, [tmp_path / "anim.gif"], tmp_path / "out") == 0
    (row,) = _rows(tmp_path / "out")
    assert row["notes"] == "3 frames; only the first was scored"


def test_tiny_images_are_scored_with_a_note_that_they_were_enlarged(
    tmp_path: Path, saved: Path
) -> None:
    tiny, fitting = synthetic_images(1, size=10)[0], synthetic_images(1)[0]  # 10x10, 48x48
    Image.fromarray(tiny).save(tmp_path / "tiny.png")
    Image.fromarray(fitting).save(tmp_path / "fitting.png")
    model = HFR.from_pretrained(saved)  # 64x64 input: 6.4x and 1.33x
    enlarged, kept = model.predict([tiny, fitting])
    assert enlarged.notes == ("enlarged 6.4x from 10x10 to the model's 64x64 input",)
    assert kept.notes == () and np.isfinite(enlarged.score)
    assert _predict(saved, [tmp_path / "tiny.png", tmp_path / "fitting.png"], tmp_path / "out") == 0
    notes = {Path(row["image"]).name: row["notes"] for row in _rows(tmp_path / "out")}
    assert notes == {"tiny.png": enlarged.notes[0], "fitting.png": ""}
