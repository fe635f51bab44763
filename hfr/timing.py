"""Timing the pipeline's pieces: encoder, decoder, maps (residuals, resize, smoothing, score)."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from hfr.model import HFR
from hfr.scoring import maps as anomaly


@dataclass
class Timing:
    """Milliseconds per image for each piece, and the peak memory seen."""

    encoder: str
    device: str
    batch_size: int
    image_size: int
    encoder_ms_per_image: float
    decoder_ms_per_image: float
    maps_ms_per_image: float
    full_ms_per_image: float
    full_over_encoder: float
    maps_share_of_full: float
    peak_memory_mb: float
    images_per_second: float
    decoder_width: int | None = None
    decoder_blocks: str = "dense"
    onnxruntime_ms_per_image: float | None = None
    onnxruntime_over_encoder: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(
    step: Callable[[], object], device: torch.device, *, warmup: int = 2, repeats: int = 5
) -> float:
    """Median wall time of ``step`` after ``warmup`` calls."""
    return interleaved_medians({"step": step}, device, warmup=warmup, repeats=repeats)["step"]


def interleaved_medians(
    steps: dict[str, Callable[[], object]],
    device: torch.device,
    *,
    warmup: int = 2,
    repeats: int = 5,
) -> dict[str, float]:
    """Median wall time of each step, timed round by round (A, B, C, A, B, C, ...).

    Interleaving exposes every step to the same background load, so ratios stay meaningful on
    a shared machine.
    """
    for _ in range(warmup):
        for step in steps.values():
            step()
    _synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            began = time.perf_counter()
            step()
            _synchronize(device)
            times[name].append(time.perf_counter() - began)
    return {name: sorted(values)[len(values) // 2] for name, values in times.items()}


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: peak allocated by torch since the last reset. CPU: the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@torch.inference_mode()
def time_pipeline(
    model: HFR,
    batch_size: int,
    *,
    repeats: int = 5,
    warmup: int = 2,
    onnx_session: Any = None,
) -> Timing:
    """Time encoder-only, decoder, maps and the full forward on one random batch, and the
    full pipeline exported to ``onnx_session`` (an ONNX Runtime session) when given."""
    device = model.device
    size = model.config.preprocessing.input_size
    images = torch.randn(batch_size, 3, *size, device=device)
    if next(model.encoder.parameters()).is_contiguous(memory_format=torch.channels_last):
        images = images.contiguous(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    features, reconstructions = model.reconstruct(images)

    def maps() -> torch.Tensor:
        residuals = anomaly.residual_maps(features, reconstructions)
        terms = model.scorer.term_maps(features, images, model.config)
        return model.scorer.score_residuals(residuals, size, model.config, terms)[1]

    steps = {
        "encoder": lambda: model.encode(images),
        "decoder": lambda: model.decode(features[-1]),
        "maps": maps,
        "full": lambda: model(images),
    }
    if onnx_session is not None:
        feed = {"images": images.cpu().numpy()}
        steps["onnxruntime"] = lambda: onnx_session.run(None, feed)
    seconds = interleaved_medians(steps, device, warmup=warmup, repeats=repeats)
    per_image = {k: 1000 * v / batch_size for k, v in seconds.items()}
    return Timing(
        encoder=model.config.encoder,
        device=str(device),
        batch_size=batch_size,
        image_size=size[0],
        encoder_ms_per_image=per_image["encoder"],
        decoder_ms_per_image=per_image["decoder"],
        maps_ms_per_image=per_image["maps"],
        full_ms_per_image=per_image["full"],
        full_over_encoder=seconds["full"] / seconds["encoder"],
        maps_share_of_full=seconds["maps"] / seconds["full"],
        peak_memory_mb=peak_memory_mb(device),
        images_per_second=batch_size / seconds["full"],
        decoder_width=model.config.decoder_width,
        decoder_blocks=model.config.decoder_blocks,
        onnxruntime_ms_per_image=per_image.get("onnxruntime"),
        onnxruntime_over_encoder=(
            seconds["onnxruntime"] / seconds["encoder"] if onnx_session is not None else None
        ),
    )
