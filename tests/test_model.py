"""HFR model: predict API, batching, calibration use, strict save/load and config validation."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import as_format_1, calibrate, synthetic_images, tiny_model

import hfr
from hfr import HFR
from hfr.config import MAX_DENSE_DECODER_SHARE, Scoring
from hfr.errors import ConfigError, EncoderWeightsError, ModelFormatError, ModelNotFoundError
from hfr.network.autoencoder import dense_decoder_share
from hfr.scoring import maps as anomaly


def calibrated(model: HFR) -> HFR:
    return calibrate(model, synthetic_images(4, seed=9))


def test_forward_shapes(model: HFR) -> None:
    out = model(torch.randn(3, 3, 64, 64))
    assert out.maps.shape == (3, 64, 64)
    assert out.scores.shape == (3,)
    assert [tuple(level.shape) for level in out.level_maps] == [(3, 16, 16), (3, 8, 8), (3, 4, 4)]
    top = out.maps.flatten(1).topk(round(0.01 * 64 * 64), dim=1).values  # default: top 1 %
    torch.testing.assert_close(out.scores, top.mean(1))


def test_paper_scoring_is_the_maximum_of_the_plain_sum() -> None:
    model = tiny_model(scoring="paper")
    out = model(torch.randn(3, 3, 64, 64))
    torch.testing.assert_close(out.scores, out.maps.flatten(1).amax(1))
    assert model.config.scoring.level_scales is None


def test_calibration_measures_level_scales_and_scoring_travels(tmp_path: Path) -> None:
    from hfr.train import TrainConfig, fit

    model = tiny_model()
    fit(model, synthetic_images(12), TrainConfig(epochs=1, batch_size=4), progress=False)
    scales = model.config.scoring.level_scales
    assert scales is not None and len(scales) == 3 and all(s > 0 for s in scales)
    image = synthetic_images(1, seed=5)[0]
    model.save_pretrained(tmp_path)
    loaded = HFR.from_pretrained(tmp_path)
    assert loaded.config.scoring == model.config.scoring
    assert loaded.predict(image)[0].score == model.predict(image)[0].score


def test_configs_without_scoring_score_exactly_as_before(model: HFR, tmp_path: Path) -> None:
    """A config.json written before the scoring section: the paper's max of the plain sum."""
    model.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data = as_format_1(data)
    del data["scoring"]
    (tmp_path / "config.json").write_text(json.dumps(data))
    loaded = HFR.from_pretrained(tmp_path)
    assert loaded.config.scoring == Scoring.preset("paper")
    out = loaded(torch.randn(2, 3, 64, 64))
    torch.testing.assert_close(out.scores, out.maps.flatten(1).amax(1), rtol=0, atol=0)


def test_level_weights_weigh_the_scaled_levels() -> None:
    """The map is the smoothed sum of each level divided by its scale, times its weight."""
    model = tiny_model()
    scoring = replace(model.config.scoring, level_scales=(0.5, 2.0, 4.0), level_weights=(0, 1, 3))
    model.config = model.config.replace(scoring=scoring)
    out = model(torch.randn(2, 3, 64, 64))
    levels = out.level_maps
    weighted = [0 * levels[0], levels[1] / 2.0, 3 * levels[2] / 4.0]
    expected = anomaly.anomaly_map(weighted, (64, 64), model.config.sigma)
    torch.testing.assert_close(out.maps, expected)


def test_configs_without_level_weights_score_exactly_as_before(tmp_path: Path) -> None:
    """A config.json written before 0.8: every level weighs 1, scores bit-identical."""
    model = tiny_model()
    scoring = replace(model.config.scoring, level_scales=(0.3, 0.2, 0.1), level_weights=(1, 1, 1))
    model.config = model.config.replace(scoring=scoring)
    model.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data = as_format_1(data)
    del data["scoring"]["level_weights"]
    (tmp_path / "config.json").write_text(json.dumps(data))
    loaded = HFR.from_pretrained(tmp_path)
    assert loaded.config.scoring.level_weights == (1.0, 1.0, 1.0)
    images = torch.randn(2, 3, 64, 64)
    out = loaded(images)
    scaled = [level / scale for level, scale in zip(out.level_maps, (0.3, 0.2, 0.1), strict=True)]
    expected = anomaly.anomaly_map(scaled, (64, 64), loaded.config.sigma)  # 0.7's computation
    torch.testing.assert_close(out.maps, expected, rtol=0, atol=0)


