"""The synthetic large-defect check: can a model's map find smooth defects that cover 10-30 %
of a normal image?

python research/synthetic_defects.py --model MODEL_DIR \
    --images ../shared/datasets/mvtec_ad/screw/test/good \
    --output research/results/synthetic/screw.json

Each normal image gets one seeded defect: a soft-edged ellipse covering 10-30 % of the image
inside which the image is changed smoothly (brighter, darker, or its texture blurred away),
with the ellipse as the ground-truth mask. Reports the pixel AUROC of the model's maps on the
defective copies and the image AUROC of their scores against the untouched originals. A
benchmark on held-out normal images: it never uses test defects.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from hfr import HFR, metrics
from hfr.images import list_images, load_rgb
from hfr.serving.outputs import write_json

CHANGES = ("brighter", "darker", "blurred")


def ellipse_mask(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random ellipse covering 10-30 % of an image of ``shape`` (H, W), fully inside it."""
    height, width = shape
    area = rng.uniform(0.10, 0.30) * height * width
    aspect = rng.uniform(0.5, 2.0)
    semi_y = min(np.sqrt(area / (np.pi * aspect)), 0.48 * height)
    semi_x = min(area / (np.pi * semi_y), 0.48 * width)
    center_y = rng.uniform(semi_y, height - semi_y)
    center_x = rng.uniform(semi_x, width - semi_x)
    rows, cols = np.mgrid[0:height, 0:width]
    return ((rows - center_y) / semi_y) ** 2 + ((cols - center_x) / semi_x) ** 2 <= 1.0


def with_defect(image: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """``image`` with one smooth large defect, its mask, and the kind of change."""
    rng = np.random.default_rng(seed)
    mask = ellipse_mask(image.shape[:2], rng)
    change = CHANGES[seed % len(CHANGES)]
    side = max(image.shape[:2])
    if change == "blurred":
        changed = np.asarray(
            Image.fromarray(image).filter(ImageFilter.GaussianBlur(side / 60)), dtype=np.float32
        )
    else:
        factor = rng.uniform(1.25, 1.45) if change == "brighter" else rng.uniform(0.55, 0.75)
        changed = image.astype(np.float32) * factor
    edge = Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.GaussianBlur(side / 80))
    alpha = (np.asarray(edge, dtype=np.float32) / 255.0)[..., None]
    blended = image.astype(np.float32) * (1 - alpha) + changed * alpha
    return np.clip(blended, 0, 255).round().astype(np.uint8), mask, change


def synthetic_check(model: HFR, originals: list[np.ndarray], seed: int = 0) -> dict:
    """Give each normal image in ``originals`` one seeded defect (:func:`with_defect`) and
    measure ``model`` on them: the pixel AUROC of its maps, overall and per change, the mean
    mask fraction, and the image AUROC of the defective copies against the originals."""
    size = model.config.preprocessing.input_size
    defective, masks, changes = [], [], []
    for index, image in enumerate(originals):
        changed, mask, change = with_defect(image, seed * 10_000 + index)
        defective.append(changed)
        resized = Image.fromarray(mask).resize((size[1], size[0]), Image.Resampling.NEAREST)
        masks.append(np.asarray(resized))
        changes.append(change)
    predictions = model.predict(defective, map_size="input")
    normal_scores = [p.score for p in model.predict(originals, map_size="input")]
    maps = np.stack([p.anomaly_map for p in predictions])
    masks = np.stack(masks)
    scores = np.r_[normal_scores, [p.score for p in predictions]]
    labels = np.r_[np.zeros(len(originals)), np.ones(len(defective))]
    per_change = {
        change: metrics.pixel_auroc(masks[picked], maps[picked])
        for change in CHANGES
        for picked in [np.array([c == change for c in changes])]
        if picked.any()
    }
    return {
        "mean_mask_fraction": float(masks.mean()),
        "pixel_auroc": metrics.pixel_auroc(masks, maps),
        "pixel_auroc_per_change": per_change,
        "image_auroc": metrics.image_auroc(labels, scores),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--images", required=True, help="a folder of normal images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    model = HFR.from_pretrained(args.model)
    originals = [load_rgb(path) for path in list_images(Path(args.images))]
    record = {
        "model": args.model,
        "encoder": model.config.encoder,
        "scoring": model.config.scoring.to_dict(),
        "images": args.images,
        "num_images": len(originals),
        "defect_area_fraction": [0.10, 0.30],
        **synthetic_check(model, originals, args.seed),
        "command": shlex.join(["python", *sys.argv]),
    }
    print(write_json(args.output, record), end="")


if __name__ == "__main__":
    main()
