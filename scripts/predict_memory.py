"""Peak memory of ``HFR.predict`` on one large image, above the loaded model.

python scripts/predict_memory.py --width 7300 --height 5480 \
    --output research/results/predict_memory.json
python scripts/predict_memory.py --width 4000 --height 3000 --tile 512 \
    --output research/results/predict_memory_tiles.json

Writes a random RGB PNG of the given size, loads the bundled model, scores a small image (so
the model's own buffers exist), then the large one, and reports the growth of the process's
peak resident memory (VmHWM, reset before the prediction) and the time of the large prediction.
``--tile SIDE`` scores it in tiles of that many pixels instead: the bundled network and
calibration with tiles set (and the colour term off, as tiles require), for the cost of tiled
scoring, not its accuracy.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from hfr import HFR
from hfr.serving.catalog import bundled_dir
from hfr.serving.outputs import write_json


def memory_mb() -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident memory of this process in MB (Linux)."""
    lines = Path("/proc/self/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in lines)
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}


def reset_peak() -> None:
    """Start VmHWM again from the current RSS (Linux: 5 > /proc/self/clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--width", type=int, default=7300)
    parser.add_argument("--height", type=int, default=5480)
    parser.add_argument("--tile", type=int, help="score in tiles of this many pixels a side")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    model = HFR.from_pretrained(next(p for p in bundled_dir().iterdir() if p.is_dir()))
    if args.tile:
        preprocessing = replace(model.config.preprocessing, tile=(args.tile, args.tile))
        scoring = replace(model.config.scoring, colour_weight=0.0, position_weight=0.0)
        model.config = model.config.replace(preprocessing=preprocessing, scoring=scoring)
    model.predict(np.zeros((64, 64, 3), np.uint8))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "large.png"
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (args.height, args.width, 3), np.uint8)).save(path)
        reset_peak()
        before = memory_mb()["VmRSS"]
        began = time.perf_counter()
        (prediction,) = model.predict(path)
        seconds = time.perf_counter() - began
    result = {
        "image": f"{args.width}x{args.height}",
        "megapixels": round(args.width * args.height / 1e6, 1),
        "peak_mb_above_loaded_model": round(memory_mb()["VmHWM"] - before),
        "seconds": round(seconds, 2),
        "map_shape": list(prediction.anomaly_map.shape),
        "notes": list(prediction.notes),
        "command": shlex.join(["python", *sys.argv]),
    }
    print(write_json(args.output, result), end="")


if __name__ == "__main__":
    main()
