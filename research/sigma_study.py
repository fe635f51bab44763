"""How much the map is smoothed and how its levels are weighted, compared on one trained model
(no retraining).

python research/sigma_study.py --model MODEL_DIR --data ../shared/datasets/mvtec_ad \
    --category screw --sigmas 0,1,2,3,4,6,8 --output research/results/sigma_study/screw.json
python research/sigma_study.py --model MODEL_DIR --data ../shared/datasets/mvtec_ad \
    --category screw --sigmas 2 --level-weights "1,1,1;0.5,1,1" --output screw_weights.json
python research/sigma_study.py --model MNIST_MODEL_DIR --data ../shared/datasets/mnist \
    --protocol mnist --category 8 --sigmas 4 --level-weights "1,1,1;0.5,1,1" --output 8.json
python research/sigma_study.py --model POSITION_MODEL_DIR --data ../shared/datasets/mvtec_ad \
    --category bottle --sigmas 2 --position-weights 0,0.5,1,2,4 --output bottle_position.json
python research/sigma_study.py --model MEMORY_MODEL_DIR --data ../shared/datasets/mvtec_ad \
    --category screw --sigmas 2 --memory-weights 0,0.5,1,2 --output screw_memory.json
python research/sigma_study.py --model MODEL_DIR --data ../shared/datasets/mvtec_ad \
    --category bottle --sigmas 2 --combinations sum,product --output bottle_product.json
python research/sigma_study.py --model COLOUR_MODEL_DIR --data ../shared/datasets/mvtec_ad \
    --category bottle --sigmas 2 --colour-weights 0,0.25,0.5,1 --output bottle_colour.json
python research/sigma_study.py --model MODEL_DIR --data ../shared/datasets/mvtec_ad \
    --category screw --sigmas 2 --level-weights "0.5,1,1;0.5,0.5,1" --verdict --output screw.json

Training never sees sigma, the level weights, the weights of the added terms or how the levels
are combined (the loss, the level scales, the position statistics, the patch memory, the colour
statistics and the terms' scales come from the features and residuals), so one model rescored
with each setting is what a model trained with that setting would score. A position, memory or
colour weight above 0 needs a model trained with one (it holds the statistics or the memory).
Reports image AUROC, and with masks pixel AUROC and AUPRO (and per defect type where the data
has types), per setting. With ``--verdict``
each setting's threshold is also set afresh from the model's held-out normal training images
(the calibration split, from the config's seed and fraction), as training sets it, and the
row holds the share of defective and good test images it flags; on MVTec AD the row also
holds the synthetic large-defect check (``synthetic_defects.py``, seed 0) on the good test
images. Without it, thresholds are left out.
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import sys
from dataclasses import replace

from five_seed_study import PER_TYPE
from splits import held_out_images
from synthetic_defects import synthetic_check

from hfr import HFR
from hfr.config import DEFAULT_TARGET_FPR
from hfr.config.options import level_weights, term_weight
from hfr.data import AnomalyDataset, load_idx_one_class, load_mvtec
from hfr.evaluate import collect, compute_metrics, threshold_rates
from hfr.images import load_rgb
from hfr.serving.outputs import write_json
from hfr.train import recalibrate

METRICS = ("image_auroc", "pixel_auroc", "aupro")


def load(protocol: str, data: str, category: str) -> AnomalyDataset:
    """The category of an MVTec-layout root, or one class of MNIST's one-class protocol."""
    if protocol == "mnist":
        return load_idx_one_class(data, int(category))
    return load_mvtec(data, category)


