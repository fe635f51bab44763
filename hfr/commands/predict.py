"""``hfr predict``: score images without ground truth into scores.csv and overlays, in this
process or on Ray (``--ray``); ``--resume`` finishes an interrupted run."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from hfr.commands.common import load_model
from hfr.errors import HFRError, ImageLoadError
from hfr.serving.outputs import (
    ResultsWriter,
    check_output,
    csv_row,
    prediction_row,
    unique_names,
)
from hfr.serving.viz import overlay
from hfr.sources import expand_sources, read_source

if TYPE_CHECKING:
    from hfr.onnx_runtime import OnnxModel

logger = logging.getLogger(__name__)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    sources = expand_sources(args.inputs)
    check_output(args.output, overwrite=args.overwrite, resume=args.resume)  # before any load
    onnx_file = args.model.endswith(".onnx")
    if onnx_file and args.backend != "onnxruntime":
        parser.error("an .onnx model runs with --backend onnxruntime")
    if args.ray:
        if args.backend != "torch":
            parser.error("--ray runs the PyTorch model: leave --backend at torch")
        return _run_on_ray(args, sources)
    model = (
        _onnx_model(args) if args.backend == "onnxruntime" else load_model(args.model, args.device)
    )
    if model.config.calibration is None:
        raise HFRError(f"{args.model} is not calibrated: train it with `hfr train` first")
    names = dict(zip(sources, unique_names([Path(s) for s in sources]), strict=True))
    scored = flagged = failed = 0
    with ResultsWriter(args.output, overwrite=args.overwrite, resume=args.resume) as writer:
        todo = [s for s in sources if s not in writer.done]
        for start in tqdm(range(0, len(todo), args.batch_size), desc="predict", unit="batch"):
            chunk, images = [], []
            for source in todo[start : start + args.batch_size]:
                try:
                    images.append(read_source(source))
                    chunk.append(source)
                except ImageLoadError as error:
                    failed += 1
                    writer.write({"image": source, "error": str(error)})
            if not images:
                continue
            predictions = model.predict(
                [image.pixels for image in images],
                batch_size=args.batch_size,
                threshold=args.threshold,
            )
            for source, loaded, prediction in zip(chunk, images, predictions, strict=True):
                picture = None
                if not args.no_overlays:
                    picture = overlay(
                        loaded.pixels,
                        prediction.normalized_map,
                        opacity=args.opacity,
                        threshold=prediction.threshold,
                    )
                row = {"image": source, **prediction_row(prediction)}
                row["notes"] = "; ".join((*loaded.notes, *prediction.notes))
                writer.write(csv_row(row), picture, names[source])
                scored += 1
                flagged += bool(prediction.is_anomalous)
    _summary(scored, flagged, failed, len(sources) - len(todo), args.output)
    return 0


def _onnx_model(args: argparse.Namespace) -> OnnxModel:
    """``--model`` as an ONNX Runtime model: the .onnx file itself, or the model exported to
    ``OUTPUT/model.onnx`` first (checked against PyTorch, as ``hfr export`` checks it)."""
    from hfr.onnx_runtime import OnnxModel

    if args.model.endswith(".onnx"):
        return OnnxModel(args.model)
    from hfr.export import export_onnx, max_onnx_difference

    model = load_model(args.model, "cpu")
    path = Path(args.output, "model.onnx")
    path.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(model, path)
    difference = max_onnx_difference(model, path)
    logger.info(
        "exported to %s; max |onnx - torch| of the scores: %.2e", path, difference["scores"]
    )
    return OnnxModel(path)


def _run_on_ray(args: argparse.Namespace, sources: list[str]) -> int:
    from hfr.scale.predict import RayPredictOptions, predict_on_ray

    options = RayPredictOptions(
        address=args.ray,
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker,
        batch_size=args.batch_size,
        threshold=args.threshold,
        opacity=args.opacity,
        overlays=not args.no_overlays,
    )
    count = predict_on_ray(
        args.model, sources, args.output, options, resume=args.resume, overwrite=args.overwrite
    )
    _summary(count.scored, count.flagged, count.failed, count.skipped, args.output)
    return 0


def _summary(scored: int, flagged: int, failed: int, skipped: int, output: str) -> None:
    done_before = f", {skipped} done before" if skipped else ""
    print(
        f"{scored} images scored, {flagged} anomalous, {failed} unreadable{done_before}; "
        f"results in {Path(output) / 'scores.csv'}"
    )
