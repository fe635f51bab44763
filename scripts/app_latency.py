"""The demo as its users see it: latency per request (cold and warm), and the app under load.

python scripts/app_latency.py --image IMAGE.png --output research/results/app_latency.json
python scripts/app_latency.py --image IMAGE.png --backend onnxruntime \\
    --output research/results/app_latency_onnxruntime.json
python scripts/app_latency.py --image IMAGE.png --clients 20 --requests 5 \\
    --output research/results/app_load.json

Starts app.py on a free local port (CPU, bundled model, no Hub) with its own temp folders, then
times gradio_client calls end to end: upload, model, overlay, encoding, download. The first call
loads the model (cold). With ``--backend onnxruntime`` the app exports the model in the
background after that call; the warm calls are timed once its answers say ONNX Runtime scored.
The breakdown runs the app's own steps in this process (decode, model,
session state, overlay, WebP encoding, CSV; and, for comparison, Gradio's own WebP encoding of
the same overlay and numpy's float16 conversion of its map, which the app no longer uses) and
gives the rest of the warm median to Gradio (queue, events, file copies) and the transfers.

With ``--clients``, that many clients send ``--requests`` each at once; the JSON holds p50/p95
latency, how many answers equal the first one, the app's memory (RSS after the first request,
peak, after the run) and its temp files before and after the run, and after Gradio's cleanup
(``--temp-max-age``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch
from gradio.processing_utils import save_img_array_to_cache
from gradio_client import Client, handle_file
from PIL import Image

from hfr.serving.catalog import ModelCache, discover_models
from hfr.serving.outputs import write_json
from hfr.serving.viz import overlay
from hfr.uploads import UploadLimits, read_uploads

ROOT = Path(__file__).resolve().parent.parent
MODEL = "hfr-mvtec-bottle-mobilenetv2 (bundled)"


def start_app(
    port: int, temp_root: Path, concurrency: int, temp_max_age: int, backend: str
) -> subprocess.Popen:
    """app.py in its own process, its temp files (Gradio's and its own) under ``temp_root``."""
    env = {
        **os.environ,
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_TEMP_DIR": str(temp_root / "gradio"),
        "TMPDIR": str(temp_root / "app"),
        "HFR_HUB_ORG": "",
        "HFR_CONCURRENCY": str(concurrency),
        "HFR_TEMP_MAX_AGE": str(temp_max_age),
        "HFR_BACKEND": backend,
        "CUDA_VISIBLE_DEVICES": "",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    for folder in ("gradio", "app"):
        (temp_root / folder).mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env)
    for _ in range(240):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            return process
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("app.py did not start")


def memory_mb(pid: int) -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident memory of ``pid`` in MB (Linux /proc)."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}


def file_count(folder: Path) -> int:
    return sum(1 for path in folder.rglob("*") if path.is_file())


class Requester:
    """One client of the app: sends the image and returns (seconds, score, overlay path, what
    scored it)."""

    def __init__(self, url: str, image: str) -> None:
        self.client = Client(url, verbose=False)
        self.image = image

    def __call__(self) -> tuple[float, float, str, str]:
        began = time.perf_counter()
        result = self.client.predict(
            [handle_file(self.image)], MODEL, 0.5, 0.5, False, api_name="/analyze"
        )
        score = result[1]["data"][0][1]
        answer = re.search(r"analysed in [0-9.]+ s \(\d+ ms per image\) on (.+?)\.", result[-1])
        runs_on = answer.group(1)
        return time.perf_counter() - began, score, result[0][0]["image"], runs_on


def wait_for_backend(request: Requester, runs_on: str, backend: str) -> float:
    """Send requests until ``backend`` answers them (the app's ONNX export runs in the
    background); returns the seconds that took."""
    began = time.perf_counter()
    while backend == "onnxruntime" and "ONNX Runtime" not in runs_on:
        if time.perf_counter() - began > 300:
            raise RuntimeError(f"the app still scores on {runs_on} after 300 s")
        time.sleep(2)
        runs_on = request()[3]
    return time.perf_counter() - began


def latency(url: str, image: str, warm_runs: int, backend: str) -> dict:
    request = Requester(url, image)
    cold, _, overlay_path, runs_on = request()
    export_wait = wait_for_backend(request, runs_on, backend)
    warm_requests = [request() for _ in range(warm_runs)]
    warm = [answer[0] for answer in warm_requests]
    with Image.open(image) as picture, Image.open(overlay_path) as overlay_picture:
        sizes = (
            f"{picture.width}x{picture.height}",
            f"{overlay_picture.width}x{overlay_picture.height}",
        )
    return {
        "image_size": sizes[0],
        "overlay_size": sizes[1],
        "cold_seconds": round(cold, 3),
        "export_wait_seconds": round(export_wait, 1),
        "warm_runs_on": sorted({answer[3] for answer in warm_requests}),
        "warm_seconds_median": round(statistics.median(warm), 3),
        "warm_seconds": [round(w, 3) for w in warm],
    }


def load_app():
    """app.py as a module (it is not part of the package)."""
    spec = importlib.util.spec_from_file_location("hfr_demo_app", ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def session_state(app, uploads, predictions, calibration) -> list:
    """The app's per-image session records, as ``analyze`` makes them."""
    return [
        app.Result.of(name, rgb, prediction, calibration.threshold / 3)
        for (name, rgb), prediction in zip(uploads.images, predictions, strict=True)
    ]


def breakdown(image: str, runs: int, backend: str) -> dict[str, float]:
    """Median milliseconds of each server-side step of a warm request, with the app's functions."""
    app = load_app()
    app._CACHES["profile"] = ModelCache(device="cpu", backend=backend)
    entry = next(e for e in discover_models()[0] if e.label == MODEL)
    app._CACHES["profile"].scorer(entry.source, wait=True)
    folder = Path(tempfile.mkdtemp(prefix="hfr-profile-"))
    limits = UploadLimits(app.MAX_IMAGES, app.AppSettings().max_side)
    steps: dict[str, list[float]] = {}

    def timed(step: str, function, *args):
        began = time.perf_counter()
        value = function(*args)
        steps.setdefault(step, []).append(1000 * (time.perf_counter() - began))
        return value

    for _ in range(runs + 1):  # the first run loads the model and is dropped
        uploads = timed("decode", read_uploads, [image], limits)
        predictions, calibration, _ = timed(
            "model", app.run_model, "profile", entry, uploads.pixels
        )
        results = timed("session_state", session_state, app, uploads, predictions, calibration)
        timed("float16_numpy_for_comparison", predictions[0].normalized_map.astype, np.float16)
        top = results[0]
        normalized = app.converted(top.normalized_map, torch.float32)
        pixels = timed("overlay", overlay, top.image, normalized)
        timed("webp_encode", app.write_overlay, pixels, folder)
        timed("webp_encode_gradio_default", save_img_array_to_cache, pixels, str(folder), "webp")
        timed("render_total", app.render, results, 0.5, 0.5, False, folder)
    return {step: round(float(np.median(values[1:])), 1) for step, values in steps.items()}


def load(url: str, image: str, pid: int, temp_root: Path, args: argparse.Namespace) -> dict:
    """``args.clients`` clients at once, ``args.requests`` requests each."""
    temp_files_at_start = file_count(temp_root)
    first = Requester(url, image)
    wait_for_backend(first, first()[3], args.backend)
    _, reference, _, _ = first()  # scored by the backend that answers the load
    after_first = memory_mb(pid)["VmRSS"]
    requesters = [Requester(url, image) for _ in range(args.clients)]
    seconds: list[float] = []
    scores: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client_loop(requester: Requester) -> None:
        for _ in range(args.requests):
            try:
                took, score, _, _ = requester()
            except Exception as error:  # every failure is counted and reported
                with lock:
                    failures.append(f"{type(error).__name__}: {error}")
                continue
            with lock:
                seconds.append(took)
                scores.append(score)

    began = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(r,)) for r in requesters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    time.sleep(2)  # let the app finish its bookkeeping before the memory reading
    after_run = memory_mb(pid)
    temp_files_after_run = file_count(temp_root)
    cleanup_wait = args.cleanup_wait
    if cleanup_wait is None:  # one full cleanup period of the app after the files' max age
        cleanup_wait = args.temp_max_age + min(60, args.temp_max_age) + 5
    time.sleep(cleanup_wait)
    quantiles = statistics.quantiles(seconds, n=20) if len(seconds) >= 2 else [float("nan")] * 19
    return {
        "clients": args.clients,
        "requests_per_client": args.requests,
        "app_concurrency": args.concurrency,
        "correct": sum(score == reference for score in scores),
        "requests": args.clients * args.requests,
        "failures": failures[:5],
        "p50_seconds": round(statistics.median(seconds), 3) if seconds else None,
        "p95_seconds": round(quantiles[18], 3),
        "wall_seconds": round(wall, 1),
        "rss_mb_after_first_request": round(after_first),
        "rss_mb_peak": round(after_run["VmHWM"]),
        "rss_mb_after_run": round(after_run["VmRSS"]),
        "temp_files_at_start": temp_files_at_start,
        "temp_files_after_run": temp_files_after_run,
        "temp_max_age_seconds": args.temp_max_age,
        "temp_files_after_cleanup": file_count(temp_root),
        "cleanup_wait_seconds": cleanup_wait,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image", required=True)
    parser.add_argument("--warm-runs", type=int, default=11)
    parser.add_argument("--clients", type=int, default=0, help="0: latency only, no load run")
    parser.add_argument("--requests", type=int, default=5, help="per client, in a load run")
    parser.add_argument("--concurrency", type=int, default=2, help="the app's HFR_CONCURRENCY")
    parser.add_argument("--temp-max-age", type=int, default=30, help="the app's HFR_TEMP_MAX_AGE")
    parser.add_argument(
        "--cleanup-wait",
        type=float,
        default=None,
        help="seconds to wait after the run before counting temp files again "
        "(default: max age + one cleanup period)",
    )
    parser.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    temp_root = Path(tempfile.mkdtemp(prefix="hfr-app-load-"))
    process = start_app(port, temp_root, args.concurrency, args.temp_max_age, args.backend)
    url = f"http://127.0.0.1:{port}/"
    try:
        if args.clients:
            results = load(url, args.image, process.pid, temp_root, args)
        else:
            results = latency(url, args.image, args.warm_runs, args.backend)
    finally:
        process.terminate()
        process.wait(timeout=30)
    if not args.clients:
        steps = breakdown(args.image, args.warm_runs, args.backend)
        server = sum(steps[k] for k in ("decode", "model", "session_state", "render_total"))
        steps["gradio_and_transfers"] = round(1000 * results["warm_seconds_median"] - server, 1)
        results["warm_breakdown_ms"] = steps
    results |= {
        "device": "cpu",
        "backend": args.backend,
        "model": MODEL,
        "command": shlex.join(["python", *sys.argv]),
    }
    print(write_json(args.output, results), end="")


if __name__ == "__main__":
    main()
