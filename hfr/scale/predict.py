"""Scoring a large image set on Ray: Ray Data reads and decodes the images in parallel tasks, a
pool of predictor actors (one model load each) scores them in batches, and this process appends
every scored batch to ``scores.csv`` (and ``scores-parquet/``) as it arrives. An interrupted run
keeps what it finished; run again with ``resume``, it scores only the rest.

The actors score with :meth:`HFR.predict` on the decoded pixels, as single-process ``hfr
predict`` does, so the scores are the same. Overlays are written by the actors into the output
folder: on a cluster it must be storage every node sees.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from hfr.errors import HFRError, ImageLoadError
from hfr.extras import require
from hfr.scale.runtime import connect
from hfr.serving.outputs import ResultsWriter, csv_row, prediction_row, save_overlay, unique_names
from hfr.sources import read_source

logger = logging.getLogger(__name__)
PARQUET_DIR = "scores-parquet"
# Decoding tasks share the cores with the actors' OpenMP threads, which by default spin while
# they wait: passive waiting gave 1 actor 19.2 images/s after start-up where spinning gave 17.1
# (scripts/ray_benchmark.py, 2 CPUs, 1200 images; the single process 20.5).
WORKER_ENV = {"env_vars": {"OMP_WAIT_POLICY": "PASSIVE"}}
# One dataset row is one chunk of ``batch_size`` consecutive images, as single-process predict
# batches them: on a CPU a convolution's float32 result can depend on the batch it runs in.
CHUNK_FIELDS = ("images", "names", "pixels", "errors", "notes")
ROW_FIELDS = ("image", "score", "normalized_score", "is_anomalous", "threshold", "overlay", "notes")


@dataclass(frozen=True)
class RayPredictOptions:
    """Where and how: the Ray address, the actor pool, batches, the verdict and the outputs."""

    address: str = "local"
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float | None = None  # None: the CPUs left after decoding, shared out
    decode_cpus: float = 0.5
    batch_size: int = 16
    threshold: float = 0.5
    opacity: float = 0.5
    overlays: bool = True


@dataclass(frozen=True)
class RunCount:
    """What a run did: images scored, flagged, unreadable, skipped (done before), seconds."""

    scored: int
    flagged: int
    failed: int
    skipped: int
    seconds: float


class Scorer:
    """A Ray actor: loads the model once, then scores one chunk of decoded images per call."""

    def __init__(self, model: str, options: RayPredictOptions, output: str) -> None:
        from hfr.device import auto_device
        from hfr.model import HFR

        self.threads = max(1, math.ceil(options.cpus_per_worker))
        device = auto_device("cuda" if options.gpus_per_worker > 0 else "cpu")
        self.model = HFR.from_pretrained(model, map_location=device)
        self.options = options
        self.output = Path(output)

    def __call__(self, chunks: dict[str, np.ndarray]) -> dict[str, list]:
        import torch

        # OpenMP's thread count is per calling thread, and Ray Data calls from its own threads.
        torch.set_num_threads(self.threads)
        rows = []
        for index in range(len(chunks["images"])):
            rows += self._score_chunk(*(chunks[key][index] for key in CHUNK_FIELDS))
        return {field: [row[field] for row in rows] for field in (*ROW_FIELDS, "error")}

    def _score_chunk(self, images, names, pixels, errors, notes) -> list[dict]:
        """One forward pass over the chunk's readable images, as single-process predict does."""
        from hfr.serving.viz import overlay

        rows = [
            dict.fromkeys(ROW_FIELDS) | {"image": str(image), "error": str(error)}
            for image, error in zip(images, errors, strict=True)
        ]
        good = [i for i, error in enumerate(errors) if not error]
        arrays = [pixels[i] for i in good]
        predictions = self.model.predict(
            arrays, batch_size=self.options.batch_size, threshold=self.options.threshold
        )
        for index, image, prediction in zip(good, arrays, predictions, strict=True):
            row = rows[index]
            row.update(
                prediction_row(prediction),
                notes="; ".join(filter(None, (str(notes[index]), *prediction.notes))),
            )
            if self.options.overlays:
                picture = overlay(
                    image,
                    prediction.normalized_map,
                    opacity=self.options.opacity,
                    threshold=prediction.threshold,
                )
                row["overlay"] = save_overlay(self.output, str(names[index]), picture)
        return rows