def test_configs_without_decoder_key_load_the_papers_decoder(tmp_path: Path) -> None:
    paper = tiny_model(decoder="paper")
    paper.save_pretrained(tmp_path / "paper")
    config = json.loads((tmp_path / "paper" / "config.json").read_text())
    config = as_format_1(config)
    del config["decoder"]  # as written before 0.6
    (tmp_path / "paper" / "config.json").write_text(json.dumps(config))
    loaded = HFR.from_pretrained(tmp_path / "paper")
    assert loaded.config.decoder == "paper" and loaded.decoder.context is None
    image = synthetic_images(1, seed=3)
    assert loaded.predict(image)[0].score == paper.predict(image)[0].score
    tiny_model().save_pretrained(tmp_path / "context")  # context weights under a paper config
    _edit_config(tmp_path / "context", decoder="paper")
    with pytest.raises(ModelFormatError, match="does not match an HFR decoder"):
        HFR.from_pretrained(tmp_path / "context")
    with pytest.raises(ConfigError, match=r"\['decoder'\] are fixed by the network"):
        paper.config = paper.config.replace(decoder="context")


def test_predict_maps_at_original_size_and_level_maps(model: HFR) -> None:
    images = [np.zeros((40, 90, 3), np.uint8), np.full((17, 23), 100, np.uint8)]
    predictions = model.predict(images, return_level_maps=True)
    assert [p.anomaly_map.shape for p in predictions] == [(40, 90), (17, 23)]
    assert all(p.anomaly_map.dtype == np.float32 for p in predictions)
    assert [m.shape for m in predictions[0].level_maps] == [(40, 90)] * 3
    assert predictions[0].normalized_score is None  # not calibrated yet
    assert model.predict(images, map_size="input")[0].anomaly_map.shape == (64, 64)


def test_batched_equals_one_by_one(model: HFR) -> None:
    images = synthetic_images(5, seed=4)
    together = model.predict(images, batch_size=5)
    alone = [model.predict(image)[0] for image in images]
    for a, b in zip(together, alone, strict=True):
        assert a.score == pytest.approx(b.score, rel=1e-5)
        np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, rtol=1e-4, atol=1e-6)


def test_verdict_follows_threshold(model: HFR) -> None:
    calibrated(model)
    image = synthetic_images(1, seed=11)[0]
    prediction = model.predict(image)[0]
    assert prediction.is_anomalous == (prediction.score >= model.config.calibration.threshold)
    assert model.predict(image, threshold=0.0)[0].is_anomalous is True
    assert model.predict(image, threshold=1.0)[0].is_anomalous is False
    assert 0.0 < prediction.normalized_score < 1.0
    assert prediction.normalized_map.shape == prediction.anomaly_map.shape


