"""The structural-defect check: can a model's map point at what is missing, moved, rotated,
pasted in or of the wrong texture?

python research/structural_defects.py --data ../shared/datasets/mvtec_ad --category bottle \
    --output runs/structural
hfr evaluate --model MODEL --data runs/structural --category bottle \
    --output research/results/structural_0.23/hfr_mobilenetv2_bottle.json
python research/structural_defects.py --table research/results/structural_0.23

Writes an MVTec-layout copy of the category whose test split holds its normal test images and,
for each of them, one seeded defect of every kind, with the defect's mask as ground truth
(``train/`` links to the real training images). ``hfr evaluate`` then reports pixel AUROC and
AUPRO per kind (``per_defect_pixel_auroc``, ``per_defect_aupro``). The kinds, each on a disk
(or two) of 1-4.5 % of the image placed on the part, never on the background:

- ``missing``: the disk filled with background (a patch of the image's most background-like
  corner);
- ``moved``: the disk's content moved two to four radii away; its old place filled as
  ``missing`` (mask: both disks);
- ``rotated``: the disk's content turned by 90, 180 or 270 degrees in place;
- ``pasted``: a disk of another normal (training) image pasted in (CutPaste);
- ``texture``: the disk's 8x8 blocks shuffled: its colours kept, its structure gone;
- ``inpainted``: the disk filled with what its rim predicts, diffused inwards (a smooth,
  locally plausible surface where a feature was: an absence that puts no foreign pixels in).

A defect that changes its disk by less than 10 grey levels on average (a turn of a round,
uniform region, say) is drawn again. ``--table FOLDER`` gathers the evaluations written there as
``METHOD_BACKBONE_CATEGORY.json`` (``hfr evaluate``'s, or ``scripts/peer_evaluate.py``'s for
PatchCore and PaDiM) into ``FOLDER/summary.md``: pixel AUROC / AUPRO per kind.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from hfr.images import list_images, load_rgb

KINDS = ("missing", "moved", "rotated", "pasted", "texture", "inpainted")
MIN_CHANGE = 10.0  # mean absolute change inside the mask, grey levels
TRIES = 30


def disk(shape: tuple[int, int], center: tuple[float, float], radius: float) -> np.ndarray:
    """A boolean disk of ``radius`` around ``center`` (row, column) in an image of ``shape``."""
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    return (rows - center[0]) ** 2 + (cols - center[1]) ** 2 <= radius**2


def part_mask(image: np.ndarray) -> np.ndarray:
    """Where the part is: pixels far from the border's median colour, holes filled."""
    frame = np.concatenate([image[:8].reshape(-1, 3), image[-8:].reshape(-1, 3)])
    frame = np.concatenate([frame, image[:, :8].reshape(-1, 3), image[:, -8:].reshape(-1, 3)])
    distance = np.abs(image.astype(np.float32) - np.median(frame, axis=0)).max(axis=2)
    mask = ndimage.binary_opening(distance > 40, iterations=2)
    return ndimage.binary_fill_holes(ndimage.binary_closing(mask, iterations=4))


def background_patch(image: np.ndarray, size: int) -> np.ndarray:
    """A ``size`` x ``size`` patch of the corner most like the border's median colour."""
    height, width = image.shape[:2]
    corners = [
        image[:size, :size],
        image[:size, width - size :],
        image[height - size :, :size],
        image[height - size :, width - size :],
    ]
    frame = np.median(np.concatenate([image[:8], image[-8:]]).reshape(-1, 3), axis=0)
    return min(corners, key=lambda c: float(np.abs(c.mean(axis=(0, 1)) - frame).sum()))


def paste(target: np.ndarray, source: np.ndarray, mask: np.ndarray, offset: tuple[int, int]):
    """``target`` with the pixels of ``source`` under ``mask`` moved by ``offset`` (rows,
    columns); returns the new image and the mask at its new place."""
    moved_mask = ndimage.shift(mask.astype(np.uint8), offset, order=0, mode="constant") > 0
    moved = np.stack(
        [ndimage.shift(source[..., c], offset, order=0, mode="nearest") for c in range(3)], -1
    )
    result = target.copy()
    result[moved_mask] = moved[moved_mask]
    return result, moved_mask


