"""Non-square copies of an MVTec-layout category, to measure how non-square images are fitted.

python research/aspect_crop.py --data ../shared/datasets/mvtec_ad --category bottle \
    --aspect 0.75 --output /tmp/aspect_4x3

Every image and mask is cropped about its centre to ``--aspect`` (height / width; 0.75 is a 4:3
landscape camera), or with ``--aspect mixed`` to a seeded aspect per image between 0.6 and 1/0.6
(landscape and portrait, the longer side kept whole). A defective test image is kept only if its
crop keeps at least ``--min-defect`` of the mask's defect pixels, so that no image is labelled
defective without its defect. The copy is data: write it outside the repository (MVTec AD is
CC BY-NC-SA). Prints what it wrote as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from hfr.data import GOOD, load_mvtec

MIXED_RANGE = (0.6, 1 / 0.6)


def crop_box(size: tuple[int, int], aspect: float) -> tuple[int, int, int, int]:
    """PIL box (left, top, right, bottom) of the centred crop of ``size`` (W, H) to ``aspect``."""
    width, height = size
    if height / width > aspect:  # too tall: cut rows
        new_height = max(1, round(width * aspect))
        top = (height - new_height) // 2
        return 0, top, width, top + new_height
    new_width = max(1, round(height / aspect))
    left = (width - new_width) // 2
    return left, 0, left + new_width, height


def aspect_of(index: int, aspect: str, seed: int) -> float:
    """The aspect of the ``index``-th image: fixed, or seeded per image for ``mixed``."""
    if aspect != "mixed":
        return float(aspect)
    low, high = np.log(MIXED_RANGE[0]), np.log(MIXED_RANGE[1])
    return float(np.exp(np.random.default_rng([seed, index]).uniform(low, high)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="dataset root in MVTec AD layout")
    parser.add_argument("--category", required=True)
    parser.add_argument("--aspect", default="0.75", help="height / width, or 'mixed'")
    parser.add_argument("--min-defect", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", required=True, help="new dataset root (outside the repo)")
    args = parser.parse_args()
    dataset = load_mvtec(args.data, args.category)
    base = Path(args.output) / args.category
    index = 0
    kept = {"train": 0, "test_good": 0, "test_defective": 0, "dropped_defective": 0}

    def box_for(image: Image.Image) -> tuple[int, int, int, int]:
        nonlocal index
        index += 1
        return crop_box(image.size, aspect_of(index, args.aspect, args.seed))

    for path in dataset.train:
        with Image.open(path) as image:
            _save(image.crop(box_for(image)), base / "train" / GOOD / path.name)
        kept["train"] += 1
    for sample in dataset.test:
        with Image.open(sample.image) as image:
            box = box_for(image)
            target = base / "test" / sample.defect / sample.image.name
            if sample.mask_path is None:
                _save(image.crop(box), target)
                kept["test_good"] += 1
                continue
            with Image.open(sample.mask_path) as mask:
                whole = np.asarray(mask.convert("L")) > 127
                cut = mask.crop(box)
                if (np.asarray(cut.convert("L")) > 127).sum() < args.min_defect * whole.sum():
                    kept["dropped_defective"] += 1
                    continue
                _save(image.crop(box), target)
                _save(cut, base / "ground_truth" / sample.defect / sample.mask_path.name)
                kept["test_defective"] += 1
    print(json.dumps({"output": str(base), "aspect": args.aspect, **kept}, indent=2))


def _save(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


if __name__ == "__main__":
    main()
