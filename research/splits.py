"""The images a trained model held out for calibration, as training chose them: the studies
recalibrate on exactly these."""

from __future__ import annotations

from collections.abc import Sequence

from hfr import HFR
from hfr.images import ImageInput
from hfr.train import training_split


def held_out_images(model: HFR, images: Sequence[ImageInput]) -> list[ImageInput]:
    """The images that training ``model`` on ``images`` held out for calibration (the second
    part of :func:`hfr.train.training_split`)."""
    return training_split(model, images)[1]
