"""The demo's training runs as the page shows them: the progress bar, Cancel, and the summary
and score histogram of a finished run."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from hfr.errors import TrainingCancelled
from hfr.progress import TrainingProgress
from hfr.serving import studio

# The trainings queued or running, by session; and what a stage is of the whole bar.
TRAINING_RUNS = studio.TrainingTickets()
_STAGE_SPANS = {
    "features": (0.0, 0.15),
    "epochs": (0.15, 0.9),
    "calibration": (0.9, 0.95),
    "evaluation": (0.95, 1.0),
}


class TrainingReporter:
    """Moves the page's progress bar with a training run, and stops the run (by raising
    :class:`TrainingCancelled` from its progress callback) once its session pressed Cancel.

    It holds the run's ticket, not its cancel flag, so that ZeroGPU can pickle it into its GPU
    worker (where the flag of the app's process is not seen: there a run cannot be cancelled).
    """

    def __init__(self, progress: Callable[..., None], ticket: str) -> None:
        self.progress = progress
        self.ticket = ticket
        self.epochs_done = 0

    def __call__(self, update: TrainingProgress) -> None:
        if TRAINING_RUNS.cancelled(self.ticket):
            raise TrainingCancelled(f"cancelled after {self.epochs_done} epoch(s)")
        if update.stage == "epochs":
            self.epochs_done = update.done
        start, end = _STAGE_SPANS[update.stage]
        fraction = start + (end - start) * update.done / max(update.total, 1)
        self.progress(fraction, desc=describe_progress(update))


def describe_progress(update: TrainingProgress) -> str:
    """The progress bar's text for one update."""
    if update.stage == "epochs":
        loss = "" if update.loss is None else f", loss {update.loss:.4f}"
        return f"Epoch {update.done}/{update.total}{loss}"
    names = {
        "features": "Extracting features",
        "calibration": "Calibrating on held-out normal images",
        "evaluation": "Scoring the test images",
    }
    return f"{names[update.stage]} ({update.done}/{update.total})"


def score_histogram(scores: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """Counts of good and defective test images per tenth of the normalised score."""
    edges = np.linspace(0.0, 1.0, 11)
    rows = []
    for label, kind in ((0, "good"), (1, "defective")):
        counts, _ = np.histogram(scores[labels == label], bins=edges)
        rows += [
            {"normalised score": f"{low:.1f}-{high:.1f}", "images": int(count), "test set": kind}
            for low, high, count in zip(edges[:-1], edges[1:], counts, strict=True)
        ]
    return pd.DataFrame(rows)


def training_summary(trained: studio.TrainedModel, notices: list[str]) -> str:
    """What was trained, how long it took, and how it did on the labelled test images."""
    training, calibration = trained.config.training, trained.config.calibration
    lines = [
        f"Trained **hfr-{trained.name}** on {training['num_train_images']} normal images "
        f"({training['num_calibration_images']} more held out for calibration), "
        f"{training['epochs']} epochs, in {trained.seconds:.1f} s on {training['device']} "
        f"({training['precision']}): "
        f"final loss {training['final_loss']:.4f}, threshold {calibration.threshold:.4f}. "
        "It is now in the model list of the *Try a model* tab (this session only)."
    ]
    resolution = training.get("resolution")
    if resolution:
        hint = training.get("resolution_hint")
        lines.append(resolution[0].upper() + resolution[1:] + (f"; {hint}." if hint else "."))
    evaluation = trained.config.evaluation or {}
    if "image_auroc" in evaluation:
        lines.append(f"Image AUROC on your test images: **{evaluation['image_auroc']:.3f}**.")
    rates = {"threshold_tpr": "defective", "threshold_fpr": "good"}
    flagged = [
        f"{100 * evaluation[key]:.0f} % of the {kind} images"
        for key, kind in rates.items()
        if key in evaluation
    ]
    if flagged:
        lines.append("Flagged at the calibrated threshold (0.5): " + ", ".join(flagged) + ".")
    guarantee = calibration.guarantee()
    if guarantee:
        lines.append(f"False alarms: {guarantee}.")
    warning = calibration.tail_warning()
    if warning:
        lines.append(f"Warning: {warning[0].upper()}{warning[1:]}.")
    lines += [f"{note}." for note in training.get("term_notes", [])]
    return "\n\n".join(lines + list(trained.notes) + notices[:10])
