"""How the levels become the map: summed (every model) or the fine evidence multiplied with the
coarse (``scoring.combination="product"``, an option since 0.12)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import older_scoring, synthetic_images, tiny_model

from hfr import HFR
from hfr.cards import scoring_text
from hfr.config import Scoring
from hfr.errors import ConfigError
from hfr.scoring import maps as anomaly
from hfr.train import TrainConfig, fit


def test_product_multiplies_the_fine_and_the_coarse_maps() -> None:
    torch.manual_seed(0)
    levels = [torch.rand(2, 16, 16), torch.rand(2, 8, 8), torch.rand(2, 4, 4), torch.rand(2, 4, 4)]
    fine = anomaly.anomaly_map(levels[:2], (32, 32), 2.0)
    coarse = anomaly.anomaly_map(levels[2:], (32, 32), 2.0)
    product = anomaly.combined_map(levels, (32, 32), 2.0, "product")
    torch.testing.assert_close(product, (fine + 1) * (coarse + 1) - 1)
    total = anomaly.combined_map(levels, (32, 32), 2.0, "sum")
    torch.testing.assert_close(total, anomaly.anomaly_map(levels, (32, 32), 2.0))


def test_a_trained_model_scores_with_its_combination_and_keeps_it(tmp_path: Path) -> None:
    model = tiny_model(memory_weight=1.0, combination="product")
    fit(model, synthetic_images(12), TrainConfig(epochs=1, batch_size=4), progress=False)
    assert model.config.scoring.combination == "product"
    assert "multiplied" in scoring_text(model.config.scoring)
    images = synthetic_images(3, seed=9)
    product = [p.score for p in model.predict(images)]
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["scoring"]["combination"] == "product"
    assert [p.score for p in HFR.from_pretrained(tmp_path).predict(images)] == product
    model.config = model.config.replace(scoring=replace(model.config.scoring, combination="sum"))
    assert [p.score for p in model.predict(images)] != product


def test_configs_without_the_key_sum_and_bad_values_are_refused() -> None:
    values = Scoring.preset("hfr").to_dict()
    del values["combination"]  # as every config before 0.12
    assert older_scoring(values).combination == "sum"
    for bad in ("max", "", None, 1):
        with pytest.raises(ConfigError, match=r"scoring.combination must be one of"):
            Scoring.preset("hfr", combination=bad)


def test_the_command_line_passes_the_combination() -> None:
    from hfr.cli import build_parser
    from hfr.commands.common import model_settings

    parser = build_parser()
    base = ["train", "--train-dir", "good", "--output", "m", "--encoder", "resnet18"]
    assert model_settings(parser.parse_args(base)).combination == "sum"
    settings = model_settings(parser.parse_args([*base, "--combination", "product"]))
    assert settings.combination == "product"
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--combination", "max"])
