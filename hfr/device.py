"""Picking the compute device and the precision training runs in there."""

from __future__ import annotations

import torch


def auto_device(requested: str | None = None) -> torch.device:
    """``requested`` if given, else CUDA, then Apple MPS, then CPU."""
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bf16 matrices in hardware: CUDA, or a CPU with AMX or
    AVX512-BF16 (where oneDNN's bf16 convolutions beat fp32; elsewhere they are emulated)."""
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def training_precision(requested: str, device: torch.device) -> str:
    """``requested`` (``"bf16"`` or ``"fp32"``), or for ``"auto"`` bf16 where ``device`` has
    it natively (:func:`native_bf16`) and fp32 elsewhere.

    Example:
        >>> training_precision("auto", torch.device("mps"))
        'fp32'
    """
    if requested != "auto":
        return requested
    return "bf16" if native_bf16(device) else "fp32"


def scoring_precision(device: torch.device) -> str:
    """The precision of every forward pass of a model on ``device``: bf16 on CUDA, fp32
    elsewhere. Training's steps ran in it too before 0.18, through the same forward pass."""
    return "bf16" if device.type == "cuda" else "fp32"


def precision_autocast(device: torch.device, precision: str) -> torch.autocast:
    """The autocast context of ``precision`` (``"bf16"`` or ``"fp32"``) on ``device``: in bf16,
    activations in bf16 (convolutions, BatchNorm, LeakyReLU); weights, BatchNorm's running
    statistics and what is computed after the forward pass (residuals, loss) in fp32."""
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16"
    )
