"""The same N images scored three ways: single-process ``hfr predict``, and ``hfr predict --ray``
with 1 and with 2 predictor actors on a local Ray; images per second of each whole command
(start-up, model loads and Ray's start included) and Ray's overhead at 1 worker.

python scripts/ray_benchmark.py --images ../shared/datasets/mvtec_ad/bottle --count 1200 \\
    --output research/results/ray_benchmark_cpu.json

Each run is also timed to its first scored row (start-up: imports, Ray's start, model loads)
and at its rate after that row, the figure that holds for a long run.

The images are the ``*.png`` files below ``--images``, repeated under distinct names (symbolic
links) up to ``--count``. Every run writes no overlays; the Ray runs use ``hfr predict``'s
default share of CPUs per worker. With ``--gpus-per-worker`` the Ray runs
put their actors on GPUs (``--workers`` lists the pool sizes to try).
"""

from __future__ import annotations

import argparse
import csv
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hfr.serving.catalog import bundled_dir
from hfr.serving.outputs import write_json

MODEL = bundled_dir() / "hfr-mvtec-bottle-mobilenetv2"


def image_set(source: Path, count: int, folder: Path) -> Path:
    """``count`` links to the PNGs below ``source``, cycling through them, in ``folder``."""
    originals = sorted(source.rglob("*.png"))
    originals = [p for p in originals if "ground_truth" not in p.parts]
    folder.mkdir(parents=True)
    for index in range(count):
        (folder / f"{index:06d}.png").symlink_to(originals[index % len(originals)].resolve())
    return folder


def timed_run(command: list[str], output: Path, count: int) -> dict[str, float]:
    """Run ``command`` and watch its ``scores.csv`` grow: the whole time, the time until the
    first scored row (start-up: imports, Ray, model loads) and the rate after it."""
    scores_file = output / "scores.csv"
    began = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_row_at, rows_then = None, 0
    while process.poll() is None:
        if first_row_at is None and scores_file.is_file():
            rows = len(scores_file.read_text().splitlines()) - 1
            if rows > 0:
                first_row_at, rows_then = time.perf_counter() - began, rows
        time.sleep(0.1)
    if process.returncode != 0:
        raise subprocess.CalledProcessError(process.returncode, command)
    seconds = time.perf_counter() - began
    first_row_at = first_row_at if first_row_at is not None else seconds
    steady = (count - rows_then) / max(seconds - first_row_at, 1e-9)
    return {
        "seconds": round(seconds, 1),
        "images_per_second": round(count / seconds, 2),
        "seconds_to_first_row": round(first_row_at, 1),
        "images_per_second_after_first_row": round(steady, 2),
    }


def scores(output: Path) -> dict[str, str]:
    with open(output / "scores.csv", newline="") as handle:
        return {row["image"]: row["score"] for row in csv.DictReader(handle)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", required=True, help="folder searched for *.png")
    parser.add_argument("--count", type=int, default=1200)
    parser.add_argument("--model", default=str(MODEL))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", default="1,2", help="actor pool sizes, comma-separated")
    parser.add_argument("--gpus-per-worker", type=float, default=0.0)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hfr-ray-bench-"))
    images = image_set(Path(args.images), args.count, work / "images")
    base = [sys.executable, "-m", "hfr", "-q", "predict", "--model", args.model, str(images)]
    base += ["--no-overlays", "--batch-size", str(args.batch_size)]
    runs = [("single process", [], work / "single")]
    for workers in (int(w) for w in args.workers.split(",")):
        ray = ["--ray", "--workers", str(workers), "--gpus-per-worker", str(args.gpus_per_worker)]
        runs.append((f"Ray, {workers} worker(s)", ray, work / f"ray{workers}"))
    results = []
    for name, extra, output in runs:
        timing = timed_run([*base, *extra, "--output", str(output)], output, args.count)
        results.append({"run": name, **timing})
        print(results[-1], flush=True)
    reference = scores(runs[0][2])
    for result, (_, _, output) in zip(results[1:], runs[1:], strict=True):
        found = scores(output)
        result["scores_equal_to_single_process"] = sum(
            found.get(image) == score for image, score in reference.items()
        )
    single, ray_one = results[0], results[1]
    record = {
        "images": args.count,
        "batch_size": args.batch_size,
        "cpus_per_worker": "hfr predict's default: the Ray's CPUs less 0.5, shared out",
        "gpus_per_worker": args.gpus_per_worker,
        "runs": results,
        "ray_1_worker_overhead": round(ray_one["seconds"] / single["seconds"] - 1, 3),
        "ray_1_worker_overhead_after_first_row": round(
            single["images_per_second_after_first_row"]
            / ray_one["images_per_second_after_first_row"]
            - 1,
            3,
        ),
        "command": shlex.join(["python", *sys.argv]),
    }
    print(write_json(args.output, record), end="")


if __name__ == "__main__":
    main()