def test_save_and_load_round_trip_is_identical(model: HFR, tmp_path: Path) -> None:
    calibrated(model)
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.save_pretrained(tmp_path)
    assert sorted(f.name for f in tmp_path.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    loaded = HFR.from_pretrained(tmp_path)
    images = synthetic_images(3, seed=5)
    for a, b in zip(model.predict(images), loaded.predict(images), strict=True):
        assert a.score == b.score
        assert a.normalized_score == b.normalized_score
        np.testing.assert_array_equal(a.anomaly_map, b.anomaly_map)


def test_the_model_is_its_network_then_its_scorer(tmp_path: Path) -> None:
    from hfr.train import TrainConfig, fit

    model = tiny_model(memory_weight=1.0, position_weight=1.0)
    fit(model, synthetic_images(8, seed=3), TrainConfig(epochs=1, batch_size=4), progress=False)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        whole = model(images)
        features, reconstructions = model.network(images)
        parts = model.scorer(features, reconstructions, images, model.config)
    torch.testing.assert_close(whole.maps, parts.maps, rtol=0, atol=0)
    assert sorted(model.scorer.terms) == ["memory", "position"]
    assert not any(name.startswith("scorer") for name, _ in model.network.named_parameters())
    # the weights file holds the decoder and the scorer's terms, nothing of the encoder
    model.save_pretrained(tmp_path)
    loaded = HFR.from_pretrained(tmp_path)
    assert sorted(loaded.scorer.state()) == sorted(model.scorer.state())
    with torch.no_grad():
        torch.testing.assert_close(loaded(images).maps, whole.maps, rtol=0, atol=0)


def test_loading_goes_through_the_mixins_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    hook = HFR._from_pretrained.__func__

    def spy(cls, **kwargs):
        calls.append(kwargs)
        return hook(cls, **kwargs)

    monkeypatch.setattr(HFR, "_from_pretrained", classmethod(spy))
    model = HFR.from_pretrained("hfr-mvtec-bottle-mobilenetv2")
    (call,) = calls
    assert Path(call["model_id"]).name == "hfr-mvtec-bottle-mobilenetv2"  # the bundled folder
    assert call["config"] == model.config
    assert call["encoder"] == "mobilenetv2_100"  # config.json's fields, as the mixin passes them


def test_saved_weights_hold_the_decoder_only(model: HFR, tmp_path: Path) -> None:
    from safetensors import safe_open

    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as handle:
        keys = list(handle.keys())
    assert keys and all(key.startswith("decoder.") for key in keys)
    assert len(keys) == len(model.decoder.state_dict())


def test_config_describes_encoder_preprocessing_and_calibration(model: HFR, tmp_path: Path) -> None:
    calibrated(model).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["encoder"] == "resnet18"
    assert config["encoder_fingerprint"] == model.config.encoder_fingerprint
    assert config["preprocessing"]["input_size"] == [64, 64]
    assert config["calibration"]["threshold"] == model.config.calibration.threshold
    assert config["format_version"] == 7 and config["hfr_version"] == hfr.__version__


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def test_loading_refuses_other_encoder_weights(model: HFR, tmp_path: Path) -> None:
    model.save_pretrained(tmp_path)
    _edit_config(tmp_path, encoder_fingerprint="0123456789abcdef")
    with pytest.raises(EncoderWeightsError, match="trained on weights with fingerprint"):
        HFR.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format_version": 99}, "format_version must be 1 to 7"),
        ({"sigma": -1}, "sigma"),
        ({"preprocessing": {"input_size": [50, 50]}}, "preprocessing must be an object"),
        ({"calibration": {"threshold": "high"}}, "calibration"),
    ],
)
def test_bad_config_values_are_clear_errors(model, tmp_path, changes, message) -> None:
    model.save_pretrained(tmp_path)
    _edit_config(tmp_path, **changes)
    with pytest.raises(ModelFormatError, match=message):
        HFR.from_pretrained(tmp_path)


def test_feature_location_travels_in_the_config(tmp_path: Path) -> None:
    model = tiny_model(encoder="mobilenetv2_100", feature_location="expansion")
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["feature_location"] == "expansion"
    loaded = HFR.from_pretrained(tmp_path)
    assert loaded.encoder.channels == [144, 192, 576]
    image = synthetic_images(1, seed=2)
    np.testing.assert_array_equal(
        model.predict(image)[0].anomaly_map, loaded.predict(image)[0].anomaly_map
    )


