"""The ONNX Runtime backend against PyTorch on real images: largest score difference and speed.

python scripts/onnx_check.py --images ../shared/datasets/mvtec_ad/bottle/test --count 30 \
    --output research/results/onnx_check_bottle.json

Exports the model (the bundled bottle model by default) to ONNX, predicts ``--count`` images
evenly spaced among the sorted paths under ``--images`` (every subfolder: good and defective)
with both backends at batch 1 and 16, and reports the largest absolute score difference and
each backend's milliseconds per image (``predict`` from decoded pixels to predictions, medians
of ``--repeats`` rounds, the backends interleaved so that both see the same load), with the
threads each used.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from hfr import HFR, __version__
from hfr.commands.benchmark import machine
from hfr.export import export_onnx
from hfr.images import read_image
from hfr.onnx_runtime import OnnxModel
from hfr.serving.outputs import write_json

SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="hfr-mvtec-bottle-mobilenetv2", help="the bundled")
    parser.add_argument("--images", required=True, help="a folder of images (searched deeply)")
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = HFR.from_pretrained(args.model)
    sources = sorted(p for p in Path(args.images).rglob("*") if p.suffix.lower() in SUFFIXES)
    sources = sources[:: max(1, len(sources) // args.count)][: args.count]  # every folder
    if not sources:
        raise SystemExit(f"no images under {args.images}")
    pixels = [read_image(source).pixels for source in sources]
    with tempfile.TemporaryDirectory() as folder:
        path = export_onnx(model, Path(folder, "model.onnx"))
        onnx_model = OnnxModel(path, threads=args.threads)
        backends = {"torch": model, "onnxruntime": onnx_model}
        scores = {name: [p.score for p in b.predict(pixels)] for name, b in backends.items()}
        difference = np.abs(np.subtract(scores["onnxruntime"], scores["torch"]))
        timings = {}
        for batch in (1, 16):
            times: dict[str, list[float]] = {name: [] for name in backends}
            for _ in range(args.repeats):
                for name, backend in backends.items():
                    began = time.perf_counter()
                    backend.predict(pixels, batch_size=batch)
                    times[name].append((time.perf_counter() - began) * 1000 / len(pixels))
            timings[f"batch_{batch}"] = {name: float(np.median(t)) for name, t in times.items()}
    record = {
        "command": shlex.join(["python", "scripts/onnx_check.py", *sys.argv[1:]]),
        "model": args.model,
        "images": len(pixels),
        "max_abs_score_difference": float(difference.max()),
        "max_relative_score_difference": float((difference / np.abs(scores["torch"])).max()),
        "ms_per_image": timings,
        "threads": args.threads,
        "machine": machine("cpu"),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "hfr": __version__,
    }
    write_json(args.output, record)
    print(record)


if __name__ == "__main__":
    main()
