"""Latency per image as a user of the demo sees it: cold (model load) and warm requests.

python scripts/app_latency.py --image IMAGE.png --output docs/results/app_latency.json

Starts app.py on a free local port (CPU, bundled model, no Hub), then times gradio_client calls
end to end: upload, model, overlay, encoding, download. The first call loads the model (cold).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from gradio_client import Client, handle_file
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
MODEL = "hfr-mvtec-bottle-mobilenetv2 (bundled)"


def start_app(port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "GRADIO_SERVER_PORT": str(port),
        "HFR_HUB_ORG": "",
        "CUDA_VISIBLE_DEVICES": "",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env)
    for _ in range(240):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            return process
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("app.py did not start")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image", required=True)
    parser.add_argument("--warm-runs", type=int, default=5)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = start_app(port)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)

        def request() -> tuple[float, str]:
            began = time.perf_counter()
            result = client.predict(
                [handle_file(args.image)], MODEL, 0.5, 0.5, False, api_name="/analyze"
            )
            return time.perf_counter() - began, result[0][0]["image"]

        cold, overlay_path = request()
        warm = [request()[0] for _ in range(args.warm_runs)]
    finally:
        process.terminate()
        process.wait(timeout=30)
    with Image.open(args.image) as image:
        size = f"{image.width}x{image.height}"
    with Image.open(overlay_path) as overlay_image:
        overlay_size = f"{overlay_image.width}x{overlay_image.height}"
    results = {
        "image_size": size,
        "overlay_size": overlay_size,
        "cold_seconds": round(cold, 3),
        "warm_seconds_median": round(statistics.median(warm), 3),
        "warm_seconds": [round(w, 3) for w in warm],
        "device": "cpu",
        "model": MODEL,
        "command": shlex.join(["python", *sys.argv]),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
