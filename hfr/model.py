"""``HFR``: the model as users hold it. A ``PyTorchModelHubMixin`` facade over the network
(:class:`~hfr.network.autoencoder.FeatureAutoencoder`) and the scorer
(:class:`~hfr.scoring.scorer.Scorer`): batched prediction from image files, and the Hub hooks
(safetensors of the decoder and of the fitted scoring terms, never the encoder; strict and
pickle-free loading)."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard, PyTorchModelHubMixin
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from hfr import cards, hub
from hfr.config import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    HFRConfig,
    ModelSettings,
    read_config,
    write_config,
)
from hfr.errors import ConfigError, ModelFormatError
from hfr.images import ImageInput, load_rgb
from hfr.network.autoencoder import FeatureAutoencoder
from hfr.network.decoder import HierarchicalDecoder
from hfr.network.encoder import FrozenEncoder
from hfr.prediction import predict_images
from hfr.preprocessing import to_batch
from hfr.scoring import maps as anomaly
from hfr.scoring.calibration import Calibration
from hfr.scoring.postprocess import Prediction
from hfr.scoring.scorer import Scorer
from hfr.scoring.terms import ScoringTerm

PAPER_URL = "https://arxiv.org/abs/2405.09148"
# Fields fixed by the network the weights belong to: a config change may not touch them.
_NETWORK_FIELDS = (
    "encoder",
    "encoder_weights",
    "encoder_fingerprint",
    "feature_location",
    "decoder",
    "decoder_width",
    "decoder_blocks",
)


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
    the anomaly map, and its maximum is the image score (the paper). New models by default scale
    each level by its mean on normal images first, weigh the stride-4 and stride-8 levels half,
    and score the mean of the map's top 1 % (``config.scoring``,
    :class:`~hfr.config.Scoring`), and add the scoring terms it weighs
    (:mod:`hfr.scoring.terms`), each fitted from the training images.

    Args:
        config: an :class:`~hfr.config.HFRConfig` (a saved model's), or the
            :class:`~hfr.config.ModelSettings` of a new model; or leave it out and pass the
            settings as keywords (``encoder=``, ``encoder_weights=``, ``input_size=``, ...).
            A new model is the one ``hfr train`` builds from the same options; its ``"auto"``
            settings are decided by :func:`hfr.train.fit`, and until then it scores with its
            residual levels alone. ``encoder_weights`` is ``None`` for timm's weights from the
            Hub, ``"random"``, or a weights file.

    Example:
        >>> model = HFR(encoder="resnet18", encoder_weights="random", input_size=64)
        >>> out = model(torch.zeros(2, 3, 64, 64))
        >>> tuple(out.maps.shape), tuple(out.scores.shape)
        ((2, 64, 64), (2,))
    """

    def __init__(self, config: HFRConfig | ModelSettings | None = None, **fields: Any) -> None:
        super().__init__()
        if isinstance(config, HFRConfig):
            if fields:
                raise ConfigError("pass either a config or its fields as keywords, not both")
        else:
            config = HFRConfig.build(config, **fields)
        self.network = FeatureAutoencoder(
            config.encoder,
            config.encoder_weights,
            feature_location=config.feature_location,
            decoder=config.decoder,
            decoder_width=config.decoder_width,
            decoder_blocks=config.decoder_blocks,
            fingerprint=config.encoder_fingerprint,
        )
        self.scorer = Scorer()
        self._config = config.replace(
            encoder_weights=config.weights_file_name,
            encoder_fingerprint=self.network.fingerprint,
            decoder_blocks=self.network.decoder_blocks,
        )
        self.eval()

    @property
    def config(self) -> HFRConfig:
        """The model's config: what ``config.json`` holds."""
        return self._config

    @config.setter
    def config(self, config: HFRConfig) -> None:
        changed = [k for k in _NETWORK_FIELDS if getattr(config, k) != getattr(self._config, k)]
        if changed:
            raise ConfigError(f"{changed} are fixed by the network; build a new HFR to change them")
        self._config = config

    @property
    def encoder(self) -> FrozenEncoder:
        """The frozen encoder (``network.encoder``)."""
        return self.network.encoder

    @property
    def decoder(self) -> HierarchicalDecoder:
        """The decoder (``network.decoder``)."""
        return self.network.decoder

    @property
    def terms(self) -> nn.ModuleDict:
        """The fitted scoring terms by name (``scorer.terms``)."""
        return self.scorer.terms

    def term(self, name: str) -> ScoringTerm | None:
        """The fitted term ``name``, or None."""
        return self.scorer.term(name)

    @property
    def device(self) -> torch.device:
        """The device the decoder's weights are on."""
        return self.network.device

    def autocast(self) -> torch.autocast:
        """bf16 autocast on CUDA, a no-op elsewhere: the precision every forward pass uses."""
        return self.network.autocast()

    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features ``[f1, f2, f3]`` of a normalised ``(B, 3, H, W)`` batch."""
        return self.network.encode(images)

    def decode(self, deepest: torch.Tensor) -> list[torch.Tensor]:
        """Decoder reconstructions ``[d1, d2, d3]`` from ``f3``."""
        return self.network.decode(deepest)

    def reconstruct(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Encoder features ``[f1, f2, f3]`` and decoder reconstructions ``[d1, d2, d3]``."""
        return self.network(images)

    def forward(self, images: torch.Tensor) -> anomaly.AnomalyOutput:
        """Anomaly maps at input size and scores for a normalised ``(B, 3, H, W)`` batch."""
        features, reconstructions = self.network(images)
        return self.scorer(features, reconstructions, images, self.config)

    def term_maps(
        self, features: list[torch.Tensor], images: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Deprecated: ``model.scorer.term_maps(features, images, model.config)``."""
        _moved_to_scorer("term_maps")
        return self.scorer.term_maps(features, images, self.config)

    def score_residuals(
        self,
        residuals: list[torch.Tensor],
        size: tuple[int, int],
        terms: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Deprecated: ``model.scorer.score_residuals(residuals, size, model.config, terms)``."""
        _moved_to_scorer("score_residuals")
        return self.scorer.score_residuals(residuals, size, self.config, terms)

    def with_calibration(self, calibration: Calibration) -> HFR:
        """This model with another calibration (threshold and normalisation): a view that
        shares the network and the scorer (changing its modules changes this model's), so that
        several calibrations of one loaded model cost no memory.

        Example:
            >>> strict = model.with_calibration(other_calibration)  # doctest: +SKIP
            >>> strict.predict("part.png")[0].is_anomalous  # doctest: +SKIP
        """
        view = copy.copy(self)
        view.config = self.config.replace(calibration=calibration)
        return view

    def preprocess(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """Read ``images`` and make the normalised batch the encoder expects, on the device."""
        return to_batch(
            [load_rgb(image) for image in images], self.config.preprocessing, self.device
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
            images: one image or a list: paths, bytes, file objects, PIL images, numpy arrays
                or tensors (any mode; see :func:`hfr.images.read_image`). A result's ``notes``
                say when an image was reduced, enlarged more than twice to the input, or only
                its first frame used.
            batch_size: images per forward pass.
            threshold: verdict threshold on the normalised scale; default 0.5, the calibrated one.
            return_level_maps: also return the three per-level residual maps.
            map_size: ``"original"`` (each image's own size) or ``"input"`` (the network's input
                size; with letterbox preprocessing, the image's part of the map stretched to it).

        Example:
            >>> preds = model.predict(["good.png", "broken.png"])  # doctest: +SKIP
            >>> preds[1].is_anomalous, preds[1].anomaly_map.shape  # doctest: +SKIP
            (True, (900, 900))
        """
        self.eval()
        return predict_images(
            self,
            self.config,
            images,
            device=self.device,
            batch_size=batch_size,
            threshold=threshold,
            return_level_maps=return_level_maps,
            map_size=map_size,
        )

    # --- Hub serialisation: decoder (and the added terms' tensors), strict and pickle-free ---

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """The model card (``repo_id=`` names the repo in its usage example)."""
        parameters = sum(p.numel() for p in self.decoder.parameters())
        return cards.model_card(
            self.config, decoder_parameters=parameters, repo_id=kwargs.get("repo_id")
        )

    def _save_pretrained(self, save_directory: Path) -> None:
        state = {f"decoder.{k}": v for k, v in self.decoder.state_dict().items()}
        state.update(self.scorer.state())
        state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        save_file(state, str(save_directory / WEIGHTS_FILE), metadata={"format": "pt"})
        write_config(self.config, save_directory / CONFIG_FILE)

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
        map_location: str | torch.device = "cpu",
        encoder_weights: str | None = None,
    ) -> HFR:
        """Load a model from a local folder, a bundled model (its bare name) or a Hub repo,
        strictly and without pickle.

        Works offline from the cache (``HF_HUB_OFFLINE=1``). ``encoder_weights`` points to the
        encoder's weights file when it is not found automatically. Every failure raises an
        :class:`~hfr.errors.HFRError`: :class:`~hfr.errors.ModelNotFoundError` for a missing
        repo, revision or file, :class:`~hfr.errors.ModelFormatError` for a corrupt one.
        ``config.json`` is read and checked here; the mixin's ``from_pretrained`` then builds
        the model through :meth:`_from_pretrained`.

        Example:
            >>> model = HFR.from_pretrained("hfr-anomaly/hfr-mvtec-bottle")  # doctest: +SKIP
            >>> model = HFR.from_pretrained("models/bottle", map_location="cuda")  # doctest: +SKIP
        """
        source = hub.resolve_model_id(str(pretrained_model_name_or_path))
        offline = not Path(source).is_dir() and not hub.hub_reachable()  # a folder needs no Hub
        options = {
            "revision": revision,
            "cache_dir": cache_dir,
            "force_download": force_download,
            "local_files_only": local_files_only or offline,
            "token": token,
        }
        config = read_config(hub.download(source, CONFIG_FILE, **options))
        if encoder_weights is not None:
            config = config.replace(encoder_weights=encoder_weights)
        return super().from_pretrained(source, **options, config=config, map_location=map_location)

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
        config: HFRConfig,
        map_location: str | torch.device = "cpu",
        **config_fields: Any,
    ) -> HFR:
        """The mixin's loading hook: build the model of the checked ``config`` (the mixin
        passes ``config.json``'s fields as ``config_fields`` too; ``config`` holds them) and
        load its weights strictly."""
        weights_file = hub.download(
            model_id,
            WEIGHTS_FILE,
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
        )
        model = cls(config)
        model.load_decoder_weights(weights_file)
        return model.to(map_location)

    def load_decoder_weights(self, path: str | Path) -> None:
        """Load ``model.safetensors`` strictly: the decoder's names, shapes, dtypes and values,
        and the tensors of each scoring term, required when the scoring weighs it."""
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise ModelFormatError(f"{path} is not a readable safetensors file: {error}") from error
        scorer = Scorer()
        scorer.load_terms(path, state, self.encoder.channels, self.config)
        expected = {f"decoder.{k}": v for k, v in self.decoder.state_dict().items()}
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ModelFormatError(
                f"{path} does not match an HFR decoder for {self.config.encoder!r}: "
                f"missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        for key, tensor in state.items():
            want = expected[key]
            if tensor.shape != want.shape or tensor.dtype != want.dtype:
                raise ModelFormatError(
                    f"{path}: {key} is {tensor.dtype} {tuple(tensor.shape)}, "
                    f"expected {want.dtype} {tuple(want.shape)}"
                )
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise ModelFormatError(f"{path}: {key} holds NaN or infinite values")
        self.decoder.load_state_dict({k.removeprefix("decoder."): v for k, v in state.items()})
        self.scorer = scorer.to(self.device)


def _moved_to_scorer(method: str) -> None:
    warnings.warn(
        f"HFR.{method} moved to HFR.scorer.{method} (which takes the config as well)",
        DeprecationWarning,
        stacklevel=3,
    )
