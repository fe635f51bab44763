"""How much the map is smoothed, compared on one trained model (no retraining).

python scripts/sigma_study.py --model MODEL_DIR --data ../shared/datasets/mvtec_ad \
    --category screw --sigmas 0,1,2,3,4,6,8 --output docs/results/sigma_study/screw.json

Training never sees sigma (the loss and the level scales come from the residuals), so one model
rescored at each sigma is what a model trained with that sigma would score. Reports image AUROC,
pixel AUROC and AUPRO per sigma; thresholds, which calibration sets from the smoothed scores,
are left out.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from hfr import HFR
from hfr.data import load_mvtec
from hfr.evaluate import collect, compute_metrics
from hfr.outputs import write_json

METRICS = ("image_auroc", "pixel_auroc", "aupro")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, help="dataset root in MVTec AD layout")
    parser.add_argument("--category", required=True)
    parser.add_argument("--sigmas", default="0,1,2,3,4,6,8", help="comma-separated")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    model = HFR.from_pretrained(args.model)
    dataset = load_mvtec(args.data, args.category)
    trained = model.config
    rows = []
    for sigma in (float(value) for value in args.sigmas.split(",")):
        model.config = trained.replace(sigma=sigma)
        maps, _ = collect(model, dataset, progress=False)
        values = compute_metrics(maps)
        rows.append({"sigma": sigma, **{name: values[name] for name in METRICS}})
    record = {
        "model": args.model,
        "encoder": trained.encoder,
        "decoder": trained.decoder,
        "trained_sigma": trained.sigma,
        "category": args.category,
        "results": rows,
        "command": shlex.join(["python", *sys.argv]),
    }
    print(write_json(args.output, record), end="")


if __name__ == "__main__":
    main()
