"""``hfr predict``: score images without ground truth into scores.csv and overlays, in this
process or on Ray (``--ray``); ``--resume`` finishes an interrupted run."""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm.auto import tqdm

from hfr.commands.common import load_model
from hfr.errors import HFRError, ImageLoadError
from hfr.serving.outputs import ResultsWriter, csv_row, prediction_row, unique_names
from hfr.serving.viz import overlay
from hfr.sources import expand_sources, read_source


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    sources = expand_sources(args.inputs)
    if args.ray:
        return _run_on_ray(args, sources)
    model = load_model(args.model, args.device)
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
