"""``HFR``: the model, its config and Hub (de)serialisation, and batched prediction."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from huggingface_hub import ModelCard, PyTorchModelHubMixin, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from hfr import anomaly
from hfr.calibration import Calibration
from hfr.decoder import HierarchicalDecoder
from hfr.encoder import RANDOM_WEIGHTS, build_encoder
from hfr.errors import EncoderWeightsError, HFRError, ModelFormatError
from hfr.images import ImageInput, load_rgb
from hfr.preprocessing import Preprocessing

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
PAPER_URL = "https://arxiv.org/abs/2405.09148"


@dataclass
class Prediction:
    """The result for one image.

    ``anomaly_map`` is the raw map (float32, the input image's size unless asked otherwise);
    ``normalized_map`` and ``normalized_score`` use the model's calibration (0.5 = threshold).
    ``level_maps`` holds the three per-level residual maps when requested.
    """

    score: float
    normalized_score: float | None
    is_anomalous: bool | None
    threshold: float | None
    anomaly_map: np.ndarray
    normalized_map: np.ndarray | None
    level_maps: list[np.ndarray] | None = None


@dataclass
class AnomalyOutput:
    """Batched forward result on the model's device: maps at input size and scores."""

    maps: torch.Tensor
    scores: torch.Tensor
    level_maps: list[torch.Tensor]


class HFR(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="hfr",
    tags=["anomaly-detection", "hfr", "image-segmentation"],
    pipeline_tag="image-segmentation",
    paper_url=PAPER_URL,
    repo_url="https://github.com/hfr-anomaly/hfr",
):
    """Hierarchically Feature Reconstructed autoencoder for unsupervised anomaly detection.

    A frozen timm encoder gives features ``f1, f2, f3`` (strides 4, 8, 16); a decoder rebuilds
    them from ``f3``; the per-level cosine residuals, resized, summed and Gaussian-smoothed, are
    the anomaly map, and its maximum is the image score.

    Args:
        encoder: timm model name. ``"resnet18.tv_in1k"`` (paper's R18) and
            ``"wide_resnet50_2.tv_in1k"`` (wR50) are the paper's backbones.
        encoder_weights: ``None`` for timm's weights from the Hub, ``"random"``, or a weights file
            (path or name; see :func:`hfr.encoder.resolve_weights_file`).
        encoder_fingerprint: expected fingerprint of the encoder weights; a mismatch raises.
        feature_location: ``"stage"`` (stage outputs, the paper's choice) or ``"expansion"``
            (the expansion layers of MobileNet / EfficientNet encoders; see
            :data:`hfr.encoder.FEATURE_LOCATIONS`).
        input_size: side of the square network input.
        preprocessing: a :class:`Preprocessing` as dict; defaults come from timm's config.
        sigma: standard deviation of the Gaussian that smooths the map.
        calibration: a :class:`Calibration` as dict, set by training.
        dataset, category: what the model was trained on (metadata).
        training, evaluation: how it was trained and measured (metadata for the model card).

    Example:
        >>> model = HFR(encoder="resnet18", encoder_weights="random", input_size=64)
        >>> out = model(torch.zeros(2, 3, 64, 64))
        >>> tuple(out.maps.shape), tuple(out.scores.shape)
        ((2, 64, 64), (2,))
    """

    def __init__(
        self,
        *,
        encoder: str = "resnet18.tv_in1k",
        encoder_weights: str | None = None,
        encoder_fingerprint: str | None = None,
        feature_location: str = "stage",
        input_size: int = 256,
        preprocessing: dict | None = None,
        sigma: float = anomaly.DEFAULT_SIGMA,
        calibration: dict | None = None,
        dataset: str | None = None,
        category: str | None = None,
        training: dict | None = None,
        evaluation: dict | None = None,
        format_version: int = FORMAT_VERSION,
    ) -> None:
        super().__init__()
        if format_version != FORMAT_VERSION:
            raise ModelFormatError(
                f"model format version {format_version!r} is not supported by this HFR "
                f"(supports {FORMAT_VERSION}); upgrade hfr"
            )
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and 0 <= sigma <= 64):
            raise ModelFormatError(f"sigma must be a number in [0, 64], got {sigma!r}")
        self.encoder_name = encoder
        self.encoder_weights = encoder_weights
        self.feature_location = feature_location
        self.encoder, fingerprint = build_encoder(
            encoder, encoder_weights, feature_location=feature_location
        )
        if encoder_fingerprint is not None and encoder_fingerprint != fingerprint:
            raise EncoderWeightsError(
                f"the encoder weights {encoder_weights or 'from the Hub'!r} of {encoder!r} have "
                f"fingerprint {fingerprint}, but this decoder was trained on weights with "
                f"fingerprint {encoder_fingerprint}; load the same weights file it was trained with"
            )
        self.encoder_fingerprint = fingerprint
        if preprocessing is None:
            self.preprocessing = Preprocessing.for_encoder(encoder, input_size)
        else:
            try:
                self.preprocessing = Preprocessing(**preprocessing)
            except TypeError as error:
                raise ModelFormatError(f"preprocessing in config is malformed: {error}") from error
        self.decoder = HierarchicalDecoder(self.encoder.channels)
        self.sigma = float(sigma)
        self.calibration = None if calibration is None else Calibration.from_dict(calibration)
        self.dataset = dataset
        self.category = category
        self.training_info = training
        self.evaluation = evaluation
        self.eval()

    @property
    def device(self) -> torch.device:
        """The device the decoder's weights are on."""
        return next(self.decoder.parameters()).device

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this model around its decoder weights (``config.json``)."""
        return {
            "format_version": FORMAT_VERSION,
            "encoder": self.encoder_name,
            "encoder_weights": _weights_name(self.encoder_weights),
            "encoder_fingerprint": self.encoder_fingerprint,
            "feature_location": self.feature_location,
            "input_size": self.preprocessing.input_size[0],
            "preprocessing": self.preprocessing.to_dict(),
            "sigma": self.sigma,
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
            "dataset": self.dataset,
            "category": self.category,
            "training": self.training_info,
            "evaluation": self.evaluation,
        }

    def reconstruct(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Encoder features ``[f1, f2, f3]`` and decoder reconstructions ``[d1, d2, d3]``."""
        with self._autocast():
            features = self.encoder(images)
            return features, self.decoder(features[-1])

    def forward(self, images: torch.Tensor) -> AnomalyOutput:
        """Anomaly maps at input size and scores for a normalised ``(B, 3, H, W)`` batch."""
        features, reconstructions = self.reconstruct(images)
        residuals = anomaly.residual_maps(features, reconstructions)
        maps = anomaly.anomaly_map(residuals, tuple(images.shape[-2:]), self.sigma)
        return AnomalyOutput(maps=maps, scores=anomaly.image_scores(maps), level_maps=residuals)

    def _autocast(self) -> torch.autocast:
        device_type = self.device.type
        return torch.autocast(
            device_type=device_type, dtype=torch.bfloat16, enabled=device_type == "cuda"
        )

    @torch.inference_mode()
    def predict(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        batch_size: int = 16,
        threshold: float | None = None,
        return_level_maps: bool = False,
        map_size: str = "original",
    ) -> list[Prediction]:
        """Score images and return their anomaly maps.

        Args:
            images: one image or a list: paths, PIL images, numpy arrays or tensors (any mode).
            batch_size: images per forward pass.
            threshold: verdict threshold on the normalised scale; default 0.5, the calibrated one.
            return_level_maps: also return the three per-level residual maps.
            map_size: ``"original"`` (each image's own size) or ``"input"`` (the network's input).

        Example:
            >>> preds = model.predict(["good.png", "broken.png"])  # doctest: +SKIP
            >>> preds[1].is_anomalous, preds[1].anomaly_map.shape  # doctest: +SKIP
            (True, (900, 900))
        """
        if map_size not in ("original", "input"):
            raise ValueError(f"map_size must be 'original' or 'input', got {map_size!r}")
        items = [images] if _is_single_image(images) else list(images)
        self.eval()
        predictions: list[Prediction] = []
        for start in range(0, len(items), batch_size):
            arrays = [load_rgb(item) for item in items[start : start + batch_size]]
            batch = self.preprocessing(arrays, self.device)
            output = self(batch)
            sizes = [a.shape[:2] for a in arrays] if map_size == "original" else None
            predictions.extend(self._to_predictions(output, sizes, threshold, return_level_maps))
        return predictions

    def _to_predictions(
        self,
        output: AnomalyOutput,
        sizes: list[tuple[int, int]] | None,
        threshold: float | None,
        return_level_maps: bool,
    ) -> list[Prediction]:
        count = output.scores.shape[0]
        input_size = tuple(output.maps.shape[-2:])
        sizes = sizes or [input_size] * count
        maps = _resize_each(output.maps, sizes)
        levels = [_resize_each(level, sizes) for level in output.level_maps]
        scores = output.scores.float().cpu().numpy()
        calibration = self.calibration
        normalized_scores = None if calibration is None else calibration.normalize(output.scores)
        threshold = 0.5 if threshold is None else float(threshold)
        predictions = []
        for i in range(count):
            normalized_score = None
            normalized_map = None
            if calibration is not None:
                normalized_score = float(normalized_scores[i])
                normalized_map = calibration.normalize(maps[i]).cpu().numpy()
            predictions.append(
                Prediction(
                    score=float(scores[i]),
                    normalized_score=normalized_score,
                    is_anomalous=None
                    if normalized_score is None
                    else normalized_score >= threshold,
                    threshold=None if calibration is None else threshold,
                    anomaly_map=maps[i].cpu().numpy(),
                    normalized_map=normalized_map,
                    level_maps=[lv[i].cpu().numpy() for lv in levels]
                    if return_level_maps
                    else None,
                )
            )
        return predictions

    # --- Hub serialisation: decoder weights only, strict and pickle-free loading ---

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """The model card of ``hub_cards/model_card.md`` (``repo_id=`` names the repo in it)."""
        from hfr.hub import model_card

        return model_card(self, repo_id=kwargs.get("repo_id"))

    def _save_pretrained(self, save_directory: Path) -> None:
        state = {
            f"decoder.{k}": v.detach().cpu().contiguous()
            for k, v in self.decoder.state_dict().items()
        }
        save_file(state, str(save_directory / WEIGHTS_FILE), metadata={"format": "pt"})
        (save_directory / CONFIG_FILE).write_text(json.dumps(self.config(), indent=2) + "\n")

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        force_download: bool = False,
        token: str | bool | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        revision: str | None = None,
        **model_kwargs: Any,
    ) -> HFR:
        """Load a model from a local folder or a Hub repo, strictly and without pickle.

        Works offline from the cache (``HF_HUB_OFFLINE=1``). Any failure (missing repo, revision
        or file, corrupt weights, a config that does not match) raises an :class:`HFRError`.

        Example:
            >>> model = HFR.from_pretrained("hfr-anomaly/hfr-mvtec-bottle")  # doctest: +SKIP
            >>> model = HFR.from_pretrained("models/bottle", map_location="cuda")  # doctest: +SKIP
        """
        name = str(pretrained_model_name_or_path)
        try:
            return super().from_pretrained(
                pretrained_model_name_or_path,
                force_download=force_download,
                token=token,
                cache_dir=cache_dir,
                local_files_only=local_files_only,
                revision=revision,
                **model_kwargs,
            )
        except HFRError:
            raise
        except (HfHubHTTPError, OfflineModeIsEnabled, LocalEntryNotFoundError, OSError) as error:
            raise ModelFormatError(
                _hub_error_message(name, CONFIG_FILE, revision, error)
            ) from error

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        config: dict | None = None,
        map_location: str = "cpu",
        **model_kwargs: Any,
    ) -> HFR:
        if config is None:
            _raise_missing_config(model_id, revision, cache_dir, local_files_only, token)
        _check_config_keys(config, model_id)
        weights_file = _fetch(
            model_id, WEIGHTS_FILE, revision, cache_dir, force_download, local_files_only, token
        )
        model = cls(**model_kwargs)
        model.load_decoder_weights(weights_file)
        return model.to(map_location)

    def load_decoder_weights(self, path: str | Path) -> None:
        """Load ``model.safetensors`` decoder weights strictly: names and shapes must match."""
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise ModelFormatError(f"{path} is not a readable safetensors file: {error}") from error
        expected = {f"decoder.{k}": v for k, v in self.decoder.state_dict().items()}
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ModelFormatError(
                f"{path} does not match an HFR decoder for {self.encoder_name!r}: "
                f"missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        for key, tensor in state.items():
            if tensor.shape != expected[key].shape:
                raise ModelFormatError(
                    f"{path}: {key} has shape {tuple(tensor.shape)}, "
                    f"expected {tuple(expected[key].shape)}"
                )
        self.decoder.load_state_dict({k.removeprefix("decoder."): v for k, v in state.items()})


def _weights_name(weights: str | None) -> str | None:
    if weights is None or weights == RANDOM_WEIGHTS:
        return weights
    return Path(weights).name


def _is_single_image(images: Any) -> bool:
    if isinstance(images, (str, Path, np.ndarray, torch.Tensor)):
        return True
    return not isinstance(images, Iterable)


def _resize_each(maps: torch.Tensor, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """Resize each ``(H, W)`` map to its own size, one interpolation per distinct size."""
    resized: list[torch.Tensor | None] = [None] * len(sizes)
    for size in set(sizes):
        indices = [i for i, s in enumerate(sizes) if s == size]
        group = anomaly.resize_maps(maps[indices].float(), tuple(size))
        for j, i in enumerate(indices):
            resized[i] = group[j]
    return resized


_REQUIRED_CONFIG_KEYS = ("format_version", "encoder", "encoder_fingerprint", "preprocessing")


def _check_config_keys(config: dict, model_id: str) -> None:
    if not isinstance(config, dict):
        raise ModelFormatError(f"config.json of {model_id} is not a JSON object")
    missing = [k for k in _REQUIRED_CONFIG_KEYS if k not in config]
    if missing:
        raise ModelFormatError(f"config.json of {model_id} is not an HFR config: lacks {missing}")


def _fetch(
    model_id: str,
    filename: str,
    revision: str | None,
    cache_dir: str | Path | None,
    force_download: bool,
    local_files_only: bool,
    token: str | bool | None,
) -> str:
    """Path of ``filename`` in a local folder or a Hub repo (downloaded or cached)."""
    local = Path(model_id)
    if local.is_dir():
        if not (local / filename).is_file():
            raise ModelFormatError(f"{local} has no {filename}")
        return str(local / filename)
    try:
        return hf_hub_download(
            repo_id=model_id,
            filename=filename,
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
        )
    except (HfHubHTTPError, OfflineModeIsEnabled, EntryNotFoundError) as error:
        raise ModelFormatError(_hub_error_message(model_id, filename, revision, error)) from error


def _hub_error_message(model_id: str, filename: str, revision: str | None, error: Exception) -> str:
    """One clear sentence for each way a Hub download can fail."""
    if isinstance(error, RepositoryNotFoundError):
        return f"model repo {model_id!r} not found on the Hub (or private: log in or pass token=)"
    if isinstance(error, RevisionNotFoundError):
        return f"{model_id!r} has no revision {revision!r}"
    if isinstance(error, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        return (
            f"{filename} of {model_id!r} is not in the cache and the Hub cannot be reached "
            "(offline mode or no network)"
        )
    if isinstance(error, EntryNotFoundError):
        return f"{model_id!r} has no {filename}; HFR loads only safetensors weights, never pickles"
    return f"cannot download {filename} of {model_id!r}: {error}"


def _raise_missing_config(
    model_id: str,
    revision: str | None,
    cache_dir: str | Path | None,
    local_files_only: bool,
    token: str | bool | None,
) -> None:
    """Re-fetch config.json to turn the mixin's silent miss into the precise error."""
    _fetch(model_id, CONFIG_FILE, revision, cache_dir, False, local_files_only, token)
    raise ModelFormatError(f"{model_id} has no usable {CONFIG_FILE}")
