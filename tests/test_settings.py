"""One declaration per setting: ``hfr train``, the README's Python quick start and a bare
``HFR(...)`` trained with ``fit`` build the same model from the same arguments."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

import pytest
from conftest import write_pngs

from hfr import HFR
from hfr.cli import build_parser, main
from hfr.config import ModelSettings, TrainConfig
from hfr.config.options import add_setting_options
from hfr.data import load_folder
from hfr.pipeline import RunOptions, train_category
from hfr.train import fit

SETTINGS = {"encoder": "resnet18", "encoder_weights": "random", "input_size": 64}
TRAINING = {"epochs": 2, "batch_size": 4}
OPTIONS = ["--encoder", "resnet18", "--encoder-weights", "random", "--image-size", "64",
           "--epochs", "2", "--batch-size", "4"]  # fmt: skip
# What training measures rather than decides: scales, threshold, losses, times, the source.
MEASURED_SCORING = ("level_scales", "position_scale", "memory_scale", "colour_scale")
MEASURED_TRAINING = ("final_loss", "position_share", "seconds", "device", "command")


def _settled(config: dict) -> dict:
    """A config's settings after training, without what training measured."""
    scoring = {k: v for k, v in config["scoring"].items() if k not in MEASURED_SCORING}
    training = {k: v for k, v in config["training"].items() if k not in MEASURED_TRAINING}
    kept = {k: v for k, v in config.items() if k not in ("calibration", "evaluation")}
    return {**kept, "scoring": scoring, "training": training, "dataset": None, "category": None}


def test_the_command_line_and_the_python_api_train_the_same_model(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    images = write_pngs(tmp_path / "good", 12)
    assert main(["train", "--train-dir", str(tmp_path / "good"), "--output",
                 str(tmp_path / "cli"), *OPTIONS]) == 0  # fmt: skip
    model, _ = train_category(  # the README's quick start
        load_folder(tmp_path / "good"),
        tmp_path / "api",
        settings=ModelSettings(**SETTINGS),
        options=RunOptions(training=TrainConfig(**TRAINING), progress=False),
    )
    bare = HFR(**SETTINGS)
    fit(bare, images, TrainConfig(**TRAINING), progress=False)
    capsys.readouterr()
    informed = {}
    for name in ("cli", "api"):
        assert main(["info", str(tmp_path / name)]) == 0
        informed[name] = _settled(json.loads(capsys.readouterr().out))
    assert informed["cli"] == informed["api"] == _settled(model.config.to_dict())
    assert _settled(bare.config.to_dict()) == informed["cli"]
    scoring = informed["cli"]["scoring"]
    assert scoring["memory_weight"] == ModelSettings().memory_weight > 0  # as hfr train's
    assert scoring["colour_weight"] in (0.0, 1.5) and bare.term("memory") is not None
    assert informed["cli"]["preprocessing"]["resize"] == "stretch"  # decided by training


def test_every_option_is_a_declared_setting() -> None:
    """The options of ``hfr train`` for the model and its training are generated from the
    settings, each with its declared default and help."""
    parser = build_parser()
    args = parser.parse_args(["train", "--train-dir", "d", "--output", "o"])
    for settings in (ModelSettings, TrainConfig):
        for item in fields(settings):
            if item.metadata:
                assert getattr(args, item.name) == getattr(settings(), item.name), item.name
    group = argparse.ArgumentParser().add_argument_group()
    add_setting_options(group, ModelSettings)
    flags = {action.option_strings[0] for action in group._group_actions}
    declared = {item.metadata["option"].flag for item in fields(ModelSettings) if item.metadata}
    assert flags == declared and len(flags) == len(fields(ModelSettings))
