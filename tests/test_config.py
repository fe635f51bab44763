"""The typed model config: every field checked once, the field and the value named."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import as_format_1, model_from_settings, older_scoring, trained_tiny_model

import hfr
from hfr.cards import scoring_text
from hfr.config import HFRConfig, Preprocessing, Scoring, TrainConfig, read_config
from hfr.errors import ConfigError, TrainingError

GOOD = HFRConfig.build(encoder="resnet18", encoder_weights="random", input_size=64).to_dict()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"encoder": 123}, "encoder must be a timm model name, got 123"),
        ({"sigma": "4"}, "sigma must be a number"),
        ({"sigma": float("nan")}, "sigma must be a number"),
        ({"feature_location": "middle"}, "feature_location must be one of"),
        ({"preprocessing": {**GOOD["preprocessing"], "input_size": "abc"}}, "input_size"),
        ({"preprocessing": {**GOOD["preprocessing"], "input_size": [256.0, 256]}}, "integers"),
        ({"preprocessing": {**GOOD["preprocessing"], "input_size": [4096, 4096]}}, "1024"),
        ({"preprocessing": {**GOOD["preprocessing"], "std": [0.2, 0.2, float("nan")]}}, "std"),
        ({"preprocessing": {**GOOD["preprocessing"], "mean": ["a", 0, 0]}}, "mean"),
        ({"calibration": {"threshold": 1.0}}, "calibration must be an object with keys"),
        ({"training": [1, 2]}, "training must be a JSON object"),
        ({"surprise": 1}, "a field this hfr knows"),
        ({"scoring": {**GOOD["scoring"], "level_scaling": "zscore"}}, "scoring.level_scaling"),
        ({"scoring": {**GOOD["scoring"], "image_score": "mean"}}, "scoring.image_score"),
        (
            {"scoring": {**GOOD["scoring"], "top_k_fraction": 0}},
            r"top_k_fraction must be a number in \(0, 1\]",
        ),
        ({"scoring": {**GOOD["scoring"], "level_scales": [1, 2]}}, "three numbers above 0"),
        ({"scoring": {**GOOD["scoring"], "level_scales": [1, 0, 2]}}, "three numbers above 0"),
        ({"scoring": {"image_score": "max"}}, "scoring must be an object with keys"),
        ({"scoring": {**GOOD["scoring"], "level_weights": [1, 1]}}, "three numbers >= 0"),
        ({"scoring": {**GOOD["scoring"], "level_weights": [0, 0, 0]}}, "not all 0"),
        ({"scoring": {**GOOD["scoring"], "level_weights": [1, -1, 1]}}, "level_weights"),
        ({"scoring": {**GOOD["scoring"], "level_weights": [1, "a", 1]}}, "level_weights"),
        ({"decoder": "unet"}, "decoder must be one of"),
        ({"decoder_width": 0}, "decoder_width must be null or an integer >= 1"),
        ({"decoder_width": 64.0}, "decoder_width must be null or an integer >= 1"),
        ({"decoder_blocks": "sparse"}, "decoder_blocks must be one of"),
    ],
)
def test_bad_values_name_the_field(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        HFRConfig.from_dict({**GOOD, **changes})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2]", "the config must be a JSON object"),
        (b"\xff\xfe\x00", "not UTF-8"),
    ],
)
def test_unreadable_files_are_config_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as failure:
        read_config(path)
    assert str(path) in str(failure.value)


def test_round_trip_and_configs_of_earlier_versions(tmp_path: Path) -> None:
    config = HFRConfig.from_dict(GOOD)
    assert config.to_dict() == GOOD
    assert GOOD["format_version"] == 7 and GOOD["hfr_version"] == hfr.__version__
    legacy = {**as_format_1(GOOD), "input_size": 64}  # written before the typed config
    no_context = replace(config.scoring, memory_context=0.0, memory_stride=16)
    before = config.replace(
        hfr_version=None, decoder_width=None, decoder_blocks="dense", scoring=no_context
    )
    assert HFRConfig.from_dict(legacy) == before
    scoring_6 = {k: v for k, v in GOOD["scoring"].items() if k != "memory_stride"}
    format_6 = GOOD | {"format_version": 6, "scoring": scoring_6}
    assert HFRConfig.from_dict(format_6).scoring.memory_stride == 16  # before 0.25: 16 px cells
    scoring_5 = {k: v for k, v in scoring_6.items() if k != "memory_context"}
    format_5 = GOOD | {"format_version": 5, "scoring": scoring_5}
    assert HFRConfig.from_dict(format_5).scoring == no_context  # before 0.25: no context
    format_4 = {k: v for k, v in format_5.items() if k != "decoder_blocks"} | {"format_version": 4}
    assert HFRConfig.from_dict(format_4).decoder_blocks == "dense"  # 0.22-0.24: dense blocks
    del legacy["feature_location"]
    assert HFRConfig.from_dict(legacy).feature_location == "stage"
    del legacy["decoder"]  # before 0.6: the paper's decoder
    assert HFRConfig.from_dict(legacy).decoder == "paper"
    legacy["scoring"] = {k: v for k, v in GOOD["scoring"].items() if k != "level_weights"}
    assert HFRConfig.from_dict(legacy).scoring.level_weights == (1.0, 1.0, 1.0)  # before 0.8
    with pytest.raises(ConfigError, match="input_size must be the side"):
        HFRConfig.from_dict({**as_format_1(GOOD), "input_size": 128})
    with pytest.raises(ConfigError, match=r"a field this hfr knows.*\['input_size'\]"):
        HFRConfig.from_dict({**GOOD, "input_size": 64})  # format 2 holds today's keys only
    (tmp_path / "config.json").write_text(json.dumps(GOOD))
    assert read_config(tmp_path / "config.json") == config


def test_preprocessing_from_timm() -> None:
    assert Preprocessing.for_encoder("tf_efficientnet_lite0", 96).mean == (0.5, 0.5, 0.5)


def test_scoring_presets_and_defaults() -> None:
    trained_terms = {"memory_weight": 3.0, "colour_weight": "auto"}  # as hfr train's
    assert GOOD["scoring"] == Scoring.preset("hfr", **trained_terms).to_dict()  # new models
    without_scoring = {k: v for k, v in as_format_1(GOOD).items() if k != "scoring"}
    assert HFRConfig.from_dict(without_scoring).scoring == Scoring.preset("paper")
    paper = HFRConfig.build(encoder="resnet18", scoring="paper").scoring
    assert paper == Scoring.preset("paper", **trained_terms)
    assert HFRConfig.build(encoder="resnet18").decoder == "context"
    assert HFRConfig.build(encoder="resnet18", input_size=32).decoder == "paper"  # 2x2 at stride 16
    assert HFRConfig.build(encoder="resnet18").sigma == 2.0  # context decoder: less smoothing
    assert HFRConfig.build(encoder="resnet18", decoder="paper").sigma == 4.0  # the paper's
    assert HFRConfig.build(encoder="resnet18", input_size=32).sigma == 4.0
    assert HFRConfig.build(encoder="resnet18", sigma=3).sigma == 3.0
    with pytest.raises(ConfigError, match="decoder must be 'paper' for inputs under 64 px"):
        HFRConfig.build(encoder="resnet18", input_size=(48, 256), decoder="context")
    with pytest.raises(ConfigError, match="scoring must be one of"):
        Scoring.preset("best")
    assert Scoring.preset("hfr").level_weights == (0.5, 0.5, 1.0)
    assert Scoring.preset("paper").level_weights == (1.0, 1.0, 1.0)
    chosen = HFRConfig.build(encoder="resnet18", level_weights=(1, 1, 2)).scoring
    assert chosen == Scoring.preset("hfr", level_weights=(1.0, 1.0, 2.0), **trained_terms)
    text = scoring_text(replace(Scoring.preset("paper"), level_weights=(1, 1, 2)))
    assert text.startswith("Each level enters the sum unscaled, weighted 1, 1, 2 (strides 4,")
    assert "(the paper)," in scoring_text(Scoring.preset("paper"))


def test_target_fpr_is_validated() -> None:
    assert TrainConfig().target_fpr == 0.01
    assert TrainConfig(target_fpr=None).target_fpr is None
    for bad in (0, 0.5, "0.01", float("nan")):
        with pytest.raises(
            TrainingError, match=r"target_fpr must be null or a number in \(0, 0.5\)"
        ):
            TrainConfig(target_fpr=bad)


def test_hard_term_is_validated() -> None:
    assert (TrainConfig().hard_fraction, TrainConfig().hard_weight) == (0.01, 0.5)
    assert TrainConfig(hard_fraction=1, hard_weight=0).hard_weight == 0
    for bad in (0, 1.5, -0.1, "0.01", float("nan"), None):
        with pytest.raises(TrainingError, match=r"hard_fraction must be a number in \(0, 1\]"):
            TrainConfig(hard_fraction=bad)
    for bad in (-0.1, 1.01, "0.5", float("inf"), None):
        with pytest.raises(TrainingError, match=r"hard_weight must be a number in \[0, 1\]"):
            TrainConfig(hard_weight=bad)


def test_command_line_level_weights_reach_the_model() -> None:
    from hfr.cli import build_parser
    from hfr.commands.common import model_settings

    parser = build_parser()
    base = ["train", "--train-dir", "good", "--output", "m", "--encoder", "resnet18"]
    assert model_settings(parser.parse_args(base)).level_weights is None  # the preset's
    settings = model_settings(parser.parse_args([*base, "--level-weights", "1,0.5,2"]))
    assert settings.level_weights == (1.0, 0.5, 2.0)
    assert model_from_settings(settings).config.scoring.level_weights == (1.0, 0.5, 2.0)
    for bad in ("1,1", "1,1,-1", "0,0,0", "a,b,c", "1,1,inf"):
        with pytest.raises(SystemExit):
            parser.parse_args([*base, "--level-weights", bad])


@pytest.mark.parametrize(
    ("term", "label"),
    [
        ("position", "per-position statistics"),
        ("memory", "patch memory"),
        ("colour", "colour statistics"),
    ],
)
def test_a_term_weighed_without_its_tensors_names_the_fix(term: str, label: str) -> None:
    model = trained_tiny_model()
    scoring = replace(model.config.scoring, **{f"{term}_weight": 1.0, f"{term}_scale": 1.0})
    model.config = model.config.replace(scoring=scoring)
    with pytest.raises(ConfigError, match=f"no {label}.*--{term}-weight"):
        model(torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize("term", ["position", "memory", "colour"])
def test_configs_without_a_terms_keys_load_without_it(term: str) -> None:
    values = Scoring.preset("hfr").to_dict()
    assert values[f"{term}_weight"] == 0.0 and values[f"{term}_scale"] is None
    del values[f"{term}_weight"], values[f"{term}_scale"]  # as written before the term existed
    assert older_scoring(values) == Scoring.preset("hfr")
    for bad in (-1, float("inf"), float("nan"), "1", None, True):
        with pytest.raises(ConfigError, match=f"scoring.{term}_weight must be a number >= 0"):
            Scoring.preset("hfr", **{f"{term}_weight": bad})
    for bad in (0, -1.0, float("nan"), "1"):
        with pytest.raises(ConfigError, match=f"scoring.{term}_scale must be null or a number"):
            Scoring.preset("hfr", **{f"{term}_scale": bad})
