"""What does int8 cost and buy? ``hfr export --int8`` with each scope, on bottle and screw with
both backbones: the accuracy gate's figures (image AUROC, pixel AUROC, AUPRO of the float and
the int8 export) and ONNX Runtime's ms per image for both, timed in interleaved rounds.

python research/int8_study.py --data ../shared/datasets/mvtec_ad --models-dir runs/guarantee \
    --output research/results/int8_0.23

The models are seed 0 of ``--models-dir`` (laid out as ``BACKBONE/seed0/CATEGORY``, as
``research/five_seed_study.py`` keeps them), trained there with ``hfr train`` when missing.
Every scope is measured whatever its loss (the gate's limits are lifted here); ``accepted``
says whether ``hfr export --int8`` would have kept it at the default limits (image AUROC 0.005,
AUPRO 0.002).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from five_seed_study import BACKBONES, trained_model

from hfr.config.settings import INT8_SCOPES, MAX_INT8_DROPS
from hfr.data import load_mvtec
from hfr.export import export_onnx
from hfr.onnx_runtime import OnnxModel
from hfr.quantize import export_int8
from hfr.serving.outputs import write_json


def timed(paths: dict[str, Path], input_size: tuple[int, int], batch: int, repeats: int) -> dict:
    """Median ms per image of each ONNX file on one random batch, in interleaved rounds."""
    sessions = {name: OnnxModel(path, threads=2).session for name, path in paths.items()}
    images = np.random.default_rng(0).standard_normal((batch, 3, *input_size), np.float32)
    for session in sessions.values():
        session.run(None, {"images": images})
    seconds: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(repeats):
        for name, session in sessions.items():
            began = time.perf_counter()
            session.run(None, {"images": images})
            seconds[name].append(time.perf_counter() - began)
    return {name: 1000 * statistics.median(s) / batch for name, s in seconds.items()}


def table(rows: list[dict]) -> str:
    """The runs as a markdown table."""
    lines = [
        "| category | backbone | int8 scope | image AUROC float -> int8 | pixel AUROC | AUPRO | "
        "kept by the gate | ms/img batch 1 float -> int8 | ms/img batch 16 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [
            f"{row['float'][name]:.4f} -> {row['int8'][name]:.4f}"
            for name in ("image_auroc", "pixel_auroc", "aupro")
        ]
        speed = [
            f"{row['ms_per_image'][batch]['float']:.1f} -> {row['ms_per_image'][batch]['int8']:.1f}"
            for batch in ("1", "16")
        ]
        lines.append(
            f"| {row['category']} | {row['backbone']} | {row['scope']} | {' | '.join(cells)} | "
            f"{'yes' if row['accepted'] else 'no'} | {' | '.join(speed)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="MVTec AD root")
    parser.add_argument("--categories", default="bottle,screw")
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--models-dir", required=True, help="BACKBONE/seed0/CATEGORY models")
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds per batch size")
    parser.add_argument("--output", required=True, help="folder for runs.json and summary.md")
    args = parser.parse_args(argv)
    rows = []
    for backbone in args.backbones.split(","):
        for category in args.categories.split(","):
            folder = Path(args.models_dir, backbone, "seed0", category)
            model = trained_model(folder, args.data, backbone, category, 0, [])
            dataset = load_mvtec(args.data, category)
            with tempfile.TemporaryDirectory() as work:
                paths = {"float": export_onnx(model, Path(work, "float.onnx"))}
                for scope in INT8_SCOPES:
                    paths[scope] = Path(work, f"{scope}.onnx")
                    lifted = {"max_auroc_drop": 1.0, "max_aupro_drop": 1.0}
                    record = export_int8(model, paths[scope], dataset, scope=scope, **lifted)
                    drops = record["drops"].items()
                    record["accepted"] = all(d <= MAX_INT8_DROPS[name] for name, d in drops)
                    rows.append({"category": category, "backbone": backbone, **record})
                size = model.config.preprocessing.input_size
                speeds = {str(b): timed(paths, size, b, args.repeats) for b in (1, 16)}
            for row in rows[-len(INT8_SCOPES) :]:
                row["ms_per_image"] = {
                    batch: {"float": speed["float"], "int8": speed[row["scope"]]}
                    for batch, speed in speeds.items()
                }
                print(row, flush=True)
    command = shlex.join(["python", "research/int8_study.py", *(argv or sys.argv[1:])])
    output = Path(args.output)
    write_json(output / "runs.json", {"command": command, "runs": rows})
    (output / "summary.md").write_text(f"`{command}`\n\n{table(rows)}")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
