"""Encoder: frozen in every mode, weight files in timm/torchvision layouts, fingerprints."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import torchvision

from hfr.errors import EncoderWeightsError
from hfr.network.encoder import build_encoder, fingerprint, resolve_weights_file


def test_encoder_stays_frozen_and_in_eval_mode() -> None:
    encoder, _ = build_encoder("resnet18", "random")
    encoder.train()
    assert not encoder.training
    assert not any(module.training for module in encoder.modules())
    assert not any(p.requires_grad for p in encoder.parameters())
    before = encoder.backbone.bn1.running_mean.clone()
    encoder(torch.randn(2, 3, 64, 64) * 5)
    torch.testing.assert_close(encoder.backbone.bn1.running_mean, before)


def test_stage_channels_for_supported_backbones() -> None:
    assert build_encoder("resnet18", "random")[0].channels == [64, 128, 256]
    assert build_encoder("mobilenetv2_100", "random")[0].channels == [24, 32, 96]
    assert build_encoder("tf_efficientnet_lite0", "random")[0].channels == [24, 40, 112]


def test_wrong_strides_and_unknown_names_are_refused() -> None:
    with pytest.raises(EncoderWeightsError, match=r"strides \[2, 4, 8\]"):
        build_encoder("vgg11", "random")
    with pytest.raises(EncoderWeightsError, match="no model named"):
        build_encoder("no_such_net", "random")


def test_random_init_is_reproducible() -> None:
    assert build_encoder("resnet18", "random")[1] == build_encoder("resnet18", "random")[1]


def test_torchvision_file_maps_by_order_with_identical_outputs(tmp_path: Path) -> None:
    torch.manual_seed(3)
    reference = torchvision.models.mobilenet_v2(weights=None).eval()
    path = tmp_path / "mobilenet_v2-test.pth"
    torch.save(reference.state_dict(), path)
    encoder, print_ = build_encoder("mobilenetv2_100", str(path))
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        f3_torchvision = reference.features[:14](images)  # stride 16, 96 channels
    torch.testing.assert_close(encoder(images)[2], f3_torchvision, rtol=1e-4, atol=1e-4)
    assert print_ != build_encoder("mobilenetv2_100", "random")[1]


def test_expansion_features_match_torchvision_expansion_layers(tmp_path: Path) -> None:
    torch.manual_seed(4)
    reference = torchvision.models.mobilenet_v2(weights=None).eval()
    path = tmp_path / "mobilenet_v2-test.pth"
    torch.save(reference.state_dict(), path)
    encoder, _ = build_encoder("mobilenetv2_100", str(path), feature_location="expansion")
    assert encoder.channels == [144, 192, 576]
    images = torch.randn(2, 3, 64, 64)
    features = encoder(images)
    with torch.no_grad():  # each stage's last block, after its expand and depthwise convs
        for level, block in zip(features, (3, 6, 13), strict=True):
            expected = reference.features[block].conv[:2](reference.features[:block](images))
            torch.testing.assert_close(level, expected, rtol=1e-4, atol=1e-4)


def test_expansion_features_need_an_inverted_residual_network() -> None:
    with pytest.raises(EncoderWeightsError, match="no 'expansion' features"):
        build_encoder("resnet18", "random", feature_location="expansion")
    with pytest.raises(EncoderWeightsError, match="feature_location must be one of"):
        build_encoder("mobilenetv2_100", "random", feature_location="middle")


def test_timm_layout_and_safetensors_files_load(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    source = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.safetensors"
    save_file(source.state_dict(), str(path))
    encoder, _ = build_encoder("resnet18", str(path))
    torch.testing.assert_close(encoder.backbone.conv1.weight, source.conv1.weight)


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    with pytest.raises(EncoderWeightsError, match="another architecture|expects"):
        build_encoder("mobilenetv2_100", str(path))


def test_pickled_code_is_never_executed(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"weight": Payload()}, path)
    with pytest.raises(EncoderWeightsError, match="cannot read"):
        build_encoder("resnet18", str(path))


def test_weights_resolved_from_environment_folder(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "my_weights.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    monkeypatch.setenv("HFR_ENCODER_WEIGHTS", str(tmp_path))
    assert resolve_weights_file("my_weights.pth") == path
    monkeypatch.setenv("HFR_ENCODER_WEIGHTS", str(path))
    assert resolve_weights_file("elsewhere/other_name.pth") == path


def test_missing_weights_say_where_they_were_looked_for(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HFR_ENCODER_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(EncoderWeightsError, match="HFR_ENCODER_WEIGHTS"):
        resolve_weights_file("nowhere-123.pth")


def test_fingerprint_changes_with_any_weight() -> None:
    encoder, before = build_encoder("resnet18", "random")
    with torch.no_grad():
        encoder.backbone.layer3[0].conv1.weight[0, 0, 0, 0] += 1e-3
    assert fingerprint(encoder) != before


@pytest.mark.parametrize(
    ("encoder", "weights_fixture", "channels"),
    [
        ("mobilenetv2_100", "mobilenet_weights", [24, 32, 96]),
        ("tf_efficientnet_lite0", "efficientnet_weights", [24, 40, 112]),
    ],
)
def test_the_real_imagenet_weights_load_tensor_for_tensor(
    encoder: str, weights_fixture: str, channels: list[int], request: pytest.FixtureRequest
) -> None:
    """The weights packages CI installs: every tensor of the encoder comes from the file (none
    left at its random initialisation), and the features have the encoder's channels."""
    from hfr.network.encoder import read_state_dict

    weights = request.getfixturevalue(weights_fixture)
    loaded, _ = build_encoder(encoder, weights)
    state = read_state_dict(resolve_weights_file(weights))
    by_shape: dict[tuple[int, ...], list[torch.Tensor]] = {}
    for tensor in state.values():
        by_shape.setdefault(tuple(tensor.shape), []).append(tensor)
    for name, tensor in loaded.backbone.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        same_shape = by_shape.get(tuple(tensor.shape), [])
        assert any(torch.equal(tensor, candidate) for candidate in same_shape), name
    assert fingerprint(loaded) != fingerprint(build_encoder(encoder, "random")[0])
    features = loaded(torch.rand(1, 3, 64, 64))
    assert [f.shape[1] for f in features] == channels == loaded.channels
