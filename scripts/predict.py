"""Score images without ground truth: a CSV of scores and verdicts plus heat-map overlays.

python scripts/predict.py --model MODEL_DIR_OR_REPO IMAGE_OR_FOLDER [...] --output predictions/
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from _common import load_model
from hfr.errors import ImageLoadError
from hfr.images import list_images, load_rgb
from hfr.viz import overlay


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files as given, folders as the images directly inside them."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        paths.extend(list_images(path) if path.is_dir() else [path])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="model folder or Hub repo id")
    parser.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    parser.add_argument("--output", required=True, help="folder for scores.csv and overlays")
    parser.add_argument(
        "--threshold", type=float, default=None, help="on the normalised scale (default 0.5)"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--opacity", type=float, default=0.5)
    parser.add_argument("--no-overlays", action="store_true")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    model = load_model(args.model, args.device)
    if model.calibration is None:
        parser.error(f"{args.model} is not calibrated: train it with scripts/train.py first")
    paths = expand_inputs(args.inputs)
    output = Path(args.output)
    (output / "overlays").mkdir(parents=True, exist_ok=True)
    rows, failures = [], 0
    for start in tqdm(range(0, len(paths), args.batch_size), desc="predict", unit="batch"):
        chunk, images = [], []
        for path in paths[start : start + args.batch_size]:
            try:
                images.append(load_rgb(path))
                chunk.append(path)
            except ImageLoadError as error:
                failures += 1
                rows.append({"image": str(path), "error": str(error)})
        if not images:
            continue
        predictions = model.predict(images, batch_size=args.batch_size, threshold=args.threshold)
        for path, image, prediction in zip(chunk, images, predictions, strict=True):
            rows.append(
                {
                    "image": str(path),
                    "score": f"{prediction.score:.6f}",
                    "normalized_score": f"{prediction.normalized_score:.6f}",
                    "is_anomalous": prediction.is_anomalous,
                    "threshold": prediction.threshold,
                }
            )
            if not args.no_overlays:
                picture = overlay(
                    image,
                    prediction.normalized_map,
                    opacity=args.opacity,
                    threshold=prediction.threshold,
                )
                Image.fromarray(picture).save(
                    output / "overlays" / f"{path.parent.name}_{path.stem}_overlay.png"
                )
    fields = ["image", "score", "normalized_score", "is_anomalous", "threshold", "error"]
    with open(output / "scores.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    flagged = sum(1 for r in rows if r.get("is_anomalous") is True)
    print(
        f"{len(rows) - failures} images scored, {flagged} anomalous, {failures} unreadable; "
        f"results in {output / 'scores.csv'}"
    )


if __name__ == "__main__":
    main()
