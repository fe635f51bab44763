"""HFR demo: anomaly scores, verdicts and heat-map overlays for uploaded images.

python app.py  # http://127.0.0.1:7860

Settings come from the environment when the app starts (never at import): HFR_HUB_ORG (the Hub
organisation whose hfr-* repos are offered; empty: no Hub), HFR_MODEL_DIRS (model folders,
separated by ':'), HFR_EXAMPLES_DIR, HFR_MAX_SIDE, HFR_MODEL_CACHE, HFR_CONCURRENCY,
HFR_TEMP_MAX_AGE (seconds an upload or result file is kept) and HFR_BACKEND ("torch", or
"onnxruntime": each model exported to ONNX in the background and run by ONNX Runtime on the CPU
once ready; needs hfr[export]). A Space deployed by
scripts/deploy_space.py carries its defaults in space_settings.json beside this file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from hfr.errors import TrainingCancelled
from hfr.images import list_images
from hfr.progress import TrainingProgress
from hfr.serving import studio
from hfr.serving.catalog import discover_models
from hfr.serving.handlers import (
    INPUT_CHOICES,
    MAX_IMAGES,
    MAX_TEST_IMAGES,
    MAX_TRAIN_IMAGES,
    POSITION_CHOICES,
    TRAIN_MAX_SIDE,
    DemoHandlers,
)
from hfr.serving.results import CSV_FILES_KEPT, Result, converted, render, write_csv, write_overlay
from hfr.serving.runtime import CACHES as _CACHES
from hfr.serving.runtime import MALLOC, run_model, serving_backend, start_upload_sweeper
from hfr.serving.training import TRAINING_RUNS as _TRAINING_RUNS
from hfr.serving.training import TrainingReporter, training_summary

__all__ = [  # the app's names that its tests and scripts/app_latency.py use
    "CSV_FILES_KEPT",
    "MAX_IMAGES",
    "_CACHES",
    "_TRAINING_RUNS",
    "AppSettings",
    "Result",
    "TrainingCancelled",
    "TrainingProgress",
    "TrainingReporter",
    "build_demo",
    "converted",
    "example_rows",
    "render",
    "run_model",
    "training_summary",
    "write_csv",
    "write_overlay",
]
SPACE_SETTINGS_FILE = Path(__file__).with_name("space_settings.json")
MAX_EXAMPLES = 12
MAX_EPOCHS = 100
AUTO_EPOCHS = 0  # the slider's default: the library's choice (50, more for few images)


@dataclass(frozen=True)
class AppSettings:
    """Where models and examples come from, and the app's limits."""

    hub_org: str = "hfr-anomaly"
    model_dirs: tuple[str, ...] = ()
    examples_dir: str = "examples"
    max_side: int = 1600
    cache_size: int = 3
    concurrency: int = 2
    temp_max_age: int = 900
    backend: str = "torch"

    @classmethod
    def load(
        cls, environ: Mapping[str, str] | None = None, space_file: Path = SPACE_SETTINGS_FILE
    ) -> AppSettings:
        """Defaults, then ``space_settings.json`` (a deployed Space), then the environment."""
        settings = cls()
        if space_file.is_file():
            settings = replace(settings, **json.loads(space_file.read_text()))
        environ = os.environ if environ is None else environ
        names = {
            "hub_org": "HFR_HUB_ORG",
            "examples_dir": "HFR_EXAMPLES_DIR",
            "max_side": "HFR_MAX_SIDE",
            "cache_size": "HFR_MODEL_CACHE",
            "concurrency": "HFR_CONCURRENCY",
            "temp_max_age": "HFR_TEMP_MAX_AGE",
            "backend": "HFR_BACKEND",
        }
        kinds = {f.name: f.type for f in fields(cls)}
        for name, variable in names.items():
            if variable in environ:
                value = environ[variable]
                settings = replace(
                    settings, **{name: int(value) if kinds[name] == "int" else value}
                )
        if "HFR_MODEL_DIRS" in environ:
            dirs = tuple(p for p in environ["HFR_MODEL_DIRS"].split(":") if p)
            settings = replace(settings, model_dirs=dirs)
        return settings


