"""The high-resolution check: real defects a few tenths of a percent of a large image's area.

python research/highres_defects.py --data ../shared/datasets/mvtec_ad --category bottle \
    --output runs/highres
hfr train --data runs/highres --category bottle [--tile 900 | --image-size 512] ... --evaluate
python research/highres_defects.py --table research/results/highres_0.24

Writes an MVTec-layout category of ``grid x grid`` mosaics of the category's images (a bottle
mosaic is 2700x2700 px): ``train/good`` from its training images, ``test/good`` from its good
test images, and ``test/<defect>`` mosaics of good test images into one cell of which one real
defect is pasted: the defect's mask, grown by ``MARGIN`` px, cut from its defective test image
and pasted at the same place of a good image's cell (the parts of a category sit alike, so the
defect lands on the part), with that region as the mask. Each defective test image is used
once, so the defect kinds and sizes are the category's own, at ``1 / grid**2`` of their share
of the image. Mosaics are seeded; every cell of one mosaic is a different image.

``--table FOLDER`` gathers the ``hfr evaluate`` results written there as ``NAME.json`` into
``FOLDER/summary.md``: image AUROC, pixel AUROC, AUPRO and ms per image.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from hfr.data import load_mvtec
from hfr.images import load_rgb

MARGIN = 4  # px the defect's mask is grown by before it is cut out
DEFAULT_GRID = 3
DEFAULT_TRAIN_MOSAICS = 40


def mosaic(images: list[np.ndarray], grid: int) -> np.ndarray:
    """``grid x grid`` equally sized images, row by row, in one image."""
    rows = [np.concatenate(images[r * grid : (r + 1) * grid], axis=1) for r in range(grid)]
    return np.concatenate(rows, axis=0)


def pasted_defect(
    good: np.ndarray, defective: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``good`` with ``defective``'s pixels inside ``mask`` grown by ``MARGIN``, and that region."""
    region = ndimage.binary_dilation(mask, iterations=MARGIN)
    return np.where(region[..., None], defective, good), region


def _cells(paths: list[Path], count: int, rng: np.random.Generator) -> list[Path]:
    return [paths[i] for i in rng.choice(len(paths), size=count, replace=False)]


def write_category(
    data: Path, category: str, output: Path, *, grid: int, train_mosaics: int, seed: int
) -> dict[str, int]:
    """Write the check's copy of ``category`` under ``output``; returns the count per folder."""
    dataset = load_mvtec(data, category)
    target = output / category
    cells = grid * grid
    good_test = [s.image for s in dataset.test if s.label == 0]
    counts: dict[str, int] = {}

    def save(folder: str, index: int, image: np.ndarray) -> None:
        (target / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(target / folder / f"{index:03d}.png")
        counts[folder] = counts.get(folder, 0) + 1

    for stage, (folder, sources, count) in enumerate(
        (
            ("train/good", list(dataset.train), train_mosaics),
            ("test/good", good_test, len(good_test)),
        )
    ):
        for index in range(count):
            rng = np.random.default_rng([seed, stage, index])
            save(folder, index, mosaic([load_rgb(p) for p in _cells(sources, cells, rng)], grid))
    defective = [s for s in dataset.test if s.label == 1]
    for index, sample in enumerate(defective):
        rng = np.random.default_rng([seed, 2, index])
        images = [load_rgb(p) for p in _cells(good_test, cells, rng)]
        cell = int(rng.integers(cells))
        mask = sample.mask(images[cell].shape[:2])
        images[cell], region = pasted_defect(images[cell], load_rgb(sample.image), mask)
        masks = [np.zeros(image.shape[:2], bool) for image in images]
        masks[cell] = region
        save(f"test/{sample.defect}", index, mosaic(images, grid))
        (target / "ground_truth" / sample.defect).mkdir(parents=True, exist_ok=True)
        Image.fromarray(mosaic(masks, grid).astype(np.uint8) * 255).save(
            target / "ground_truth" / sample.defect / f"{index:03d}_mask.png"
        )
    return counts


def summary_table(folder: Path) -> str:
    """A markdown table of the ``hfr evaluate`` results in ``folder``."""
    lines = [
        "| model | image AUROC | pixel AUROC | AUPRO | ms / image |",
        "|---|---|---|---|---|",
    ]
    for path in sorted(folder.glob("*.json")):
        result = json.loads(path.read_text())
        figures = [result.get(k) for k in ("image_auroc", "pixel_auroc", "aupro")]
        cells = " | ".join("-" if v is None else f"{v:.3f}" for v in figures)
        lines.append(f"| {path.stem} | {cells} | {result.get('inference_ms_per_image', 0):.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="MVTec AD root")
    parser.add_argument("--category")
    parser.add_argument("--grid", type=int, default=DEFAULT_GRID)
    parser.add_argument("--train-mosaics", type=int, default=DEFAULT_TRAIN_MOSAICS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="root of the written copy")
    parser.add_argument("--table", help="a folder of evaluations to gather into summary.md")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "research/highres_defects.py", *(argv or sys.argv[1:])])
    if args.table:
        table = summary_table(Path(args.table))
        (Path(args.table) / "summary.md").write_text(f"`{command}`\n\n{table}")
        print(table)
        return 0
    if not (args.data and args.category and args.output):
        parser.error("give --data, --category and --output (or --table)")
    counts = write_category(
        Path(args.data),
        args.category,
        Path(args.output),
        grid=args.grid,
        train_mosaics=args.train_mosaics,
        seed=args.seed,
    )
    record = {"command": command, "category": args.category, "grid": args.grid, "images": counts}
    (Path(args.output) / args.category / "mosaics.json").write_text(json.dumps(record, indent=2))
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
