"""The demo's event handlers, apart from its page: analyse uploads with a chosen model, redraw
for the sliders, add an image the user knows is normal to the model's calibration (this browser
tab's), train a model on uploaded normal images (queued, cancellable), publish it."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import gradio as gr
from huggingface_hub.errors import HfHubHTTPError

from hfr.config import AUTO, DEFAULT_INPUT_BUDGET, DEFAULT_INPUT_SIZE
from hfr.device import auto_device
from hfr.errors import HFRError, TrainingCancelled
from hfr.scoring.calibration import Calibration
from hfr.scoring.terms.position import ALIGNED_WEIGHT
from hfr.serving import studio
from hfr.serving.catalog import ModelCache, ModelEntry
from hfr.serving.results import Result, render, verdict
from hfr.serving.runtime import CACHES, MALLOC, run_model, run_training
from hfr.serving.training import TRAINING_RUNS, TrainingReporter, score_histogram, training_summary
from hfr.uploads import UploadLimits, read_uploads

MAX_IMAGES = 64
# Training in the browser: the limits stated on the page.
MAX_TRAIN_IMAGES = 300
MAX_TEST_IMAGES = 100
# Uploads are reduced to this side: the network sees at most 512x512's pixels (INPUT_CHOICES),
# and smaller copies keep 300 images in ~240 MB.
TRAIN_MAX_SIDE = 512
# The training tab's "Per-position statistics" choices: label, value, the weight it trains with.
POSITION_CHOICES = {
    "auto": ("Automatic: on when the images look aligned", AUTO),
    "on": ("On: every part sits in the same place (a fixed camera and fixture)", ALIGNED_WEIGHT),
    "off": ("Off: parts placed or turned at random", 0.0),
}
# The training tab's "Input size" choices: label, the input size it trains with.
INPUT_CHOICES = {
    "256": (f"{DEFAULT_INPUT_SIZE}x{DEFAULT_INPUT_SIZE}: the fastest", DEFAULT_INPUT_SIZE),
    "auto": (
        f"From the images: their aspect, up to {DEFAULT_INPUT_BUDGET}x{DEFAULT_INPUT_BUDGET}'s "
        "pixels (finer defects, about 4x the time at 512x512)",
        AUTO,
    ),
}
TRAINED_RUNS_KEPT = 16
TRAINED = "trained here"
TRAINING_INPUTS = 9  # files, name, encoder, epochs, position, input size, good, defective, entries


@dataclass(frozen=True)
class TabCalibration:
    """A model's calibration as one browser tab changed it, and the images marked normal there."""

    calibration: Calibration
    added: tuple[str, ...] = ()


def threshold_note(label: str, calibration: Calibration | None, changed_here: bool) -> str:
    """A sentence on the false-alarm rate the threshold of model ``label`` guarantees, and on
    how many more normal images would reach its target."""
    guarantee = calibration and calibration.guarantee()
    if not guarantee:
        return f"The threshold of {label} states no guarantee (calibrated before hfr 0.14)."
    where = " (recalibrated in this tab)" if changed_here else ""
    return f"False alarms of {label}{where}: {guarantee}."


def upload_paths(files) -> list[str]:
    """Paths of a File component's value (``None``, paths or file objects)."""
    return [f if isinstance(f, str) else f.name for f in files or []]


