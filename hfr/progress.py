"""How far a training run is: its stage, the steps done, and batches reported as they finish."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from tqdm.auto import tqdm

Item = TypeVar("Item")


@dataclass(frozen=True)
class TrainingProgress:
    """Where a run is: ``done`` of ``total`` steps of ``stage`` (``"features"``, ``"epochs"`` or
    ``"calibration"``; the steps are batches, or epochs), with the last epoch's mean loss."""

    stage: str
    done: int
    total: int
    loss: float | None = None


ProgressCallback = Callable[[TrainingProgress], None]


def ignore_progress(_: TrainingProgress) -> None:
    """The progress callback of a run nobody watches."""


def batches(
    items: Sequence[Item], batch_size: int, stage: str, progress: bool, report: ProgressCallback
) -> Iterator[Sequence[Item]]:
    """Chunks of ``items`` (with a progress bar if ``progress``); each is reported to
    ``report`` once the caller is done with it."""
    starts = range(0, len(items), batch_size)
    total = len(starts)
    report(TrainingProgress(stage, 0, total))
    for done, start in enumerate(
        tqdm(starts, desc=stage, unit="batch", disable=not progress, leave=False), start=1
    ):
        yield items[start : start + batch_size]
        report(TrainingProgress(stage, done, total))
