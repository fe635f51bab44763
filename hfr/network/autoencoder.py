"""The network of one model: the frozen encoder and the decoder that rebuilds its features."""

from __future__ import annotations

import torch
from torch import nn

from hfr.config import AUTO, MAX_DENSE_DECODER_SHARE
from hfr.device import precision_autocast, scoring_precision
from hfr.errors import EncoderWeightsError
from hfr.network.decoder import HierarchicalDecoder
from hfr.network.encoder import FrozenEncoder, build_encoder

# The blocks "auto" chose, by encoder name, feature location, decoder and width: the choice
# depends on the network's shapes only, so each is counted once per process.
_CHOSEN_BLOCKS: dict[tuple[str, str, bool, int | None], str] = {}


class FeatureAutoencoder(nn.Module):
    """The frozen encoder (features ``[f1, f2, f3]`` at strides 4, 8, 16) and the decoder that
    rebuilds all three from ``f3``; every pass runs in the scoring precision of its device.

    Args:
        encoder: a timm model name.
        encoder_weights: ``None`` for timm's weights from the Hub, ``"random"``, or a file.
        feature_location: where each stage's features are taken (``"stage"``, ``"expansion"``).
        decoder: ``"context"`` or ``"paper"``.
        decoder_width: the most channels in a decoder block, or ``None`` for each block as
            wide as the features it decodes.
        decoder_blocks: ``"dense"`` or ``"separable"`` spatial convolutions in the decoder, or
            ``"auto"`` for :func:`chosen_decoder_blocks` (then in ``self.decoder_blocks``).
        fingerprint: the fingerprint the encoder's weights must have (the one the decoder was
            trained on), or ``None`` for any.

    Example:
        >>> net = FeatureAutoencoder("resnet18", "random", feature_location="stage",
        ...                          decoder="context", decoder_width=64,
        ...                          decoder_blocks="separable")
        >>> features, reconstructions = net(torch.zeros(1, 3, 64, 64))
        >>> [tuple(f.shape[1:]) for f in reconstructions]
        [(64, 16, 16), (128, 8, 8), (256, 4, 4)]
    """

    def __init__(
        self,
        encoder: str,
        encoder_weights: str | None,
        *,
        feature_location: str,
        decoder: str,
        decoder_width: int | None,
        decoder_blocks: str,
        fingerprint: str | None = None,
    ) -> None:
        super().__init__()
        self.encoder: FrozenEncoder
        self.encoder, self.fingerprint = build_encoder(
            encoder, encoder_weights, feature_location=feature_location
        )
        if fingerprint is not None and fingerprint != self.fingerprint:
            raise EncoderWeightsError(
                f"the encoder weights {encoder_weights or 'from the Hub'!r} of {encoder!r} have "
                f"fingerprint {self.fingerprint}, but this decoder was trained on weights with "
                f"fingerprint {fingerprint}; load the weights file it was trained with"
            )
        context = decoder == "context"
        if decoder_blocks == AUTO:
            key = (encoder, feature_location, context, decoder_width)
            if key not in _CHOSEN_BLOCKS:
                _CHOSEN_BLOCKS[key] = chosen_decoder_blocks(
                    self.encoder, context=context, width=decoder_width
                )
            decoder_blocks = _CHOSEN_BLOCKS[key]
        self.decoder_blocks = decoder_blocks
        self.decoder = HierarchicalDecoder(
            self.encoder.channels,
            context=context,
            width=decoder_width,
            separable=decoder_blocks == "separable",
        )

    @property
    def device(self) -> torch.device:
        """The device the decoder's weights are on."""
        return next(self.decoder.parameters()).device

    def autocast(self) -> torch.autocast:
        """bf16 autocast on CUDA, a no-op elsewhere: the precision every forward pass uses."""
        return precision_autocast(self.device, scoring_precision(self.device))

    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features ``[f1, f2, f3]`` of a normalised ``(B, 3, H, W)`` batch."""
        with self.autocast():
            return self.encoder(images)

    def decode(self, deepest: torch.Tensor) -> list[torch.Tensor]:
        """Decoder reconstructions ``[d1, d2, d3]`` from ``f3``, decoded channels-last (the
        same values; the decoder's convolutions are 10-15 % faster so on CPU)."""
        with self.autocast():
            return self.decoder(deepest.contiguous(memory_format=torch.channels_last))

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Encoder features ``[f1, f2, f3]`` and decoder reconstructions ``[d1, d2, d3]``."""
        features = self.encode(images)
        return features, self.decode(features[-1])


def dense_decoder_share(encoder: FrozenEncoder, *, context: bool, width: int | None) -> float:
    """The FLOPs of a dense decoder over those of ``encoder`` (counted on a 64x64 input: both grow
    with the pixels alike). The decoder is counted on the meta device: nothing is allocated and
    no random number drawn, so the model built after it is the same.

    Example:
        >>> encoder, _ = build_encoder("resnet18", "random")
        >>> round(dense_decoder_share(encoder, context=True, width=None), 2)
        0.66
    """
    from torch.utils.flop_counter import FlopCounterMode

    parameter = next(encoder.parameters())
    images = torch.zeros(1, 3, 64, 64, dtype=parameter.dtype, device=parameter.device)
    with FlopCounterMode(display=False) as counter:
        deepest = encoder(images)[-1]
    encoder_flops = counter.get_total_flops()
    with torch.device("meta"):
        decoder = HierarchicalDecoder(encoder.channels, context=context, width=width).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            decoder(torch.empty(deepest.shape))
    return counter.get_total_flops() / encoder_flops


def chosen_decoder_blocks(encoder: FrozenEncoder, *, context: bool, width: int | None) -> str:
    """``"dense"`` blocks where a dense decoder costs at most ``MAX_DENSE_DECODER_SHARE`` of the
    encoder's FLOPs, else ``"separable"`` ones (the decoder blocks ``"auto"`` chooses)."""
    share = dense_decoder_share(encoder, context=context, width=width)
    return "dense" if share <= MAX_DENSE_DECODER_SHARE else "separable"