def study_parser(description: str, *, one_class: bool = True) -> argparse.ArgumentParser:
    """The options of a study that rescores one trained model: ``--model``, ``--data``,
    ``--category`` and, with ``one_class``, ``--protocol`` (MVTec AD or MNIST); its ``--output``
    comes last, after the study's own."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    if not one_class:
        parser.add_argument("--data", required=True, help="the MVTec AD root")
        parser.add_argument("--category", required=True)
        return parser
    parser.add_argument("--data", required=True, help="dataset root (MVTec AD or MNIST layout)")
    parser.add_argument("--protocol", choices=("mvtec", "mnist"), default="mvtec")
    parser.add_argument("--category", required=True, help="category, or MNIST's normal class")
    return parser


def main() -> None:
    parser = study_parser(__doc__)
    parser.add_argument("--sigmas", default="0,1,2,3,4,6,8", help="comma-separated")
    parser.add_argument(
        "--level-weights", default=None, help="';'-separated triples (default: the model's)"
    )
    parser.add_argument(
        "--position-weights", default=None, help="comma-separated (default: the model's)"
    )
    parser.add_argument(
        "--memory-weights", default=None, help="comma-separated (default: the model's)"
    )
    parser.add_argument(
        "--colour-weights", default=None, help="comma-separated (default: the model's)"
    )
    parser.add_argument(
        "--combinations", default=None, help="comma-separated (default: the model's)"
    )
    parser.add_argument(
        "--verdict",
        action="store_true",
        help="also set each threshold afresh and report the flagged shares (and, on MVTec AD, "
        "the synthetic check)",
    )
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    model = HFR.from_pretrained(args.model)
    dataset = load(args.protocol, args.data, args.category)
    trained = model.config
    held_out = held_out_images(model, dataset.train) if args.verdict else []
    target_fpr = (trained.training or {}).get("target_fpr", DEFAULT_TARGET_FPR)
    good = []  # the synthetic check: MVTec AD's good test images, not digits
    if args.verdict and args.protocol == "mvtec":
        good = [load_rgb(s.image) for s in dataset.test if s.label == 0]
    weight_options = (
        [trained.scoring.level_weights]
        if args.level_weights is None
        else [level_weights(text) for text in args.level_weights.split(";")]
    )
    position_options = _term_weights(args.position_weights, trained.scoring.position_weight)
    memory_options = _term_weights(args.memory_weights, trained.scoring.memory_weight)
    colour_options = _term_weights(args.colour_weights, trained.scoring.colour_weight)
    combinations = (
        [trained.scoring.combination] if args.combinations is None else args.combinations.split(",")
    )
    sigmas = [float(value) for value in args.sigmas.split(",")]
    rows = []
    for sigma, weights, position, memory, colour, combination in itertools.product(
        sigmas, weight_options, position_options, memory_options, colour_options, combinations
    ):
        scoring = replace(
            trained.scoring,
            level_weights=weights,
            position_weight=position,
            memory_weight=memory,
            colour_weight=colour,
            combination=combination,
        )
        model.config = trained.replace(sigma=sigma, scoring=scoring)
        if held_out:
            recalibrate(model, held_out, target_fpr=target_fpr, progress=False)
        maps, _ = collect(model, dataset, progress=False)
        values = compute_metrics(maps)
        row = {
            "sigma": sigma,
            "level_weights": list(weights),
            "position_weight": position,
            "memory_weight": memory,
            "colour_weight": colour,
            "combination": combination,
        }
        row |= {name: values[name] for name in (*METRICS, *PER_TYPE) if name in values}
        if held_out:
            row |= threshold_rates(model, maps)
            row["threshold"] = model.config.calibration.threshold
            row["held_out_above_threshold"] = model.config.calibration.num_above
        if good:
            synthetic = synthetic_check(model, good)
            row["synthetic_pixel_auroc"] = synthetic["pixel_auroc"]
            row["synthetic_pixel_auroc_per_change"] = synthetic["pixel_auroc_per_change"]
        rows.append(row)
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


def _term_weights(option: str | None, trained: float) -> list[float]:
    """The comma-separated weights of an option, or the model's own when it is not given."""
    return [trained] if option is None else [term_weight(text) for text in option.split(",")]


if __name__ == "__main__":
    main()
