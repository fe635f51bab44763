"""HFR demo: anomaly scores, verdicts and heat-map overlays for uploaded images.

python app.py  # http://127.0.0.1:7860

Models: the bundled MobileNetV2 bottle demo, model folders named in HFR_MODEL_DIRS (separated by
':'), and the hfr-* repos of the Hub organisation HFR_HUB_ORG (empty: no Hub). Example images:
HFR_EXAMPLES_DIR (MVTec AD images cannot be shipped; get them from https://www.mvtec.com/company/research/datasets/mvtec-ad).
"""

from __future__ import annotations

import csv
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
import torch

from hfr.catalog import BUNDLED_DIR, ModelCache, ModelEntry, folder_models, hub_models
from hfr.device import auto_device
from hfr.errors import HFRError, ImageLoadError
from hfr.images import list_images, load_rgb
from hfr.viz import colormap, overlay

try:  # ZeroGPU on Hugging Face Spaces; a no-op decorator elsewhere
    import spaces

    gpu = spaces.GPU
except ImportError:

    def gpu(function):
        return function


HUB_ORG = os.environ.get("HFR_HUB_ORG", "hfr-anomaly")
MODEL_DIRS = [Path(p) for p in os.environ.get("HFR_MODEL_DIRS", "").split(":") if p]
EXAMPLES_DIR = Path(os.environ.get("HFR_EXAMPLES_DIR", "examples"))
MAX_SIDE = int(os.environ.get("HFR_MAX_SIDE", "1600"))
MAX_IMAGES = 64
CACHE = ModelCache(capacity=int(os.environ.get("HFR_MODEL_CACHE", "3")), device=str(auto_device()))


@dataclass
class Result:
    """One analysed image, kept so that moving the sliders redraws without re-running the model."""

    name: str
    image: np.ndarray
    score: float
    normalized_score: float
    normalized_map: np.ndarray
    level_maps: list[np.ndarray]
    level_scale: float


def discover_models() -> tuple[list[ModelEntry], str]:
    """Bundled, local and Hub models, and a note on what could not be listed."""
    entries = folder_models(BUNDLED_DIR, "bundled")
    for folder in MODEL_DIRS:
        entries += folder_models(folder, "local")
    note = ""
    if HUB_ORG:
        try:
            entries += hub_models(HUB_ORG)
        except Exception as error:  # offline, DNS, HTTP errors: the local models still work
            reason = type(error).__name__
            note = f"Hub models of `{HUB_ORG}` could not be listed ({reason}); local models only."
    return entries, note


def read_uploads(paths: list[str]) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """Decode uploads; unreadable ones become notices, huge ones are downscaled with a notice."""
    images, notices = [], []
    for path in paths[:MAX_IMAGES]:
        name = Path(path).name
        try:
            rgb = load_rgb(path)
        except ImageLoadError as error:
            notices.append(f"`{name}` skipped: {str(error).replace(str(path), name)}")
            continue
        height, width = rgb.shape[:2]
        if max(height, width) > MAX_SIDE:
            scale = MAX_SIDE / max(height, width)
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            tensor = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
            rgb = torch.nn.functional.interpolate(tensor, size=size, mode="area")[0]
            rgb = rgb.permute(1, 2, 0).round().clamp(0, 255).byte().numpy()
            notices.append(f"`{name}` downscaled from {width}x{height} to {size[1]}x{size[0]}.")
        images.append((name, rgb))
    if len(paths) > MAX_IMAGES:
        notices.append(f"Only the first {MAX_IMAGES} of {len(paths)} files were analysed.")
    return images, notices


@gpu
def run_model(source: str, images: list[np.ndarray]) -> list:
    """Load (cached) and run the model: the only GPU work."""
    return CACHE.get(source).predict(images, batch_size=16, return_level_maps=True)


def analyze(files, model_label, entries, threshold, opacity, show_levels, progress=gr.Progress()):
    """Score the uploaded images and draw their overlays."""
    if not files:
        raise gr.Error("Upload one or more images first.", print_exception=False)
    entry = next((e for e in entries if e.label == model_label), None)
    if entry is None:
        raise gr.Error("Pick a model first.", print_exception=False)
    paths = [f if isinstance(f, str) else f.name for f in files]
    images, notices = read_uploads(paths)
    if not images:
        raise gr.Error(
            "None of the files is a readable image.<br>" + "<br>".join(notices),
            print_exception=False,
        )
    if entry.source not in CACHE:
        progress(0.1, desc=f"Loading {entry.label} ...")
    began = time.perf_counter()
    try:
        model = CACHE.get(entry.source)
        if model.calibration is None:
            raise gr.Error(
                f"{entry.label} is not calibrated; train it with scripts/train.py.",
                print_exception=False,
            )
        progress(0.5, desc="Scoring ...")
        predictions = run_model(entry.source, [rgb for _, rgb in images])
    except HFRError as error:
        raise gr.Error(f"Could not load {entry.label}: {error}", print_exception=False) from error
    seconds = time.perf_counter() - began
    level_scale = model.calibration.threshold / 3
    results = [
        Result(name, rgb, p.score, p.normalized_score, p.normalized_map, p.level_maps, level_scale)
        for (name, rgb), p in zip(images, predictions, strict=True)
    ]
    results.sort(key=lambda r: r.normalized_score, reverse=True)
    notices.append(f"{len(results)} image(s) analysed in {seconds:.2f} s on {model.device}.")
    return (results, *render(results, threshold, opacity, show_levels), "\n\n".join(notices))


