"""Recalibrate the bundled models with today's threshold rule, on the very images their training
held out, and record those scores (so that the demo's "This is normal" can add to them).

python scripts/recalibrate_bundled.py --data ../shared/datasets/mvtec_ad

The weights stay as they are. The held-out images are rebuilt from the seed and fraction each
config records (:func:`hfr.train.training_split`); before anything is written, the rule the
model was calibrated with must give its recorded threshold again from their scores, to float32
rounding (otherwise they are not the images it held out). The test split is then evaluated again,
so that the card's verdict rates are those of the new threshold.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path

from hfr import HFR
from hfr.calibrate import recalibrate
from hfr.data import load_mvtec
from hfr.evaluate import evaluate
from hfr.pipeline import save_model
from hfr.scoring.calibration import DEFAULT_THRESHOLD_FIT, Calibration
from hfr.train import training_split

BUNDLED = Path(__file__).resolve().parents[1] / "hfr" / "bundled"  # the checkout's


def recalibrate_bundled(folder: Path, data: str, command: str) -> Calibration:
    """Recalibrate the bundled model in ``folder`` in place; return its new calibration."""
    model = HFR.from_pretrained(folder)
    old = model.config.calibration
    dataset = load_mvtec(data, model.config.category)
    held_out = training_split(model, dataset.train)[1]
    again = recalibrate(model.with_calibration(old), held_out, target_fpr=old.target_fpr,
                        threshold_fit=old.fit, progress=False)  # fmt: skip
    if not math.isclose(again.threshold, old.threshold, rel_tol=1e-6):  # float32 rounding
        raise SystemExit(
            f"{folder.name}: the held-out images give threshold {again.threshold!r}, the model "
            f"records {old.threshold!r}: these are not the images its training held out"
        )
    new = recalibrate(model, held_out, target_fpr=old.target_fpr,
                      threshold_fit=DEFAULT_THRESHOLD_FIT, progress=False)  # fmt: skip
    model.config = model.config.replace(
        evaluation={**evaluate(model, dataset, progress=False), "command": command}
    )
    save_model(model, folder)
    return new


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the MVTec AD root")
    parser.add_argument(
        "--bundled", default=str(BUNDLED), help="the folder of the bundled models to rewrite"
    )
    args = parser.parse_args(argv)
    command = shlex.join(["python", "scripts/recalibrate_bundled.py", *(argv or sys.argv[1:])])
    for folder in sorted(p for p in Path(args.bundled).iterdir() if p.is_dir()):
        calibration = recalibrate_bundled(folder, args.data, command)
        print(f"{folder.name}: threshold {calibration.threshold:.4f}; {calibration.guarantee()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
