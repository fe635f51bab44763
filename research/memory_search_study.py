"""The patch memory searched in fewer directions: five seeds of bottle and screw with both
backbones, each trained model rescored with its memory searched in a share of its vectors'
principal directions, against the model as trained (searched in all), held to the bar of every
change of a default (``five_seed_study.METRICS``).

python research/memory_search_study.py --data ../shared/datasets/mvtec_ad \
    --reference-dir runs/guarantee --shares 0.333,0.5 --output research/results/memory_search

The reference models are those of ``five_seed_study.py`` (``BACKBONE/seedS/CATEGORY`` under
``--reference-dir``, trained there with ``hfr train`` and the defaults where missing). Training
never sees the memory's search: the kept vectors are the same, so the model with its memory's
projection set (``PatchMemory(bank, projection=principal_directions(bank, D))``, D the share of
the vector's numbers, rounded) is what training with ``--memory-search-dims D`` would give;
its memory scale and threshold are then measured afresh on the held-out normal images, as
training measures them. Each share's runs and summary go to ``OUTPUT/share_S/``.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import replace
from pathlib import Path

from five_seed_study import recalibrate_as_trained, rescored_runs, rescoring_parser, write_rescored

from hfr import HFR
from hfr.scoring.terms.memory import PatchMemory, principal_directions


def searched_in(model: HFR, dims: int, held_out: list) -> None:
    """Give ``model``'s memory a projection onto its bank's first ``dims`` principal directions
    and measure its memory scale and threshold afresh on the ``held_out`` normal images."""
    memory = model.term("memory")
    projection = principal_directions(memory.bank, dims)
    model.terms["memory"] = PatchMemory(
        memory.bank, pooling=memory.pooling, context=memory.context, projection=projection
    )
    model.config = model.config.replace(scoring=replace(model.config.scoring, memory_scale=None))
    recalibrate_as_trained(model, held_out)


def main() -> int:
    parser = rescoring_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--shares", default="0.333,0.5", help="comma-separated, of each vector")
    args = parser.parse_args()
    command = shlex.join(["python", *sys.argv])

    def rescore(model: HFR, share: float, _training: list, held_out: list) -> None:
        searched_in(model, round(share * model.term("memory").bank.shape[1]), held_out)

    shares = [float(share) for share in args.shares.split(",")]
    rows = rescored_runs(args, shares, rescore)
    write_rescored(rows, Path(args.output), command, "share", ("all directions", "{} of them"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
