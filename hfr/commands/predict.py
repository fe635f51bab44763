"""``hfr predict``: score images without ground truth into scores.csv and overlays."""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm.auto import tqdm

from hfr.commands.common import load_model
from hfr.errors import HFRError, ImageLoadError
from hfr.images import list_images, read_image
from hfr.outputs import ResultsWriter, unique_names
from hfr.viz import overlay


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files as given, folders as the images directly inside them; each file once."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        paths.extend(list_images(path) if path.is_dir() else [path])
    return list(dict.fromkeys(paths))


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    model = load_model(args.model, args.device)
    if model.config.calibration is None:
        raise HFRError(f"{args.model} is not calibrated: train it with `hfr train` first")
    paths = expand_inputs(args.inputs)
    names = dict(zip(paths, unique_names(paths), strict=True))
    scored = flagged = failed = 0
    with ResultsWriter(args.output, overwrite=args.overwrite) as writer:
        for start in tqdm(range(0, len(paths), args.batch_size), desc="predict", unit="batch"):
            chunk, images = [], []
            for path in paths[start : start + args.batch_size]:
                try:
                    images.append(read_image(path))
                    chunk.append(path)
                except ImageLoadError as error:
                    failed += 1
                    writer.write({"image": str(path), "error": str(error)})
            if not images:
                continue
            predictions = model.predict(
                [image.pixels for image in images],
                batch_size=args.batch_size,
                threshold=args.threshold,
            )
            for path, loaded, prediction in zip(chunk, images, predictions, strict=True):
                picture = None
                if not args.no_overlays:
                    picture = overlay(
                        loaded.pixels,
                        prediction.normalized_map,
                        opacity=args.opacity,
                        threshold=prediction.threshold,
                    )
                row = {
                    "image": str(path),
                    "score": f"{prediction.score:.6f}",
                    "normalized_score": f"{prediction.normalized_score:.6f}",
                    "is_anomalous": prediction.is_anomalous,
                    "threshold": prediction.threshold,
                    "notes": "; ".join(loaded.notes),
                }
                writer.write(row, picture, names[path])
                scored += 1
                flagged += bool(prediction.is_anomalous)
    print(
        f"{scored} images scored, {flagged} anomalous, {failed} unreadable; "
        f"results in {Path(args.output) / 'scores.csv'}"
    )
    return 0