def example_rows(folder: Path, labels: list[str]) -> list[list]:
    """Clickable examples: ``<category>_<anything>`` images, each with the first model whose
    label names that category (``hfr-<dataset>-<category>-...``); others are left out."""
    if not folder.is_dir():
        return []
    rows = []
    for path in list_images(folder)[:MAX_EXAMPLES]:
        category = path.stem.split("_", 1)[0]
        label = next(
            (lb for lb in labels if f"-{category}-" in lb or lb.endswith(f"-{category}")), None
        )
        if label is not None:
            rows.append([[str(path)], label])
    return rows


def build_demo(settings: AppSettings | None = None) -> gr.Blocks:
    """The demo's page (a tab to try models, a tab to train one), wired to its handlers."""
    settings = settings or AppSettings()
    handlers = DemoHandlers(
        max_side=settings.max_side,
        cache_size=settings.cache_size,
        backend=serving_backend(settings.backend),
    )
    entries, note = discover_models([Path(p) for p in settings.model_dirs], settings.hub_org)
    labels = [e.label for e in entries]
    examples = example_rows(Path(__file__).parent / settings.examples_dir, labels)
    on_space = bool(os.environ.get("SPACE_ID") and os.environ.get("OAUTH_CLIENT_ID"))
    # Gradio keeps every upload and returned file in its cache: delete them after
    # temp_max_age seconds, checked once a minute (or sooner for short ages).
    delete_cache = (min(60, settings.temp_max_age), settings.temp_max_age)
    with gr.Blocks(title="HFR anomaly detection", delete_cache=delete_cache) as demo:
        _header(note)
        state = SimpleNamespace(
            entries=gr.State(entries),
            results=gr.State([]),
            trained=gr.State(None),
            calibrations=gr.State({}),  # this tab's recalibrated models, by label
        )
        try_tab = _try_tab(labels, examples)
        train_tab = _train_tab(handlers.encoders, on_space)
        _wire(handlers, state, try_tab, train_tab)
    return demo.queue(default_concurrency_limit=settings.concurrency, max_size=64)


def _header(note: str | None) -> None:
    """What the page is, what the bundled models and examples are, and ``note``."""
    gr.Markdown(
        "# HFR: unsupervised anomaly detection\n"
        "Upload images of the chosen category. Each image gets a score (0-1, the model's "
        "calibrated threshold at 0.5), a verdict, and a heat map with the anomalous region "
        "outlined. Or train a detector for your own part on its normal images in the second "
        "tab. Paper: [arXiv 2405.09148](https://arxiv.org/abs/2405.09148). The bundled "
        "models are trained on MVTec AD *bottle* and *screw*, and the examples are MVTec AD "
        "test images ([MVTec](https://www.mvtec.com/company/research/datasets/mvtec-ad), "
        "CC BY-NC-SA 4.0, non-commercial)." + (f"\n\n*{note}*" if note else "")
    )


def _try_tab(labels: list[str], examples: list[list]) -> SimpleNamespace:
    """The first tab: pick a model, upload images, read scores, verdicts and overlays."""
    with gr.Tab("Try a model", elem_id="try-tab"), gr.Row():
        with gr.Column(scale=1):
            model_choice = gr.Dropdown(
                labels, value=labels[0] if labels else None, label="Model", elem_id="model"
            )
            files = gr.File(file_count="multiple", label="Images (or a .zip)", elem_id="files")
            threshold = gr.Slider(
                0.0, 1.0, value=0.5, step=0.01, label="Threshold (0.5 = calibrated)"
            )
            opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Heat-map opacity")
            show_levels = gr.Checkbox(label="Show the three per-level residual maps (top image)")
            button = gr.Button("Analyse", variant="primary")
            if examples:
                # the hidden image only gives each example its thumbnail in the table
                preview = gr.Image(type="filepath", visible=False)
                gr.Examples(
                    [[paths[0], paths, label] for paths, label in examples],
                    inputs=[preview, files, model_choice],
                    label="Examples (MVTec AD, CC BY-NC-SA 4.0): click one, then Analyse",
                )
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
            normal = _normal_images_panel()
    return SimpleNamespace(
        model_choice=model_choice, files=files, threshold=threshold, opacity=opacity,
        show_levels=show_levels, button=button, status=status,
        outputs=[gallery, table, csv_file, levels], **vars(normal),
    )  # fmt: skip