def render(results: list[Result], threshold: float, opacity: float, show_levels: bool):
    """Gallery, score table, CSV and level maps for the current slider values."""
    if not results:
        return [], [], None, gr.update(value=[], visible=False)
    gallery = [
        (
            overlay(r.image, r.normalized_map, opacity=opacity, threshold=threshold),
            caption(r, threshold),
        )
        for r in results
    ]
    table = [
        [r.name, round(r.normalized_score, 4), round(r.score, 4), verdict(r, threshold)]
        for r in results
    ]
    levels = []
    if show_levels:
        top = results[0]
        for index, level in enumerate(top.level_maps, start=1):
            levels.append(
                (colormap(0.5 * level / top.level_scale), f"{top.name}: level {index} residual")
            )
    return gallery, table, write_csv(table), gr.update(value=levels, visible=show_levels)


def verdict(result: Result, threshold: float) -> str:
    return "ANOMALOUS" if result.normalized_score >= threshold else "normal"


def caption(result: Result, threshold: float) -> str:
    return f"{result.name}: score {result.normalized_score:.3f} ({verdict(result, threshold)})"


def write_csv(rows: list[list]) -> str:
    with tempfile.NamedTemporaryFile(
        "w", suffix=".csv", prefix="hfr-scores-", delete=False, newline=""
    ) as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "normalized_score", "raw_score", "verdict"])
        writer.writerows(rows)
    return handle.name


def build_demo() -> gr.Blocks:
    entries, note = discover_models()
    labels = [e.label for e in entries]
    examples = [str(p) for p in list_images(EXAMPLES_DIR)][:12] if EXAMPLES_DIR.is_dir() else []
    with gr.Blocks(title="HFR anomaly detection") as demo:
        gr.Markdown(
            "# HFR: unsupervised anomaly detection\n"
            "Upload images of the chosen category. Each image gets a score (0-1, the model's "
            "calibrated threshold at 0.5), a verdict, and a heat map with the anomalous region "
            "outlined. Paper: [arXiv 2405.09148](https://arxiv.org/abs/2405.09148). The bundled "
            "demo model is trained on MVTec AD *bottle* (CC BY-NC-SA 4.0); get test images from "
            "[MVTec](https://www.mvtec.com/company/research/datasets/mvtec-ad)."
            + (f"\n\n*{note}*" if note else "")
        )
        entries_state = gr.State(entries)
        results_state = gr.State([])
        with gr.Row():
            with gr.Column(scale=1):
                model_choice = gr.Dropdown(
                    labels, value=labels[0] if labels else None, label="Model"
                )
                files = gr.File(file_count="multiple", label="Images")
                threshold = gr.Slider(
                    0.0, 1.0, value=0.5, step=0.01, label="Threshold (0.5 = calibrated)"
                )
                opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Heat-map opacity")
                show_levels = gr.Checkbox(
                    label="Show the three per-level residual maps (top image)"
                )
                button = gr.Button("Analyse", variant="primary")
                if examples:
                    gr.Examples([[[p]] for p in examples], inputs=[files], label="Examples")
            with gr.Column(scale=2):
                status = gr.Markdown(elem_id="status")
                gallery = gr.Gallery(
                    label="Sorted by score, highest first", columns=3, elem_id="overlays"
                )
                table = gr.Dataframe(
                    headers=["image", "normalized_score", "raw_score", "verdict"],
                    label="Scores",
                    elem_id="scores",
                )
                csv_file = gr.File(label="Scores (CSV)")
                levels = gr.Gallery(label="Per-level residual maps", columns=3, visible=False)
        outputs = [gallery, table, csv_file, levels]
        button.click(
            analyze,
            inputs=[files, model_choice, entries_state, threshold, opacity, show_levels],
            outputs=[results_state, *outputs, status],
            api_name="analyze",
        )
        model_choice.change(lambda: 0.5, outputs=threshold, api_name=False)
        for control in (threshold, opacity, show_levels):
            control.change(
                render,
                inputs=[results_state, threshold, opacity, show_levels],
                outputs=outputs,
                api_name=False,
            )
    return demo


if __name__ == "__main__":
    build_demo().queue(default_concurrency_limit=2, max_size=64).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), max_file_size="50mb"
    )
