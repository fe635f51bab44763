"""``hfr benchmark``: encoder-only forward against the full HFR pipeline, and its pieces.

    hfr benchmark --device cpu --encoders mobilenetv2_100,resnet18 --batch-size 16 \
        --output bench.json

Random-init encoders (timing does not depend on the weight values); each scoring term weighed
(``--<term>-weight``) is fitted to random features and images, for the same reason, as many
of them as the term keeps of bottle's training images (:func:`add_random_terms`). Each encoder
runs in its own process, so on CPU ``peak_memory_mb`` is that process's peak RSS (torch itself
included); on CUDA it is torch's peak allocation. Training time per epoch uses cached features,
as training does, in the default precision (``train_precision``) and, when that is not fp32, in
fp32 as well.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from hfr.config import AUTO, DEFAULT_MEMORY_FRACTION, TERMS, TrainConfig
from hfr.device import training_precision
from hfr.model import HFR
from hfr.scoring.terms import TrainingEvidence, term_type
from hfr.serving.outputs import write_json
from hfr.timing import median_seconds, time_pipeline
from hfr.train import training_layout, training_step

logger = logging.getLogger(__name__)

BOTTLE_TRAIN_IMAGES = 188  # MVTec AD bottle's 209 normal images minus the calibration split


def training_seconds_per_epoch(model: HFR, batch_size: int, images: int, precision: str) -> float:
    """One epoch of decoder training on cached features of ``images`` images, with the default
    loss, in ``precision`` (``"bf16"`` or ``"fp32"``; :func:`hfr.train.training_step`)."""
    device = model.device
    training = TrainConfig(precision=precision)
    size = model.config.preprocessing.input_size
    with torch.inference_mode():
        features = model.encoder(torch.randn(2, 3, *size, device=device))
    shapes = [f.shape[1:] for f in features]
    optimizer = torch.optim.SGD(model.decoder.parameters(), lr=0.01, momentum=0.9)
    batches = [
        [torch.randn(batch_size, *shape, device=device) for shape in shapes]
        for _ in range(max(1, images // batch_size))
    ]
    model.decoder.train()

    def epoch() -> None:
        for batch in batches:
            training_step(model, optimizer, batch, training)

    with training_layout(model.decoder):
        seconds = median_seconds(epoch, device, warmup=1, repeats=3)
    model.decoder.eval()
    return seconds * images / (len(batches) * batch_size)


def gflops_per_image(model: HFR) -> tuple[float, float]:
    """Encoder and decoder GFLOPs for one image (torch's FLOP counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    images = torch.randn(1, 3, *model.config.preprocessing.input_size, device=model.device)
    with torch.inference_mode():
        with FlopCounterMode(display=False) as counter:
            features = model.encoder(images)
        encoder_flops = counter.get_total_flops()
        with FlopCounterMode(display=False) as counter:
            model.decoder(features[-1])
    return encoder_flops / 1e9, counter.get_total_flops() / 1e9


def benchmark_encoder(encoder: str, args: argparse.Namespace) -> list[dict]:
    """All batch sizes for one encoder at ``args.image_size`` (run in a child process)."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    weights = {f"{name}_weight": getattr(args, f"{name}_weight") for name in TERMS}
    model = HFR(
        encoder=encoder,
        encoder_weights="random",
        input_size=args.image_size,
        decoder_width=args.decoder_width,
        decoder_blocks=args.decoder_blocks,
        memory_context=args.memory_context,
        **weights,
    ).to(device)
    add_random_terms(model, search_dims=args.memory_search_dims)
    session = onnx_session(model, args.threads) if args.onnxruntime else None
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if args.compile:
        model.forward = torch.compile(model.forward)
    records, memory = [], model.term("memory")
    for batch_size in args.batch_sizes:
        timing = time_pipeline(model, batch_size, repeats=args.repeats, onnx_session=session)
        records.append(
            {
                **timing.to_dict(),
                "threads": args.threads,
                "channels_last": args.channels_last,
                "compiled": args.compile,
                **weights,
                "memory_context": args.memory_context,
                "memory_search_dims": memory.search_dims if memory is not None else None,
                "memory_vector_dims": memory.bank.shape[1] if memory is not None else None,
                "autocast": "bf16" if device.type == "cuda" else "off",
            }
        )
        logger.info("%s", json.dumps(records[-1]))
    precision = training_precision(TrainConfig().precision, device)
    epoch_seconds = {
        name: training_seconds_per_epoch(model, 16, BOTTLE_TRAIN_IMAGES, name)
        for name in dict.fromkeys((precision, "fp32"))
    }
    encoder_gflops, decoder_gflops = gflops_per_image(model)
    height, width = model.config.preprocessing.input_size
    for record in records:
        record["input"] = f"{width}x{height}"
        record["train_seconds_per_epoch"] = epoch_seconds[precision]
        record["train_seconds_per_epoch_by_precision"] = epoch_seconds
        record["train_epoch_images"] = BOTTLE_TRAIN_IMAGES
        record["train_precision"] = precision
        record["encoder_gflops_per_image"] = round(encoder_gflops, 3)
        record["decoder_gflops_per_image"] = round(decoder_gflops, 3)
    return records


def onnx_session(model: HFR, threads: int) -> Any:
    """An ONNX Runtime session of ``model`` exported to ONNX, on ``threads`` CPU threads."""
    from hfr.export import export_onnx
    from hfr.onnx_runtime import OnnxModel

    with tempfile.TemporaryDirectory() as folder:
        return OnnxModel(export_onnx(model, Path(folder, "model.onnx")), threads=threads).session


def add_random_terms(model: HFR, *, search_dims: int | str = AUTO) -> None:
    """Fit each term the scoring weighs to random evidence, with a scale of 1: what the term
    costs, not what it finds. The features are those of as many images as the patch memory's
    default coreset keeps of bottle's training images, all kept (``memory_fraction`` 1): a
    memory of that size without the coreset search, searched in ``search_dims`` directions
    (``TrainConfig.memory_search_dims``); the images, two."""
    height, width = model.config.preprocessing.input_size
    count = math.ceil(DEFAULT_MEMORY_FRACTION * BOTTLE_TRAIN_IMAGES)
    strides, device = (4, 8, 16), model.device
    features = [
        torch.randn(count, channels, height // stride, width // stride, device=device)
        for channels, stride in zip(model.encoder.channels, strides, strict=True)
    ]
    evidence = TrainingEvidence(
        features=lambda: iter([features]),
        images=lambda: iter([torch.randn(2, 3, height, width, device=device)]),
        colours=None,
        count=count,
        training=TrainConfig(memory_fraction=1.0, memory_search_dims=search_dims),
    )
    scoring = model.config.scoring
    for name in TERMS:
        if getattr(scoring, f"{name}_weight") > 0:
            model.terms[name] = term_type(name).fit(evidence, scoring).to(device)
            scoring = replace(scoring, **{f"{name}_scale": 1.0})
    model.config = model.config.replace(scoring=scoring)


def machine(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    name = platform.processor() or platform.machine()
    for line in (
        Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    ):
        if line.startswith("model name"):
            name = line.split(":", 1)[1].strip()
            break
    return name


def markdown(records: list[dict], command: str, device: str) -> str:
    onnx = any(r.get("onnxruntime_ms_per_image") is not None for r in records)
    lines = [
        "| encoder | input | decoder width, blocks | memory searched in | batch | encoder ms/img | "
        "decoder ms/img | "
        "maps ms/img | full ms/img | full / encoder | "
        + ("ONNX Runtime ms/img | ONNX Runtime / encoder | " if onnx else "")
        + "img/s | peak MB | train s/epoch (188 img) | decoder / encoder GFLOPs |",
        "|---" * 10 + "|" + ("---|---|" if onnx else "") + "---|---|---|---|",
    ]
    for r in records:
        ort = (
            f"{r['onnxruntime_ms_per_image']:.2f} | {r['onnxruntime_over_encoder']:.2f} | "
            if onnx
            else ""
        )
        lines.append(
            f"| {r['encoder']} | {r['input']} | {r['decoder_width'] or 'full'}, "
            f"{r['decoder_blocks']} | {searched(r)} | "
            f"{r['batch_size']} | {r['encoder_ms_per_image']:.2f} | "
            f"{r['decoder_ms_per_image']:.2f} | {r['maps_ms_per_image']:.2f} | "
            f"{r['full_ms_per_image']:.2f} | {r['full_over_encoder']:.2f} | {ort}"
            f"{r['images_per_second']:.1f} | {r['peak_memory_mb']:.0f} | "
            f"{r['train_seconds_per_epoch']:.2f} ({r['train_precision']}) | "
            f"{r['decoder_gflops_per_image']:.2f} / {r['encoder_gflops_per_image']:.2f} |"
        )
    threads = records[0]["threads"] if records else "?"
    header = (
        f"Machine: {machine(device)}, {threads} threads, torch {torch.__version__}."
        f"\n\nCommand:\n\n```\n{command}\n```\n\n"
    )
    return header + "\n".join(lines) + "\n"


def searched(record: dict) -> str:
    """The memory's search in a record: ``"128 of 384"`` numbers per vector, ``"-"`` without one."""
    dims = record.get("memory_search_dims")
    return "-" if dims is None else f"{dims} of {record['memory_vector_dims']}"


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    args.batch_sizes = [int(b) for b in args.batch_size.split(",")]
    began = time.perf_counter()
    records: list[dict] = []
    context = multiprocessing.get_context("spawn")
    for encoder in args.encoders.split(","):
        for size in args.image_size:
            logger.info("benchmarking %s at %s", encoder, size)
            at_size = argparse.Namespace(**{**vars(args), "image_size": size})
            with context.Pool(1) as pool:
                records += pool.apply(benchmark_encoder, (encoder, at_size))
    write_json(args.output, records)
    if args.markdown:
        Path(args.markdown).write_text(markdown(records, args.command_line, args.device))
    print(f"{len(records)} records in {time.perf_counter() - began:.0f} s -> {args.output}")
    return 0