def _normal_images_panel() -> SimpleNamespace:
    """Under the results: mark an analysed image as normal, which adds it to the model's
    calibration in this browser tab; the recalibrated model to download."""
    with gr.Accordion("Is a flagged image normal? Add it to the calibration", open=True):
        with gr.Row():
            choice = gr.Dropdown(
                [],
                label="An analysed image you know is normal",
                elem_id="normal-choice",
                allow_custom_value=True,  # the choices follow the analysis in the browser only
                scale=2,
            )
            button = gr.Button("This is normal", elem_id="mark-normal", scale=1)
        status = gr.Markdown(elem_id="calibration-status")
        download = gr.DownloadButton(
            "Download the recalibrated model (.zip)", visible=False, elem_id="recalibrated"
        )
    return SimpleNamespace(
        normal_choice=choice, normal_button=button, calibration_status=status,
        recalibrated=download,
    )  # fmt: skip


def _train_tab(encoders: dict, on_space: bool) -> SimpleNamespace:
    """The second tab: train a model on uploaded normal images, check it, download or push it."""
    with gr.Tab("Train your own", elem_id="train-tab"):
        gr.Markdown(
            f"Upload {studio.MIN_NORMAL_IMAGES} to {MAX_TRAIN_IMAGES} images of your part "
            "without defects (image files or .zip archives, 50 MB per file; 50 or more give "
            f"a steadier model). They are reduced to {TRAIN_MAX_SIDE} px on their longest "
            "side; the network sees 256x256, or, with the input size from the images, up to "
            f"{TRAIN_MAX_SIDE}x{TRAIN_MAX_SIDE}'s pixels at their aspect. 10 % are held out "
            "to set the threshold. One "
            "training runs at a time: others wait in a queue, with their position shown. "
            "Optionally add labelled test images (up to "
            f"{MAX_TEST_IMAGES} each) to see how well good and defective ones are told apart."
        )
        with gr.Row():
            with gr.Column(scale=1):
                train_files = gr.File(
                    file_count="multiple",
                    label="Normal images (files or .zip)",
                    elem_id="train-files",
                )
                train_name = gr.Textbox(
                    label=f"Name (ASCII letters, digits and dashes, at most "
                    f"{studio.MAX_NAME_LENGTH})",
                    placeholder="my-part",
                    max_length=studio.MAX_NAME_LENGTH,
                    elem_id="train-name",
                )
                encoder_choice = gr.Dropdown(
                    list(encoders),
                    value=next(iter(encoders), None),
                    label="Encoder (frozen, ImageNet weights)",
                )
                epochs = gr.Slider(
                    AUTO_EPOCHS, MAX_EPOCHS, value=AUTO_EPOCHS, step=1,
                    label="Epochs (0: automatic, 50 or more for few images)",
                    elem_id="train-epochs",
                )  # fmt: skip
                position = gr.Radio(
                    [(label, value) for value, (label, _) in POSITION_CHOICES.items()],
                    value="off",
                    label="Per-position statistics (automatic: on from 40 training images "
                    "whose parts sit in the same place)",
                    elem_id="train-position",
                )
                input_size = gr.Radio(
                    [(label, value) for value, (label, _) in INPUT_CHOICES.items()],
                    value="256",
                    label="Input size (the summary says what the network saw and its cost)",
                    elem_id="train-input-size",
                )
                with gr.Accordion(
                    "Labelled test images (optional)", open=False, elem_id="test-images"
                ):
                    good_files = gr.File(file_count="multiple", label="Good", elem_id="test-good")
                    defective_files = gr.File(
                        file_count="multiple", label="Defective", elem_id="test-defective"
                    )
                with gr.Row():
                    train_button = gr.Button("Train", variant="primary")
                    cancel_button = gr.Button("Cancel", variant="stop")
            with gr.Column(scale=1):
                results = _train_results(on_space)
    return SimpleNamespace(
        inputs=[train_files, train_name, encoder_choice, epochs, position, input_size,
                good_files, defective_files],
        train_button=train_button, cancel_button=cancel_button, **vars(results),
    )  # fmt: skip


