"""Does a narrower decoder cost accuracy? Models trained with ``--decoder-width W`` against
models trained with each decoder block as wide as its level (``full``, every model before
0.22), on five seeds of bottle and screw with both backbones.

python research/decoder_width_study.py --data ../shared/datasets/mvtec_ad --width 64 \
    --models-dir runs/width --reference-dir runs/guarantee \
    --output research/results/decoder_width_0.22

:mod:`five_seed_study` with ``--decoder-width W`` as the candidate and ``--decoder-width full``
as the reference (models in ``--reference-dir`` laid out as ``BACKBONE/seedS/CATEGORY``, e.g.
those of ``research/guarantee_study.py``).
"""

from __future__ import annotations

import shlex
import sys

import five_seed_study


def main(argv: list[str] | None = None) -> int:
    study = five_seed_study.parser(__doc__.split("\n\n")[0])
    study.add_argument("--width", type=int, required=True, help="the narrow decoder's width")
    args = study.parse_args(argv)
    options = {
        "reference": ["--decoder-width", "full"],
        "candidate": ["--decoder-width", str(args.width)],
    }
    arguments = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "research/decoder_width_study.py", *arguments])
    return five_seed_study.run(args, options, ("full", str(args.width)), command)


if __name__ == "__main__":
    raise SystemExit(main())
