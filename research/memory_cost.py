"""What the patch memory costs as the training set grows: the vectors it keeps, the seconds
its coreset takes at training, and its search's milliseconds per image at inference.

python research/memory_cost.py --images 188,1000,10000 \
    --output research/results/memory_cost_0.22.json

Random features stand in for the encoder's (neither cost depends on the values) at 256x256
(16x16 stride-16 cells per image), with the patch-vector widths of MobileNetV2 (32 + 96) and
ResNet18 (128 + 256). The memory is built as training builds it, batch by batch
(:meth:`PatchMemory.from_features`, 5 % of the vectors up to ``--limit``); the search is timed
on a batch of 16 images. ``unlimited_*`` is the same without the limit: the search of a memory
of 5 % of every vector, timed on a random bank of that size (its coreset is not run: at 10,000
images it would take hours).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

import torch

from hfr.commands.benchmark import machine
from hfr.config import DEFAULT_MEMORY_FRACTION, DEFAULT_MEMORY_LIMIT
from hfr.scoring.terms.memory import PatchMemory
from hfr.serving.outputs import write_json
from hfr.timing import median_seconds

WIDTHS = {"mobilenetv2_100": (32, 96), "resnet18": (128, 256)}
CELLS = 16  # stride-16 cells a side at 256x256
BATCH = 16


def random_batches(images: int, fine: int, coarse: int):
    """Feature batches ``[None, f2, f3]`` of ``images`` images, 16 at a time."""
    generator = torch.Generator().manual_seed(0)
    for start in range(0, images, BATCH):
        count = min(BATCH, images - start)
        yield [
            None,
            torch.randn(count, fine, 2 * CELLS, 2 * CELLS, generator=generator),
            torch.randn(count, coarse, CELLS, CELLS, generator=generator),
        ]


def search_ms_per_image(memory: PatchMemory, channels: int) -> float:
    """The nearest-memory search of one batch, milliseconds per image (median of 5)."""
    vectors = torch.randn(BATCH, channels, CELLS, CELLS)
    with torch.inference_mode():
        seconds = median_seconds(lambda: memory.distances(vectors), torch.device("cpu"))
    return 1000 * seconds / BATCH


def measure(images: int, encoder: str, limit: int) -> dict:
    """One training-set size for one encoder's vector widths."""
    fine, coarse = WIDTHS[encoder]
    began = time.perf_counter()
    memory = PatchMemory.from_features(
        random_batches(images, fine, coarse),
        fraction=DEFAULT_MEMORY_FRACTION,
        limit=limit,
        images=images,
    )
    build_seconds = time.perf_counter() - began
    unlimited = round(DEFAULT_MEMORY_FRACTION * images * CELLS * CELLS)
    return {
        "encoder": encoder,
        "training_images": images,
        "patch_vectors": images * CELLS * CELLS,
        "kept": len(memory.bank),
        "build_seconds": round(build_seconds, 2),
        "search_ms_per_image": round(search_ms_per_image(memory, fine + coarse), 3),
        "unlimited_kept": unlimited,
        "unlimited_search_ms_per_image": round(
            search_ms_per_image(PatchMemory(torch.randn(unlimited, fine + coarse)), fine + coarse),
            3,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", default="188,1000,10000")
    parser.add_argument("--encoders", default=",".join(WIDTHS))
    parser.add_argument("--limit", type=int, default=DEFAULT_MEMORY_LIMIT)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    rows = []
    for encoder in args.encoders.split(","):
        for images in map(int, args.images.split(",")):
            rows.append(measure(images, encoder, args.limit))
            print(rows[-1], flush=True)
    write_json(
        args.output,
        {
            "command": shlex.join(["python", "research/memory_cost.py", *sys.argv[1:]]),
            "machine": machine("cpu"),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "limit": args.limit,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