def _train_results(on_space: bool) -> SimpleNamespace:
    """The training tab's right column: the run's summary, its test scores, the download and
    the push to the visitor's Hub account (signed in on a Space, by token elsewhere)."""
    train_status = gr.Markdown(elem_id="train-status")
    histogram = gr.BarPlot(
        x="normalised score",
        y="images",
        color="test set",
        title="Scores of your test images (threshold at 0.5)",
        visible=False,
        elem_id="histogram",
    )
    download = gr.DownloadButton("Download the model (.zip)", visible=False, elem_id="download")
    gr.Markdown(
        "**Publish it** as `<your user>/hfr-<name>` on the Hugging Face Hub:"
        + (" sign in," if on_space else " paste a token with write access,")
        + " then push."
    )
    if on_space:
        gr.LoginButton()
    token = gr.Textbox(label="Hub token (write access)", type="password", visible=not on_space)
    push_button = gr.Button("Push to my Hub account")
    push_status = gr.Markdown(elem_id="push-status")
    return SimpleNamespace(
        status=train_status, histogram=histogram, download=download, token=token,
        push_button=push_button, push_status=push_status,
    )  # fmt: skip


def _wire(
    handlers: DemoHandlers,
    state: SimpleNamespace,
    try_tab: SimpleNamespace,
    train_tab: SimpleNamespace,
) -> None:
    """Connect the page's controls to the handlers (the API names are the gradio_client's)."""
    view = [try_tab.threshold, try_tab.opacity, try_tab.show_levels]
    try_tab.button.click(
        handlers.analyze,
        inputs=[try_tab.files, try_tab.model_choice, state.entries, state.calibrations, *view],
        outputs=[state.results, *try_tab.outputs, try_tab.status],
        api_name="analyze",
    ).then(
        lambda results: gr.update(choices=[r.name for r in results], value=None),
        inputs=state.results,
        outputs=try_tab.normal_choice,
        api_name=False,
    )
    try_tab.normal_button.click(
        handlers.mark_normal,
        inputs=[try_tab.normal_choice, state.results, state.entries, state.calibrations, *view],
        outputs=[state.calibrations, state.results, *try_tab.outputs, try_tab.calibration_status,
                 try_tab.recalibrated, state.trained],
        api_name="mark_normal",
    )  # fmt: skip
    try_tab.model_choice.change(lambda: 0.5, outputs=try_tab.threshold, api_name=False)
    for control in view:
        control.change(
            handlers.redraw, inputs=[state.results, *view], outputs=try_tab.outputs, api_name=False
        )
    train_tab.train_button.click(
        handlers.train,
        inputs=[*train_tab.inputs, state.entries],
        outputs=[state.entries, try_tab.model_choice, train_tab.status, train_tab.histogram,
                 train_tab.download, state.trained],
        api_name="train",
        validator=handlers.queue_training,
        concurrency_limit=1,
        concurrency_id="training",
    )  # fmt: skip
    train_tab.cancel_button.click(
        handlers.cancel, outputs=train_tab.status, api_name="cancel", concurrency_limit=None
    )
    train_tab.push_button.click(
        handlers.push,
        inputs=[state.trained, train_tab.token],
        outputs=train_tab.push_status,
        api_name="push",
    )


def main() -> None:
    """Read the settings, build the page, serve it."""
    settings = AppSettings.load()
    MALLOC.limit_arenas()
    start_upload_sweeper(settings.temp_max_age)
    build_demo(settings).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), max_file_size="50mb"
    )


if __name__ == "__main__":
    main()
