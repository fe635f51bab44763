"""The patch memory's weight: five seeds of bottle and screw with both backbones, each trained
model rescored with its memory weighed otherwise, against the model as trained, held to the bar
of every change of a default (``five_seed_study.METRICS``).

python research/memory_weight_study.py --data ../shared/datasets/mvtec_ad \
    --reference-dir runs/guarantee --backbones BACKBONE --weights 6 \
    --output research/results/memory_weight/BACKBONE

Training never sees the memory's weight (the memory and its scale come from the features), so
the model with ``scoring.memory_weight`` set and its threshold measured afresh on the held-out
normal images, as training measures it, is what training with ``--memory-weight W`` gives.
Each weight's runs and summary go to ``OUTPUT/weight_W/``.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import replace
from pathlib import Path

from five_seed_study import recalibrate_as_trained, rescored_runs, rescoring_parser, write_rescored

from hfr import HFR


def weighed(model: HFR, weight: float, held_out: list) -> None:
    """Weigh ``model``'s memory ``weight`` and set its threshold afresh on ``held_out``."""
    scoring = replace(model.config.scoring, memory_weight=weight)
    model.config = model.config.replace(scoring=scoring)
    recalibrate_as_trained(model, held_out)


def main() -> int:
    parser = rescoring_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default="6", help="comma-separated")
    args = parser.parse_args()
    command = shlex.join(["python", *sys.argv])

    def rescore(model: HFR, weight: float, _training: list, held_out: list) -> None:
        weighed(model, weight, held_out)

    weights = [float(weight) for weight in args.weights.split(",")]
    rows = rescored_runs(args, weights, rescore)
    write_rescored(rows, Path(args.output), command, "weight", ("weight 3", "weight {}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