class DemoHandlers:
    """The handlers of one demo page: its model cache (:data:`hfr.serving.runtime.CACHES`
    holds it by name), its result and trained-model folders, and its encoders to train with.

    ``max_side`` bounds an analysed image's longest side, ``cache_size`` the models kept loaded;
    ``backend`` says what scores them (:data:`hfr.config.settings.BACKENDS`).
    """

    def __init__(self, *, max_side: int, cache_size: int, backend: str = "torch") -> None:
        self.max_side = max_side
        self.cache = ModelCache(capacity=cache_size, device=str(auto_device()), backend=backend)
        self.csv_dir = Path(tempfile.mkdtemp(prefix="hfr-app-"))
        self.trained_root = Path(tempfile.mkdtemp(prefix="hfr-trained-"))
        self.cache_name = self.csv_dir.name
        CACHES[self.cache_name] = self.cache
        self.encoders = studio.available_encoders()

    def analyze(
        self, files, model_label, entries, calibrations, threshold, opacity, show_levels,
        progress=gr.Progress(),
    ):  # fmt: skip
        """Score the uploaded images, with this tab's calibration of the model where it has
        one, and draw their overlays."""
        if not files:
            raise gr.Error("Upload one or more images first.", print_exception=False)
        entry = next((e for e in entries if e.label == model_label), None)
        if entry is None:
            raise gr.Error("Pick a model first.", print_exception=False)
        uploads = read_uploads(upload_paths(files), UploadLimits(MAX_IMAGES, self.max_side))
        notices = uploads.notices + uploads.changes
        if not uploads.images:
            raise gr.Error(
                "None of the files is a readable image.<br>" + "<br>".join(notices),
                print_exception=False,
            )
        loading = "Scoring ..." if entry.source in self.cache else f"Loading {entry.label} ..."
        progress(0.1, desc=loading)
        began = time.perf_counter()
        own = calibrations.get(entry.label)
        predictions, calibration, device = run_model(
            self.cache_name, entry, uploads.pixels, own and own.calibration
        )
        seconds = time.perf_counter() - began
        pairs = list(zip(uploads.images, predictions, strict=True))
        results = [
            Result.of(name, rgb, p, calibration.threshold / 3, model=entry.label)
            for (name, rgb), p in pairs
        ]
        notices += [f"`{name}`: {note}." for (name, _), p in pairs for note in p.notes]
        results.sort(key=lambda r: r.normalized_score, reverse=True)
        each = 1000 * seconds / len(results)
        notices.append(
            f"{len(results)} image(s) analysed in {seconds:.2f} s ({each:.0f} ms per image) "
            f"on {device}."
        )
        notices.append(threshold_note(entry.label, calibration, own is not None))
        shown = render(results, threshold, opacity, show_levels, self.csv_dir)
        MALLOC.trim()
        return (results, *shown, "\n\n".join(notices))

    def mark_normal(
        self, name, results, entries, calibrations, threshold, opacity, show_levels
    ) -> tuple:
        """Add the analysed image ``name``, which the user knows is normal, to the normal images
        the model that scored it was calibrated on (for this browser tab only), recalibrate,
        redraw the results with the new threshold, and save the recalibrated model to download
        or push."""
        result = next((r for r in results if r.name == name), None)
        if result is None:
            raise gr.Error(
                "Analyse images, then pick the one that is normal.", print_exception=False
            )
        entry = next((e for e in entries if e.label == result.model), None)
        if entry is None:
            raise gr.Error(f"{result.model} is no longer listed.", print_exception=False)
        try:
            model = self.cache.get(entry.source)
        except HFRError as error:
            raise gr.Error(
                f"Could not load {entry.label}: {error}", print_exception=False
            ) from error
        own = calibrations.get(entry.label) or TabCalibration(model.config.calibration)
        if name in own.added:
            raise gr.Error(f"`{name}` is already among the normal images.", print_exception=False)
        try:
            after = own.calibration.with_scores([result.score])
        except HFRError as error:
            raise gr.Error(f"Cannot add it: {error}", print_exception=False) from error
        calibrations = {**calibrations, entry.label: TabCalibration(after, (*own.added, name))}
        updated = [r.recalibrated(own.calibration, after) for r in results]
        changed = sum(
            verdict(old, threshold) != verdict(new, threshold)
            for old, new in zip(results, updated, strict=True)
        )
        folder, archive = studio.save_recalibrated(model, after, entry.label, self.trained_root)
        marked = next(r for r in updated if r.name == name)
        status = (
            f"Added `{name}` (now {marked.normalized_score:.3f}, {verdict(marked, threshold)}) "
            f"to the normal images of {entry.label}: its threshold moved from "
            f"{own.calibration.threshold:.4g} to {after.threshold:.4g} (raw score), and "
            f"{changed} of the {len(updated)} images on screen changed verdict. "
            + threshold_note(entry.label, after, True)
            + " Download it below, or push it from the *Train your own* tab."
        )
        results = updated
        shown = render(results, threshold, opacity, show_levels, self.csv_dir)
        download = gr.update(value=str(archive), visible=True)
        return (calibrations, results, *shown, status, download, str(folder))

    def redraw(self, results, threshold, opacity, show_levels):
        """Draw the kept results again for new slider values."""
        return render(results, threshold, opacity, show_levels, self.csv_dir)

    def queue_training(
        self, files, name, encoder_label, epochs, position, input_size, good_files,
        defective_files, entries, request: gr.Request,
    ) -> tuple[dict, ...]:  # fmt: skip
        """Take a ticket for a training as it joins the queue, so that Cancel reaches it there
        (Gradio runs an event's validator, with the event's inputs, when the event is queued).
        Every input passes: :meth:`train` checks them and says what is wrong."""
        TRAINING_RUNS.take(request.session_hash)
        return tuple(gr.validate(True, "") for _ in range(TRAINING_INPUTS))

    def train(
        self, files, name, encoder_label, epochs, position, input_size, good_files,
        defective_files, entries, request: gr.Request, progress=gr.Progress(),
    ):  # fmt: skip
        """Train a category on the uploaded normal images and offer it in the first tab."""
        ticket = TRAINING_RUNS.start(request.session_hash)
        try:
            uploads = (files, good_files, defective_files)
            choices = (encoder_label, position, input_size)
            return self._train(ticket, uploads, name, choices, epochs, entries, progress)
        finally:
            TRAINING_RUNS.close(ticket)
            MALLOC.trim()

    def _train(self, ticket, uploads, name, choices, epochs, entries, progress):
        """:meth:`train` for the run of ``ticket``: checks, uploads, training, results
        (``choices``: the encoder's label, the position and input size choices)."""
        hidden = gr.update(visible=False)
        not_started = (entries, gr.update(), "**Training cancelled before it started.**")
        if TRAINING_RUNS.cancelled(ticket):
            return (*not_started, hidden, hidden, None)
        self._check_training_inputs(uploads[0], name, *choices)
        encoder_label, position, input_size = choices
        normal, good, defective = (
            read_uploads(upload_paths(files), UploadLimits(count, TRAIN_MAX_SIDE))
            for files, count in zip(
                uploads, (MAX_TRAIN_IMAGES, MAX_TEST_IMAGES, MAX_TEST_IMAGES), strict=True
            )
        )
        if TRAINING_RUNS.cancelled(ticket):  # pressed while the uploads were decoded
            return (*not_started, hidden, hidden, None)
        studio.prune_runs(self.trained_root, TRAINED_RUNS_KEPT - 1)
        settings = replace(
            self.encoders[encoder_label],
            position_weight=POSITION_CHOICES[position][1],
            input_size=INPUT_CHOICES[input_size][1],
        )
        try:
            trained = run_training(
                name,
                (normal.pixels, good.pixels, defective.pixels),
                settings,
                int(epochs) or None,
                self.trained_root,
                TrainingReporter(progress, ticket),
            )
        except TrainingCancelled as error:
            return entries, gr.update(), f"**Training {error}.**", hidden, hidden, None
        except HFRError as error:
            raise gr.Error(f"Training failed: {error}", print_exception=False) from error
        return self._trained(trained, entries, (normal, good, defective))

    def _check_training_inputs(self, files, name, encoder_label, position, input_size) -> None:
        """Refuse, with a message on the page, what cannot be trained."""
        if not files:
            raise gr.Error("Upload normal images (files or a .zip) first.", print_exception=False)
        if encoder_label not in self.encoders:
            raise gr.Error(
                f"Pick one of the encoders {list(self.encoders)}.", print_exception=False
            )
        if position not in POSITION_CHOICES:
            raise gr.Error(f"Pick one of {list(POSITION_CHOICES)}.", print_exception=False)
        if input_size not in INPUT_CHOICES:
            raise gr.Error(f"Pick one of {list(INPUT_CHOICES)}.", print_exception=False)
        try:
            studio.model_name(name)
        except HFRError as error:
            raise gr.Error(f"Training failed: {error}", print_exception=False) from error

    def _trained(self, trained: studio.TrainedModel, entries, uploads) -> tuple:
        """The page's updates for a finished training: the model list, the summary, the
        histogram of the test scores, the download and the folder to push."""
        entry = ModelEntry(f"hfr-{trained.name} ({TRAINED})", str(trained.folder), "trained")
        entries = [e for e in entries if e.label != entry.label] + [entry]
        notices = [notice for upload in uploads for notice in upload.notices]
        changed = sum(len(upload.changes) for upload in uploads)
        if changed:
            notices.append(f"{changed} image(s) were reduced (size or frames) before use.")
        histogram = gr.update(visible=False)
        if trained.labels.size:
            data = score_histogram(trained.normalized_scores, trained.labels)
            histogram = gr.update(value=data, visible=True)
        return (
            entries,
            gr.update(choices=[e.label for e in entries], value=entry.label),
            training_summary(trained, notices),
            histogram,
            gr.update(value=str(trained.archive), visible=True),
            str(trained.folder),
        )

    @staticmethod
    def cancel(request: gr.Request) -> str:
        """Stop this session's training after its current step, or before it starts."""
        state = TRAINING_RUNS.cancel(request.session_hash)
        if state is None:
            return "No training of yours is queued or running."
        if state == "queued":
            return "Cancelled: your training will not start."
        return "Cancelling after the current step ..."

    @staticmethod
    def push(folder, token, oauth_token: gr.OAuthToken | None):
        """Publish the session's last trained model as ``<user>/hfr-<name>``."""
        if not folder:
            raise gr.Error("Train a model first.", print_exception=False)
        token = (token or "").strip() or (oauth_token.token if oauth_token else "")
        if not token:
            raise gr.Error(
                "Sign in with Hugging Face, or paste a token with write access.",
                print_exception=False,
            )
        try:
            repo_id, _ = studio.push_trained(Path(folder), token)
        except (HFRError, HfHubHTTPError, OSError) as error:
            raise gr.Error(f"Push failed: {error}", print_exception=False) from error
        return f'Pushed to **{repo_id}**. Load it anywhere with `HFR.from_pretrained("{repo_id}")`.'