def decode(chunks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A Ray Data task: read each chunk's sources through the image gate (errors are kept)."""
    decoded: dict[str, list] = {key: [] for key in CHUNK_FIELDS}
    for images, names in zip(chunks["images"], chunks["names"], strict=True):
        pixels, errors, notes = [], [], []
        for source in images:
            try:
                loaded = read_source(str(source))
            except ImageLoadError as error:
                pixels.append(None)
                errors.append(str(error))
                notes.append("")
                continue
            pixels.append(loaded.pixels)
            errors.append("")
            notes.append("; ".join(loaded.notes))
        for key, value in zip(CHUNK_FIELDS, (images, names, pixels, errors, notes), strict=True):
            decoded[key].append(list(value))
    return {key: _objects(values) for key, values in decoded.items()}


def _objects(values: list) -> np.ndarray:
    """A column of Python objects (here lists), one per row."""
    column = np.empty(len(values), dtype=object)
    for index, value in enumerate(values):
        column[index] = value
    return column


def predict_on_ray(
    model: str,
    sources: list[str],
    output: str | Path,
    options: RayPredictOptions,
    *,
    resume: bool = False,
    overwrite: bool = False,
) -> RunCount:
    """Score ``sources`` (paths or URIs) with ``model`` (a folder or Hub repo every worker can
    reach) on Ray, writing ``scores.csv`` and Parquet parts into ``output`` as chunks finish.

    Raises :class:`~hfr.extras.MissingExtraError` without the ``ray`` extra.
    """
    if options.workers < 1:
        raise HFRError(f"workers must be at least 1, got {options.workers}")
    parquet = require("pyarrow.parquet", "ray")
    arrow = require("pyarrow", "ray")
    began = time.perf_counter()
    names = dict(zip(sources, unique_names([Path(s) for s in sources]), strict=True))
    scored = flagged = failed = 0
    # the output folder is checked (and a finished run refused) before Ray starts
    with ResultsWriter(output, overwrite=overwrite, resume=resume) as writer:
        ray = connect(options.address)
        cpus = ray.cluster_resources().get("CPU", 0.0)
        if options.cpus_per_worker is None:
            share = (cpus - options.decode_cpus) / options.workers
            options = replace(options, cpus_per_worker=max(0.25, math.floor(share * 4) / 4))
        _check_room_for_decoding(cpus, options)
        todo = [s for s in sources if s not in writer.done]
        parts = Path(output) / PARQUET_DIR
        parts.mkdir(exist_ok=True)
        part_index = len(list(parts.glob("part-*.parquet")))
        for batch in _scored_batches(model, todo, names, options, str(output)):
            for row in batch.to_dict("records"):
                if row["error"]:
                    failed += 1
                    writer.write({"image": row["image"], "error": row["error"]})
                    continue
                scored += 1
                flagged += bool(row["is_anomalous"])
                writer.write({**csv_row(row), "error": ""})
            table = arrow.Table.from_pandas(batch, preserve_index=False)
            parquet.write_table(table, parts / f"part-{part_index:05d}.parquet")
            part_index += 1
    skipped = len(sources) - len(todo)
    logger.info("scored %d images on Ray (%d skipped as done)", scored, skipped)
    return RunCount(scored, flagged, failed, skipped, time.perf_counter() - began)


def _scored_batches(
    model: str, todo: list[str], names: dict[str, str], options: RayPredictOptions, output: str
) -> Iterator:
    """The Ray Data pipeline over chunks of ``todo``: decoding tasks, then the actor pool;
    yields the scored rows (pandas frames) as they come."""
    if not todo:
        return
    data = require("ray.data", "ray")
    size = options.batch_size
    chunks = [todo[start : start + size] for start in range(0, len(todo), size)]
    items = [{"images": chunk, "names": [names[s] for s in chunk]} for chunk in chunks]
    dataset = data.from_items(items, override_num_blocks=min(len(items), 1024))
    dataset = dataset.map_batches(
        decode, batch_size=1, num_cpus=options.decode_cpus, runtime_env=WORKER_ENV
    )
    dataset = dataset.map_batches(
        Scorer,
        fn_constructor_args=(model, options, output),
        batch_size=1,
        compute=data.ActorPoolStrategy(size=options.workers),
        num_gpus=options.gpus_per_worker,
        num_cpus=options.cpus_per_worker,
        runtime_env=WORKER_ENV,
    )
    yield from dataset.iter_batches(batch_size=None, batch_format="pandas")


def _check_room_for_decoding(cpus: float, options: RayPredictOptions) -> None:
    """Actors that hold every CPU leave the decoding tasks none, and the run would wait forever:
    refuse it on a cluster of fixed size (a local Ray), warn elsewhere (it may scale up)."""
    needed = options.workers * options.cpus_per_worker + options.decode_cpus
    if needed <= cpus:
        return
    message = (
        f"{options.workers} workers x {options.cpus_per_worker:g} CPUs plus "
        f"{options.decode_cpus:g} CPU for decoding need {needed:g} CPUs; this Ray has {cpus:g}: "
        "lower --cpus-per-worker (fractions are allowed) or --workers"
    )
    if options.address == "local":
        raise HFRError(message)
    logger.warning(message)
