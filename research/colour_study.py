"""The colour term's distance and weight, compared on one trained model, thresholds included
(no retraining).

python research/colour_study.py --model MODEL_DIR --data ../shared/datasets/mvtec_ad \
    --category bottle --distances squared,mahalanobis --weights 0.25,0.5,1,1.5,2,3 \
    --output research/results/colour_distance/bottle_mobilenetv2.json

The model must hold colour statistics (trained with a colour weight above 0). For each distance
(``scoring.colour_distance``) and weight, the term's scale (its mean on normal images) and the
threshold are set afresh from the model's held-out normal training images (the calibration
split, from the config's seed and fraction), as training sets them, then the model is evaluated
on the test split: image AUROC, pixel AUROC, AUPRO, and the share of defective and good images
the threshold flags. Training never sees the distance or the weight, so this is what a model
trained with each setting would score.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import replace

from sigma_study import study_parser
from splits import held_out_images

from hfr import HFR
from hfr.config import COLOUR_DISTANCES, DEFAULT_TARGET_FPR
from hfr.config.options import term_weight
from hfr.data import load_mvtec
from hfr.evaluate import collect, compute_metrics, threshold_rates
from hfr.serving.outputs import write_json
from hfr.train import recalibrate

METRICS = ("image_auroc", "pixel_auroc", "aupro")


def main() -> None:
    parser = study_parser(__doc__, one_class=False)
    parser.add_argument("--distances", default=",".join(COLOUR_DISTANCES), help="comma-separated")
    parser.add_argument("--weights", default="0.25,0.5,1,1.5,2,3", help="comma-separated")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    model = HFR.from_pretrained(args.model)
    if model.term("colour") is None:
        parser.error(f"{args.model} holds no colour statistics: train it with a colour weight")
    trained, training = model.config, model.config.training or {}
    dataset = load_mvtec(args.data, args.category)
    held_out = held_out_images(model, dataset.train)
    target_fpr = training.get("target_fpr", DEFAULT_TARGET_FPR)
    rows = []
    for distance in args.distances.split(","):
        for weight in (term_weight(text) for text in args.weights.split(",")):
            scoring = replace(
                trained.scoring, colour_distance=distance, colour_weight=weight, colour_scale=None
            )
            model.config = trained.replace(scoring=scoring)
            recalibrate(model, held_out, target_fpr=target_fpr, progress=False)
            maps, _ = collect(model, dataset, progress=False)
            values = {**compute_metrics(maps), **threshold_rates(model, maps)}
            row = {"colour_distance": distance, "colour_weight": weight}
            row |= {name: values[name] for name in (*METRICS, "threshold_tpr", "threshold_fpr")}
            row["threshold"] = model.config.calibration.threshold
            row["held_out_above_threshold"] = model.config.calibration.num_above
            rows.append(row)
            print(
                f"{distance:12s} {weight:5g}  "
                + " / ".join(f"{row[name]:.4f}" for name in METRICS)
                + f"  flagged {row['threshold_tpr']:.3f} / {row['threshold_fpr']:.3f}"
            )
    record = {
        "model": args.model,
        "encoder": trained.encoder,
        "category": args.category,
        "seed": training.get("seed", 0),
        "num_held_out_normal": len(held_out),
        "results": rows,
        "command": shlex.join(["python", *sys.argv]),
    }
    write_json(args.output, record)


if __name__ == "__main__":
    main()
