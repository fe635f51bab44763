"""Generated hostile input (Hypothesis): image bytes, arrays, configs, safetensors files and
predictions. Every call either gives a finite, correctly shaped result or raises an
:class:`HFRError` subclass, within a time budget (Hypothesis's ``deadline``)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from hfr.config import HFRConfig
from hfr.errors import ConfigError, ImageLoadError, ModelFormatError
from hfr.images import read_image

MODEL = tiny_model()
LETTERBOXED = tiny_model(resize="letterbox")
GOOD_CONFIG = MODEL.config.to_dict()
FORMATS = {"PNG": ("L", "RGB", "RGBA", "I;16", "P"), "JPEG": ("L", "RGB"), "BMP": ("RGB",)}
FORMATS |= {"TIFF": ("L", "RGB", "I;16", "F"), "WEBP": ("RGB",), "GIF": ("P",)}
# Hypothesis runs each example under this budget (ms); a slower call fails the test.
BUDGET_MS = 2000


@st.composite
def encoded_images(draw) -> bytes:
    """A small image of a random mode in a random accepted format."""
    image_format = draw(st.sampled_from(sorted(FORMATS)))
    mode = draw(st.sampled_from(FORMATS[image_format]))
    width, height = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**16))
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    if mode == "I;16":
        image = Image.fromarray(pixels[..., 0].astype(np.uint16) * 257)
    elif mode == "F":  # float images lie in [0, 1]
        image = Image.fromarray(pixels[..., 0].astype(np.float32) / 255)
    else:
        image = Image.fromarray(pixels).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


@st.composite
def damaged(draw, data: st.SearchStrategy[bytes]) -> bytes:
    """``data`` truncated, with bytes overwritten, or with bytes inserted."""
    content = bytearray(draw(data))
    for _ in range(draw(st.integers(0, 4))):
        position = draw(st.integers(0, max(0, len(content) - 1)))
        action = draw(st.sampled_from(("overwrite", "insert", "truncate")))
        if action == "overwrite" and content:
            content[position] = draw(st.integers(0, 255))
        elif action == "insert":
            content[position:position] = draw(st.binary(min_size=1, max_size=8))
        else:
            del content[position:]
    return bytes(content)


def _check_rgb(pixels: np.ndarray) -> None:
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3
    assert pixels.shape[0] >= 1 and pixels.shape[1] >= 1


@settings(max_examples=200, deadline=BUDGET_MS, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(damaged(encoded_images()), st.binary(max_size=256)))
def test_any_bytes_give_an_image_or_an_image_error(data: bytes) -> None:
    with contextlib.suppress(ImageLoadError):
        _check_rgb(read_image(data).pixels)


@settings(max_examples=60, deadline=BUDGET_MS)
@given(encoded_images())
def test_intact_images_of_every_accepted_format_and_mode_decode(data: bytes) -> None:
    _check_rgb(read_image(data).pixels)


ARRAY_DTYPES = st.sampled_from(
    [np.uint8, np.uint16, np.int16, np.int64, np.float16, np.float32, np.float64, np.bool_]
)


@settings(max_examples=200, deadline=BUDGET_MS)
@given(hnp.arrays(ARRAY_DTYPES, hnp.array_shapes(min_dims=1, max_dims=4, max_side=6)))
def test_any_array_gives_an_image_of_its_size_or_an_image_error(array: np.ndarray) -> None:
    try:
        pixels = read_image(array).pixels
    except ImageLoadError:
        return
    _check_rgb(pixels)
    assert pixels.shape[:2] == array.shape[:2]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=8,
)


@st.composite
def mutated_configs(draw) -> dict:
    """The tiny model's config with one field, or one preprocessing field, replaced."""
    config = json.loads(json.dumps(GOOD_CONFIG))
    section = config
    if draw(st.booleans()):
        section = config["preprocessing"]
    key = draw(st.sampled_from(sorted(section)) | st.text(max_size=8))
    unchanged = st.just(json.loads(json.dumps(section[key]))) if key in section else st.nothing()
    section[key] = draw(unchanged | JSON_VALUES)
    return config


@settings(max_examples=300, deadline=BUDGET_MS)
@given(mutated_configs())
def test_any_config_loads_or_names_its_problem(data: dict) -> None:
    if data == GOOD_CONFIG:  # a field replaced by its own value: the model's config, loaded
        assert HFRConfig.from_dict(data) == MODEL.config
        return
    try:
        config = HFRConfig.from_dict(data)
    except ConfigError as error:
        assert str(error)
        return
    assert HFRConfig.from_dict(config.to_dict()) == config  # what loads, round-trips


@st.composite
def safetensors_files(draw) -> bytes:
    """A safetensors-shaped file: a length, a JSON header of tensor entries, and data."""
    entries = {}
    for name in draw(st.lists(st.sampled_from(sorted(MODEL.decoder.state_dict())), max_size=3)):
        entries[f"decoder.{name}"] = {
            "dtype": draw(st.sampled_from(["F32", "F16", "I8", "BOOL", "F64", "XX"])),
            "shape": draw(st.lists(st.integers(-1, 70), max_size=3)),
            "data_offsets": draw(st.lists(st.integers(-1, 2**40), min_size=2, max_size=2)),
        }
    header = json.dumps(entries).encode()
    length = draw(st.sampled_from([len(header), 2**40, 0, len(header) + 3]))
    data = draw(st.binary(max_size=64))
    return struct.pack("<Q", length) + header + data


@settings(
    max_examples=150,
    deadline=BUDGET_MS,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.one_of(safetensors_files(), st.binary(max_size=64)))
def test_any_weights_file_is_refused_cleanly(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(ModelFormatError):
        MODEL.load_decoder_weights(path)


@settings(max_examples=25, deadline=10 * BUDGET_MS)
@given(
    hnp.arrays(
        np.uint8,
        st.tuples(st.integers(1, 90), st.integers(1, 90))
        | st.tuples(st.integers(1, 90), st.integers(1, 90), st.sampled_from([1, 3, 4])),
    )
)
def test_any_image_scores_finite_with_a_map_of_its_size(image: np.ndarray) -> None:
    for model in (MODEL, LETTERBOXED):  # stretched and letterboxed: every such image is valid
        (prediction,) = model.predict(image)
        assert math.isfinite(prediction.score)
        assert prediction.anomaly_map.shape == image.shape[:2]
        assert np.isfinite(prediction.anomaly_map).all()