def test_configs_without_feature_location_load_stage_features(model, tmp_path) -> None:
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config = as_format_1(config)
    del config["feature_location"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert HFR.from_pretrained(tmp_path).config.feature_location == "stage"


def test_a_feature_location_the_encoder_lacks_is_refused(model, tmp_path) -> None:
    model.save_pretrained(tmp_path)
    _edit_config(tmp_path, feature_location="expansion")
    with pytest.raises(EncoderWeightsError, match="no 'expansion' features"):
        HFR.from_pretrained(tmp_path)


def test_truncated_or_mismatched_weights_are_refused(model: HFR, tmp_path: Path) -> None:
    model.save_pretrained(tmp_path / "good")
    weights = (tmp_path / "good" / "model.safetensors").read_bytes()
    (tmp_path / "good" / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ModelFormatError, match="not a readable safetensors"):
        HFR.from_pretrained(tmp_path / "good")
    tiny_model(encoder="mobilenetv2_100").save_pretrained(tmp_path / "other")
    _edit_config(
        tmp_path / "other", encoder="resnet18", encoder_fingerprint=model.config.encoder_fingerprint
    )
    with pytest.raises(ModelFormatError, match=r"is torch.float32 \(96, 96, 5, 5\), expected"):
        HFR.from_pretrained(tmp_path / "other")


def test_missing_or_unexpected_keys_are_refused(model: HFR, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    model.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    save_file({**state, "encoder.extra": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ModelFormatError, match=r"unexpected \['encoder.extra'\]"):
        HFR.from_pretrained(tmp_path)
    state.pop("decoder.level3.project.bias")
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ModelFormatError, match=r"missing \['decoder.level3.project.bias'\]"):
        HFR.from_pretrained(tmp_path)


def test_folder_without_config_or_weights(tmp_path: Path, model: HFR) -> None:
    with pytest.raises(ModelNotFoundError, match="config.json"):
        HFR.from_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(ModelNotFoundError, match="has no model.safetensors"):
        HFR.from_pretrained(tmp_path)


def test_threshold_rates_on_a_test_split(model: HFR) -> None:
    from hfr.evaluate import EvaluationMaps, threshold_rates

    calibrated(model)
    t = model.config.calibration.threshold
    result = EvaluationMaps(
        maps=np.zeros((4, 2, 2)),
        masks=np.zeros(0),
        labels=np.array([0, 0, 1, 1]),
        scores=np.array([t - 1, t + 1, t + 1, t - 1]),
    )
    rates = threshold_rates(model, result)
    assert (rates["threshold_tpr"], rates["threshold_fpr"]) == (0.5, 0.5)
    # one of two: the exact 95 % interval is 1 - 0.975 ** 0.5 to 0.975 ** 0.5 (Clopper-Pearson)
    expected = [1 - 0.975**0.5, 0.975**0.5]
    assert rates["threshold_tpr_interval"] == pytest.approx(expected, rel=1e-9)
    assert rates["threshold_fpr_interval"] == pytest.approx(expected, rel=1e-9)
    calibration = model.config.calibration
    assert rates["guaranteed_fpr"] == (calibration.num_above + 1) / (calibration.num_images + 1)


def test_per_defect_image_auroc() -> None:
    from hfr.evaluate import EvaluationMaps, compute_metrics

    result = EvaluationMaps(
        maps=np.zeros((5, 2, 2)),
        masks=np.zeros(0),
        labels=np.array([0, 0, 1, 1, 1]),
        scores=np.array([0.1, 0.3, 0.2, 0.9, 0.8]),
        defects=["good", "good", "scratch", "crack", "crack"],
    )
    table = compute_metrics(result)["per_defect_image_auroc"]
    assert table == {"crack": 1.0, "scratch": 0.5}


def test_per_defect_pixel_auroc_and_aupro() -> None:
    """Each defect type's pixels against its own images' and the normal images' other pixels:
    the scratch is outlined (1.0 / 1.0), the crack's map points beside it (its one pixel ties
    with 2 of the 11 normal pixels: 1/11; found only at FPR 1: AUPRO 0)."""
    from hfr.evaluate import EvaluationMaps, compute_metrics

    masks = np.zeros((4, 2, 2), bool)
    masks[2, 0, 0] = masks[3, 1, 1] = True
    maps = np.full((4, 2, 2), 0.1)
    maps[2:] = [[0.9, 0.0], [0.0, 0.0]]
    result = EvaluationMaps(
        maps=maps,
        masks=masks,
        labels=np.array([0, 0, 1, 1]),
        scores=maps.max(axis=(1, 2)),
        defects=["good", "good", "scratch", "crack"],
    )
    values = compute_metrics(result)
    assert values["per_defect_pixel_auroc"] == pytest.approx({"scratch": 1.0, "crack": 1 / 11})
    assert values["per_defect_aupro"] == pytest.approx({"scratch": 1.0, "crack": 0.0})
    from hfr.cards import model_card

    measured = {"aupro_fpr_limit": 0.3, "inference_ms_per_image": 1.0, "device": "cpu"}
    measured |= {"num_test_images": 4, "num_anomalous": 2, "resolution": "2x2"}
    config = tiny_model().config.replace(evaluation={**values, **measured})
    card = str(model_card(config, decoder_parameters=1))
    assert "| defect | image AUROC | pixel AUROC | AUPRO |" in card
    assert "| crack | 1.0000 | 0.0909 | 0.0000 |" in card
    assert "| scratch | 1.0000 | 1.0000 | 1.0000 |" in card


def test_a_folder_or_bundled_model_loads_without_asking_the_hub(
    model: HFR, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError("a local model must not probe the Hub")

    monkeypatch.setattr(hfr.hub, "hub_reachable", no_network)
    model.save_pretrained(tmp_path)
    assert HFR.from_pretrained(tmp_path).config == model.config
    assert HFR.from_pretrained("hfr-mvtec-screw-mobilenetv2").config.category == "screw"


def test_a_narrow_decoder_saves_loads_and_stays_narrow(tmp_path: Path) -> None:
    """``decoder_width`` is part of the network: saved in config.json (format 4), rebuilt on
    load with the same scores, and fixed for the model's life."""
    model = tiny_model(decoder_width=32)
    assert max(p.shape[0] for p in model.decoder.level3.parameters()) == 256  # the projection
    assert model.decoder.level3.convs[1][0].out_channels == 32
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["decoder_width"] == 32
    loaded = HFR.from_pretrained(tmp_path)
    images = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(loaded(images).scores, model(images).scores, rtol=0, atol=0)
    with pytest.raises(ConfigError, match=r"\['decoder_width'\] are fixed by the network"):
        model.config = model.config.replace(decoder_width=None)
    assert tiny_model().config.decoder_width is None  # full width by default


@pytest.mark.parametrize(
    ("encoder", "blocks"),
    [("resnet18", "separable"), ("mobilenetv2_100", "dense"), ("tf_efficientnet_lite0", "dense")],
)
def test_auto_blocks_are_dense_only_where_they_cost_at_most_half_the_encoder(
    encoder: str, blocks: str
) -> None:
    """``decoder_blocks="auto"`` (the default) is decided when the network is built, from the
    dense decoder's FLOPs over the encoder's (ResNet18 0.66, the mobile encoders 0.42-0.43), and
    the config then says which; a choice given is kept."""
    model = HFR(encoder=encoder, encoder_weights="random", input_size=64)
    assert model.config.decoder_blocks == blocks
    depthwise = model.decoder.level1.convs[1][0].groups > 1
    assert depthwise == (blocks == "separable")
    share = dense_decoder_share(model.network.encoder, context=True, width=None)
    assert (share > MAX_DENSE_DECODER_SHARE) == (blocks == "separable")
    chosen = HFR(encoder=encoder, encoder_weights="random", input_size=64, decoder_blocks="dense")
    assert chosen.config.decoder_blocks == "dense"


def test_separable_blocks_train_save_load_and_stay_separable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``decoder_blocks`` is part of the network: trained (the log says which blocks, and how to
    change them), saved in config.json (format 5), rebuilt on load with the same scores, and
    fixed for the model's life."""
    from hfr.train import TrainConfig, fit

    model = tiny_model(decoder_blocks="separable")
    assert model.decoder.level1.convs[1][0].groups == model.decoder.level1.convs[1][0].in_channels
    with caplog.at_level(logging.INFO, logger="hfr.train"):
        fit(model, synthetic_images(8), TrainConfig(epochs=1, batch_size=4), progress=False)
    assert "separable decoder blocks" in caplog.text and "--decoder-blocks dense" in caplog.text
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["decoder_blocks"] == "separable"
    loaded = HFR.from_pretrained(tmp_path)
    images = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(loaded(images).scores, model(images).scores, rtol=0, atol=0)
    with pytest.raises(ConfigError, match=r"\['decoder_blocks'\] are fixed by the network"):
        model.config = model.config.replace(decoder_blocks="dense")
    assert tiny_model().config.decoder_blocks == "dense"
