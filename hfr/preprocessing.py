"""Preprocessing that travels with the weights, as timm's ``pretrained_cfg``: size, resize, norm."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import timm
import torch
from torch.nn import functional as F

from hfr.errors import ModelFormatError

INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB uint8 image becomes the encoder's input tensor.

    The whole image is resized to ``input_size`` (no crop: a defect may sit at the border).
    """

    input_size: tuple[int, int] = (256, 256)
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        size = tuple(int(s) for s in self.input_size)
        if len(size) != 2 or min(size) < 32 or any(s % 16 for s in size):
            raise ModelFormatError(
                f"input_size {self.input_size} must be two multiples of 16, each at least 32"
            )
        if self.interpolation not in INTERPOLATIONS:
            raise ModelFormatError(f"interpolation {self.interpolation!r} not in {INTERPOLATIONS}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ModelFormatError(f"mean {self.mean} / std {self.std} must be 3 values, std > 0")
        object.__setattr__(self, "input_size", size)
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    @classmethod
    def for_encoder(cls, encoder: str, input_size: int | Sequence[int]) -> Preprocessing:
        """Defaults from timm's pretrained config of ``encoder`` (mean, std, interpolation)."""
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        try:
            cfg = timm.models.get_pretrained_cfg(encoder)
        except (RuntimeError, KeyError):
            cfg = None
        if cfg is None:
            return cls(input_size=size)
        interpolation = cfg.interpolation if cfg.interpolation in INTERPOLATIONS else "bilinear"
        return cls(input_size=size, interpolation=interpolation, mean=cfg.mean, std=cfg.std)

    def to_dict(self) -> dict:
        """JSON-ready form for ``config.json``."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def __call__(self, images: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
        """Stack RGB uint8 arrays into a normalised ``(B, 3, H, W)`` float batch on ``device``.

        Images of one size are resized together in one call.
        """
        batch = torch.empty((len(images), 3, *self.input_size), device=device)
        for indices, group in _group_by_shape(images):
            pixels = torch.from_numpy(np.stack(group)).to(device).permute(0, 3, 1, 2).float()
            batch[indices] = self._resize(pixels / 255.0)
        mean = torch.tensor(self.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=device).view(1, 3, 1, 1)
        return (batch - mean) / std

    def _resize(self, pixels: torch.Tensor) -> torch.Tensor:
        if tuple(pixels.shape[-2:]) == self.input_size:
            return pixels
        if self.interpolation == "nearest":
            return F.interpolate(pixels, size=self.input_size, mode="nearest")
        resized = F.interpolate(
            pixels,
            size=self.input_size,
            mode=self.interpolation,
            antialias=True,
            align_corners=False,
        )
        return resized.clamp_(0.0, 1.0)


def _group_by_shape(images: Sequence[np.ndarray]) -> list[tuple[list[int], list[np.ndarray]]]:
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(images):
        groups.setdefault(image.shape, []).append(index)
    return [(indices, [images[i] for i in indices]) for indices in groups.values()]
