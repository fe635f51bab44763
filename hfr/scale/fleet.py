"""Many categories of one dataset, each trained into its own folder: one after another in this
process, or one Ray task per category on a cluster (``ray_address``). A failed category is
reported with its error and never stops the others; a finished one is skipped when run again,
and an interrupted one resumes from its checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from hfr.config import CONFIG_FILE, WEIGHTS_FILE
from hfr.data import load_mvtec
from hfr.hub import repo_name
from hfr.pipeline import ModelSettings, RunOptions, train_category

logger = logging.getLogger(__name__)
FINISHED, TRAINED, FAILED = "finished earlier", "trained", "failed"


@dataclass(frozen=True)
class CategoryJob:
    """One category to train: where its data is, what it is called and where it goes."""

    data: str
    dataset_name: str
    category: str
    output: str

    @classmethod
    def of(cls, data: str | Path, dataset_name: str, category: str, output_root: str | Path):
        """The job of ``category``, saved as ``<output_root>/hfr-<dataset>-<category>``."""
        folder = Path(output_root) / repo_name(dataset_name, category)
        return cls(str(data), dataset_name, category, str(folder))

    @property
    def finished(self) -> bool:
        """Whether a completed (calibrated) model is already in the output folder."""
        folder = Path(self.output)
        try:
            config = json.loads((folder / CONFIG_FILE).read_text())
        except (OSError, ValueError):
            return False
        return (folder / WEIGHTS_FILE).is_file() and bool(config.get("calibration"))


@dataclass(frozen=True)
class Outcome:
    """What happened to one category: ``status`` is trained, finished earlier or failed."""

    category: str
    status: str
    output: str
    detail: str = ""
    began: float = 0.0  # time.time() when its training began and ended (0: not trained here)
    ended: float = 0.0
    process: int = 0

    def __str__(self) -> str:
        return f"{self.category}: {self.status}" + (f" ({self.detail})" if self.detail else "")


def train_job(
    job: CategoryJob, settings: ModelSettings, options: RunOptions, evaluate: bool
) -> Outcome:
    """Train one category unless it is finished; any error becomes a failed outcome."""
    if job.finished:
        return Outcome(job.category, FINISHED, job.output)
    began = time.time()
    try:
        dataset = load_mvtec(job.data, job.category, name=job.dataset_name)
        model, result = train_category(
            dataset, job.output, settings=settings, options=options, run_evaluation=evaluate
        )
    except Exception as error:  # one category's failure must not lose the others
        logger.exception("category %s failed", job.category)
        return Outcome(job.category, FAILED, job.output, f"{type(error).__name__}: {error}")
    seconds = model.config.training.get("seconds")
    detail = f"{seconds} s on {model.device}"
    if result.resumed_epochs:
        detail += f", resumed at epoch {result.resumed_epochs}"
    return Outcome(job.category, TRAINED, job.output, detail, began, time.time(), os.getpid())


def train_all(
    jobs: Sequence[CategoryJob],
    settings: ModelSettings,
    options: RunOptions,
    *,
    evaluate: bool = False,
    ray_address: str | None = None,
    gpus_per_task: float = 0.0,
    cpus_per_task: float = 1.0,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Train every job; with ``ray_address`` (an address, ``auto`` or ``local``) as one Ray task
    each, asking for ``gpus_per_task`` (fractions share a GPU) and ``cpus_per_task``.

    ``on_outcome`` hears of each category as soon as it is done (in completion order); the
    list returned is in the order of ``jobs``.

    Example:
        >>> jobs = [CategoryJob.of("data", "mvtec_ad", c, "models") for c in ("bottle", "screw")]
        >>> train_all(jobs, ModelSettings(), RunOptions(), ray_address="local")  # doctest: +SKIP
    """
    report = on_outcome or (lambda _: None)
    options = replace(options, progress=options.progress and ray_address is None)
    if ray_address is None:
        outcomes = []
        for job in jobs:
            outcomes.append(train_job(job, settings, options, evaluate))
            report(outcomes[-1])
        return outcomes
    from hfr.scale.runtime import connect

    ray = connect(ray_address)
    remote = ray.remote(num_cpus=cpus_per_task, num_gpus=gpus_per_task, max_retries=0)(
        _train_in_worker
    )
    pending = {
        remote.remote(job, settings, options, evaluate, cpus_per_task): job
        for job in jobs
        if not job.finished
    }
    outcomes = {job.category: Outcome(job.category, FINISHED, job.output) for job in jobs}
    for job in jobs:
        if job.finished:
            report(outcomes[job.category])
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        job = pending.pop(done[0])
        try:
            outcome = ray.get(done[0])
        except Exception as error:  # the worker itself died (killed, out of memory)
            outcome = Outcome(job.category, FAILED, job.output, f"{type(error).__name__}: {error}")
        outcomes[job.category] = outcome
        report(outcome)
    return [outcomes[job.category] for job in jobs]


def _train_in_worker(
    job: CategoryJob, settings: ModelSettings, options: RunOptions, evaluate: bool, cpus: float
) -> Outcome:
    """A Ray task: one category with the worker's share of the CPU threads."""
    import torch

    torch.set_num_threads(max(1, int(cpus)))
    return train_job(job, settings, options, evaluate)