def fill_background(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` with ``mask``'s pixels taken from a background corner patch, tiled."""
    rows, cols = np.nonzero(mask)
    size = int(max(np.ptp(rows), np.ptp(cols))) + 1
    patch = background_patch(image, min(size, *image.shape[:2]))
    repeats = (size // patch.shape[0] + 1, size // patch.shape[1] + 1, 1)
    region = np.tile(patch, repeats)
    result = image.copy()
    result[rows, cols] = region[rows - rows.min(), cols - cols.min()]
    return result


def inpaint(image: np.ndarray, mask: np.ndarray, radius: float) -> np.ndarray:
    """``image`` with ``mask`` filled from its rim: the rim's mean colour, then Gaussian blurs
    from half the radius down to one pixel, each put back under ``mask`` only."""
    rows, cols = np.nonzero(mask)
    margin = int(radius) + 4
    top, left = max(rows.min() - margin, 0), max(cols.min() - margin, 0)
    bottom, right = rows.max() + margin + 1, cols.max() + margin + 1
    box = image[top:bottom, left:right].astype(np.float32)
    inside = mask[top:bottom, left:right]
    rim = ndimage.binary_dilation(inside, iterations=2) & ~inside
    box[inside] = box[rim].mean(axis=0)
    sigma = radius / 2
    while sigma >= 1:
        for _ in range(4):
            box[inside] = ndimage.gaussian_filter(box, (sigma, sigma, 0))[inside]
        sigma /= 2
    result = image.copy()
    result[top:bottom, left:right][inside] = np.clip(np.rint(box[inside]), 0, 255)
    return result


def shuffled_blocks(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``image`` with the 8x8 blocks of ``mask``'s bounding box shuffled, kept under ``mask``."""
    rows, cols = np.nonzero(mask)
    top, left = rows.min() // 8 * 8, cols.min() // 8 * 8
    bottom = min(image.shape[0], (rows.max() // 8 + 1) * 8)
    right = min(image.shape[1], (cols.max() // 8 + 1) * 8)
    box = image[top:bottom, left:right]
    blocks_y, blocks_x = box.shape[0] // 8, box.shape[1] // 8
    blocks = box[: blocks_y * 8, : blocks_x * 8].reshape(blocks_y, 8, blocks_x, 8, 3)
    blocks = blocks.transpose(0, 2, 1, 3, 4).reshape(-1, 8, 8, 3)
    blocks = blocks[rng.permutation(len(blocks))]
    shuffled = blocks.reshape(blocks_y, blocks_x, 8, 8, 3).transpose(0, 2, 1, 3, 4)
    result = image.copy()
    changed = result[top:bottom, left:right].copy()
    changed[: blocks_y * 8, : blocks_x * 8] = shuffled.reshape(blocks_y * 8, blocks_x * 8, 3)
    inside = mask[top:bottom, left:right]
    result[top:bottom, left:right][inside] = changed[inside]
    return result


def with_defect(
    image: np.ndarray, kind: str, donor: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray] | None:
    """``image`` with one defect of ``kind`` and its mask, or ``None`` when no draw changed the
    image enough. ``donor`` is another normal image (for ``pasted``)."""
    height, width = image.shape[:2]
    part = part_mask(image)
    places = np.argwhere(part)
    if not len(places):
        return None
    for _ in range(TRIES):
        radius = rng.uniform(0.06, 0.12) * min(height, width)
        center = places[rng.integers(len(places))]
        mask = disk((height, width), center, radius)
        defective = _apply(kind, image, mask, radius, donor, part, rng)
        if defective is None:
            continue
        changed, truth = defective
        change = np.abs(changed.astype(np.float32) - image.astype(np.float32)).mean(axis=2)
        if change[truth].mean() >= MIN_CHANGE:
            return changed, truth
    return None


def _apply(kind, image, mask, radius, donor, part, rng):
    """One draw of ``kind`` on ``mask``: the image and the ground truth, or ``None``."""
    height, width = image.shape[:2]
    if kind == "missing":
        return fill_background(image, mask), mask
    if kind == "moved":
        angle = rng.uniform(0, 2 * np.pi)
        distance = rng.uniform(2, 4) * radius
        offset = (int(distance * np.sin(angle)), int(distance * np.cos(angle)))
        rows, cols = np.nonzero(mask)
        rows, cols = rows + offset[0], cols + offset[1]
        if rows.min() < 0 or cols.min() < 0 or rows.max() >= height or cols.max() >= width:
            return None
        emptied = fill_background(image, mask)
        moved, moved_mask = paste(emptied, image, mask, offset)
        if not part[moved_mask].mean() > 0.5:  # the content lands on the part, not beside it
            return None
        return moved, mask | moved_mask
    if kind == "rotated":
        rows, cols = np.nonzero(mask)
        top, left = rows.min(), cols.min()
        side = max(np.ptp(rows), np.ptp(cols)) + 1
        if top + side > height or left + side > width:
            return None
        square = image[top : top + side, left : left + side]
        turned = np.rot90(square, k=int(rng.integers(1, 4)))
        result = image.copy()
        inside = mask[top : top + side, left : left + side]
        result[top : top + side, left : left + side][inside] = turned[inside]
        return result, mask
    if kind == "pasted":
        donor_part = np.argwhere(part_mask(donor))
        if not len(donor_part):
            return None
        source = donor_part[rng.integers(len(donor_part))]
        rows, cols = np.nonzero(mask)
        center = (rows.mean(), cols.mean())
        offset = (int(center[0] - source[0]), int(center[1] - source[1]))
        source_mask = disk(donor.shape[:2], source, radius)
        pasted, pasted_mask = paste(image, donor, source_mask, offset)
        return pasted, pasted_mask
    if kind == "inpainted":
        return inpaint(image, mask, radius), mask
    return shuffled_blocks(image, mask, rng), mask


def write_category(
    data: Path, category: str, output: Path, *, seed: int, log: Callable[[str], None] = print
) -> dict[str, int]:
    """Write the check's copy of ``category`` under ``output``; returns the count per kind."""
    source = data / category
    target = output / category
    good = list_images(source / "test" / "good")
    donors = list_images(source / "train" / "good")
    (target / "train").mkdir(parents=True, exist_ok=True)
    link = target / "train" / "good"
    if not link.exists():
        link.symlink_to((source / "train" / "good").resolve(), target_is_directory=True)
    (target / "test" / "good").mkdir(parents=True, exist_ok=True)
    counts = dict.fromkeys(KINDS, 0)
    for index, path in enumerate(good):
        image = load_rgb(path)
        Image.fromarray(image).save(target / "test" / "good" / f"{index:03d}.png")
        for number, kind in enumerate(KINDS):
            rng = np.random.default_rng([seed, index, number])
            donor = load_rgb(donors[int(rng.integers(len(donors)))])
            made = with_defect(image, kind, donor, rng)
            if made is None:
                log(f"{path.name}: no {kind} defect changed the image enough; left out")
                continue
            defective, mask = made
            for folder in (target / "test" / kind, target / "ground_truth" / kind):
                folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(defective).save(target / "test" / kind / f"{index:03d}.png")
            Image.fromarray(mask.astype(np.uint8) * 255).save(
                target / "ground_truth" / kind / f"{index:03d}_mask.png"
            )
            counts[kind] += 1
    return counts


def summary_table(folder: Path) -> str:
    """Pixel AUROC / AUPRO of each kind (and over all kinds) for every evaluation in
    ``folder`` named ``METHOD_BACKBONE_CATEGORY.json``, one column per method and backbone."""
    runs: dict[tuple[str, str], dict[str, dict]] = {}
    for path in sorted(folder.glob("*.json")):
        method, rest = path.stem.split("_", 1)
        backbone, _, category = rest.rpartition("_")
        if category not in ("bottle", "screw"):
            continue
        runs.setdefault((method, backbone), {})[category] = json.loads(path.read_text())
    columns = sorted(runs, key=lambda key: (key[0] != "hfr", key))
    header = " | ".join(f"{method} {backbone}" for method, backbone in columns)
    lines = [f"| category | kind | {header} |", "|---|---|" + "---|" * len(columns)]
    categories = sorted({c for by_category in runs.values() for c in by_category})
    for category in categories:
        for kind in (*KINDS, "all"):
            cells = []
            for key in columns:
                run = runs[key].get(category)
                if run is None:
                    cells.append("")
                elif kind == "all":
                    cells.append(f"{run['pixel_auroc']:.3f} / {run['aupro']:.3f}")
                elif kind not in run["per_defect_aupro"]:  # a record from before the kind
                    cells.append("-")
                else:
                    pixel, pro = run["per_defect_pixel_auroc"], run["per_defect_aupro"]
                    cells.append(f"{pixel[kind]:.3f} / {pro[kind]:.3f}")
            lines.append(f"| {category} | {kind} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="MVTec AD root")
    parser.add_argument("--category")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="root of the written copy")
    parser.add_argument("--table", help="a folder of evaluations to gather into summary.md")
    args = parser.parse_args(argv)
    if args.table:
        table = summary_table(Path(args.table))
        command = shlex.join(["python", "research/structural_defects.py", *(argv or sys.argv[1:])])
        (Path(args.table) / "summary.md").write_text(f"`{command}`\n\n{table}")
        print(table)
        return 0
    if not (args.data and args.category and args.output):
        parser.error("give --data, --category and --output (or --table)")
    counts = write_category(Path(args.data), args.category, Path(args.output), seed=args.seed)
    command = shlex.join(["python", "research/structural_defects.py", *(argv or sys.argv[1:])])
    record = {"command": command, "category": args.category, "seed": args.seed, "images": counts}
    (Path(args.output) / args.category / "defects.json").write_text(json.dumps(record, indent=2))
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
