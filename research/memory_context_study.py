"""The patch memory's context: five seeds of bottle and screw with both backbones, each trained
model rescored with its memory rebuilt with each feature's 3 x 3 neighbourhood mean appended
(``scoring.memory_context``), against the model as trained (no context), held to the bar of
every change of a default (``five_seed_study.METRICS``).

python research/memory_context_study.py --data ../shared/datasets/mvtec_ad \
    --reference-dir runs/guarantee --contexts 2 --output research/results/memory_context

The reference models are those of ``five_seed_study.py`` (``BACKBONE/seedS/CATEGORY`` under
``--reference-dir``, trained there with ``hfr train`` and the defaults where missing). Training
never sees the memory: :func:`with_context` fits the memory from the model's training images
as training fits it (:meth:`PatchMemory.fit`, the model's recorded coreset fraction and limit,
its search in ``--search-dims`` directions of the wider vectors, ``auto`` as training does),
then measures its memory scale and threshold afresh on the held-out normal images. That is
the model training with ``--memory-context W`` gives. Each context's runs and summary go to
``OUTPUT/context_W/``; ``--data`` may also be a check made by ``structural_defects.py``: each
row keeps the per-type pixel figures, and ``OUTPUT/per_kind.md`` tables them for every context
(with ``--contexts 0,2``, context 0 is the model as trained).
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from five_seed_study import (
    PER_TYPE,
    recalibrate_as_trained,
    rescored_runs,
    rescoring_parser,
    write_rescored,
)

from hfr import HFR
from hfr.config import AUTO, TrainConfig
from hfr.feature_passes import feature_batches
from hfr.images import ImageInput
from hfr.progress import ignore_progress
from hfr.scoring.terms.base import TrainingEvidence
from hfr.scoring.terms.memory import PatchMemory, search_dims, vector_width


def with_context(
    model: HFR,
    context: float,
    training_images: Sequence[ImageInput],
    held_out: Sequence[ImageInput],
    *,
    dims: int | str = AUTO,
    batch_size: int = 16,
) -> None:
    """Give ``model`` the patch memory training with ``scoring.memory_context`` ``context``
    gives, fitted from its ``training_images`` and searched in ``dims`` directions
    (``TrainConfig.memory_search_dims``), and measure its memory scale and threshold afresh on
    the ``held_out`` normal images."""
    recorded = model.config.training or {}
    defaults = TrainConfig()
    scoring = replace(model.config.scoring, memory_context=context, memory_scale=None)
    model.config = model.config.replace(scoring=scoring)
    width = vector_width(model.encoder.channels, context)
    training = replace(
        defaults,
        memory_fraction=recorded.get("memory_fraction", defaults.memory_fraction),
        memory_limit=recorded.get("memory_limit", defaults.memory_limit),
        memory_search_dims=search_dims(width, dims),
    )

    evidence = TrainingEvidence(
        features=lambda: feature_batches(
            model, training_images, None, batch_size, False, ignore_progress
        ),
        images=lambda: iter(()),
        colours=None,
        count=len(training_images),
        training=training,
    )
    model.terms["memory"] = PatchMemory.fit(evidence, scoring).to(model.device)
    recalibrate_as_trained(model, held_out)


def per_kind_table(rows: dict[float, list[dict]]) -> str:
    """Pixel AUROC / AUPRO per defect type (mean over the seeds) for each context, as markdown:
    one row per category, backbone and type."""
    contexts = list(rows)
    header = " | ".join(f"context {context:g}" for context in contexts)
    lines = [f"| category | backbone | defect | {header} |", "|---|---|---|" + "---|" * len(rows)]
    first = rows[contexts[0]]
    groups = dict.fromkeys((row["category"], row["backbone"]) for row in first)
    for category, backbone in groups:
        cells: dict[str, list[str]] = {}
        for context in contexts:
            group = [
                row["candidate"]
                for row in rows[context]
                if (row["category"], row["backbone"]) == (category, backbone)
            ]
            for kind in group[0].get(PER_TYPE[0], {}):
                pixel, pro = (np.mean([row[name][kind] for row in group]) for name in PER_TYPE)
                cells.setdefault(kind, []).append(f"{pixel:.3f} / {pro:.3f}")
        for kind, values in cells.items():
            lines.append(f"| {category} | {backbone} | {kind} | {' | '.join(values)} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = rescoring_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--contexts", default="2", help="comma-separated weights")
    parser.add_argument("--search-dims", default=AUTO, help="auto, all or a number")
    args = parser.parse_args()
    command = shlex.join(["python", *sys.argv])
    output = Path(args.output)
    dims = args.search_dims if args.search_dims in (AUTO, "all") else int(args.search_dims)

    def rescore(model: HFR, context: float, training: list, held_out: list) -> None:
        with_context(model, context, training, held_out, dims=dims)

    contexts = [float(context) for context in args.contexts.split(",")]
    rows = rescored_runs(args, contexts, rescore)
    write_rescored(rows, output, command, "context", ("no context", "context {}"))
    if any(PER_TYPE[0] in row["candidate"] for group in rows.values() for row in group):
        (output / "per_kind.md").write_text(f"`{command}`\n\n{per_kind_table(rows)}")
        print(per_kind_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
