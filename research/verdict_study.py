"""The default verdict, and the rules it could use, measured on one trained model (no retraining).

python research/verdict_study.py --model MODEL_DIR --data ../shared/datasets/mvtec_ad \
    --category screw --output research/results/verdict_study/screw_mobilenetv2.json

Reproduces the model's held-out normal training images (the calibration split, from the
config's seed and fraction) and scores them and the test images with every image-score rule
below. For each rule and each target false-alarm rate, the threshold comes from the held-out
scores exactly as training sets it (:meth:`hfr.scoring.calibration.Calibration.from_normal_scores`),
then the rule is judged on the test set: the share of defective and of good images flagged,
and the image AUROC. Test labels never set anything.

Rules:
- ``model``: the model's own image score (the default verdict at its ``target_fpr``).
- ``standardised_terms``: each part of the map (each level, each added term) scored on its
  own, standardised by the median and robust spread (1.4826 MAD) of its held-out scores, and
  the standardised scores summed.
- ``standardised_max``: the largest of those standardised scores.
- ``features_plus_colour``: the map without the colour term and the colour term, each scored
  and standardised as above, summed (only for models that weigh the colour term).

Each threshold also says how many held-out scores lie above it, and whether the calibration
warns that this is more than its target explains (``Calibration.tail_warning``).

It also records the robust z (distance from the held-out median in robust standard deviations)
of the held-out and of the good test images under the model's own score: a long right tail, or
good test images above every held-out one, is what a threshold from held-out images cannot see.
And, read off the test set after the fact (it sets nothing), the window of the model's own
score that would meet the issue's bar (at least 80 % of the defective test images flagged, at
most 10 % of the good ones), in robust z and in how many held-out scores lie above each end:
what any threshold set from the held-out scores alone would have had to hit.
"""

from __future__ import annotations

import math
import shlex
import sys
from collections.abc import Callable, Sequence

import numpy as np
import torch
from sigma_study import study_parser
from splits import held_out_images

from hfr import HFR, metrics
from hfr.data import load_mvtec
from hfr.images import ImageInput
from hfr.scoring import maps as anomaly
from hfr.scoring.calibration import Calibration
from hfr.scoring.thresholds import MAD_TO_STD
from hfr.serving.outputs import write_json

TARGET_FPRS = (0.01, 0.02, 0.05)
BAR_DEFECTIVE, BAR_GOOD = 0.8, 0.1  # issue 11: flag at least 80 % of defects, at most 10 % of good
LEVEL_NAMES = ("stride4", "stride8", "stride16")


def part_scores(
    model: HFR, images: Sequence[ImageInput], batch_size: int = 16
) -> dict[str, np.ndarray]:
    """The model's image scores (``"model"``) and the image score of each part of its map
    scored alone (each weighted level, each weighted term, and ``"features"``, the map without
    the colour term, combined as the model combines), as arrays over ``images``."""
    scoring, size = model.config.scoring, model.config.preprocessing.input_size
    sigma = model.config.sigma
    parts: dict[str, list[np.ndarray]] = {}

    def score(levels: list[torch.Tensor], combination: str = "sum") -> np.ndarray:
        maps = anomaly.combined_map(levels, size, sigma, combination)
        return anomaly.image_scores(maps, scoring.image_score, scoring.top_k_fraction).numpy()

    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = model.preprocess(images[start : start + batch_size])
            features, reconstructions = model.reconstruct(batch)
            residuals = anomaly.residual_maps(features, reconstructions)
            terms = model.scorer.term_maps(features, batch, model.config)
            _, scores = model.scorer.score_residuals(residuals, size, model.config, terms)
            weighted = dict(
                zip(
                    LEVEL_NAMES,
                    anomaly.weigh_levels(
                        residuals, scales=scoring.level_scales, weights=scoring.level_weights
                    ),
                    strict=True,
                )
            )
            for term, values in terms.items():
                weight = getattr(scoring, f"{term}_weight") / getattr(scoring, f"{term}_scale")
                weighted[term] = values * weight
            batch_parts = {name: score([level]) for name, level in weighted.items()}
            features_only = [v for k, v in weighted.items() if k != "colour"]
            batch_parts["features"] = score(features_only, scoring.combination)
            batch_parts["model"] = scores.float().cpu().numpy()
            for name, values in batch_parts.items():
                parts.setdefault(name, []).append(values)
    return {name: np.concatenate(values) for name, values in parts.items()}


def robust_z(values: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """``values`` in robust standard deviations of ``normal`` above its median."""
    median = np.median(normal)
    spread = max(MAD_TO_STD * float(np.median(np.abs(normal - median))), 1e-12)
    return (values - median) / spread


def bar_window(good: np.ndarray, defective: np.ndarray) -> tuple[float, float] | None:
    """The thresholds ``[low, high)`` at which scores above them flag at most ``BAR_GOOD`` of
    the ``good`` images and at least ``BAR_DEFECTIVE`` of the ``defective`` ones; None if none.

    Example:
        >>> bar_window(np.arange(10.0), np.array([5.0, 20, 30, 40, 50]))  # 1 good of 10 above 8
        (8.0, 20.0)
    """
    low = float(np.sort(good)[::-1][int(BAR_GOOD * len(good))])
    high = float(np.sort(defective)[::-1][math.ceil(BAR_DEFECTIVE * len(defective)) - 1])
    return (low, high) if low < high else None


def window_record(window: tuple[float, float], held: np.ndarray) -> dict[str, float | int]:
    """The window in robust z of the ``held`` scores and in held-out scores above each end."""
    low, high = window
    return {
        "from_z": round(float(robust_z(np.array(low), held)), 2),
        "to_z": round(float(robust_z(np.array(high), held)), 2),
        "held_out_above_from": int((held > low).sum()),
        "held_out_above_to": int((held >= high).sum()),
    }


def rules(
    held: dict[str, np.ndarray], parts: Sequence[str]
) -> dict[str, Callable[[dict[str, np.ndarray]], np.ndarray]]:
    """Each rule: a function of a group's part scores, standardised by the ``held`` ones."""

    def z(group: dict[str, np.ndarray], name: str) -> np.ndarray:
        return robust_z(group[name], held[name])

    found = {
        "model": lambda group: group["model"],
        "standardised_terms": lambda group: np.sum([z(group, p) for p in parts], 0),
        "standardised_max": lambda group: np.max([z(group, p) for p in parts], 0),
    }
    if "colour" in held:
        found["features_plus_colour"] = lambda group: z(group, "features") + z(group, "colour")
    return found


def main() -> None:
    parser = study_parser(__doc__, one_class=False)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    model = HFR.from_pretrained(args.model).eval()
    training = model.config.training or {}
    dataset = load_mvtec(args.data, args.category)
    held_out = held_out_images(model, dataset.train)
    labels = np.array([s.label for s in dataset.test])
    held = part_scores(model, held_out)
    test = part_scores(model, [s.image for s in dataset.test])
    parts = [name for name in held if name not in ("model", "features")]
    results = {}
    for name, rule in rules(held, parts).items():
        normal, scores = rule(held), rule(test)
        at_target = {}
        for target in TARGET_FPRS:
            calibration = Calibration.from_normal_scores(normal, target_fpr=target)
            flagged = scores > calibration.threshold
            at_target[f"{target:g}"] = {
                "threshold": calibration.threshold,
                "defective_flagged": float(flagged[labels == 1].mean()),
                "good_flagged": float(flagged[labels == 0].mean()),
                "held_out_above": calibration.num_above,
                "tail_warning": calibration.tail_warning() is not None,
            }
        results[name] = {"image_auroc": metrics.image_auroc(labels, scores), "targets": at_target}
        flags = " ".join(
            f"{t}: {v['defective_flagged']:.3f}/{v['good_flagged']:.3f}"
            for t, v in at_target.items()
        )
        print(f"{name:22s} image AUROC {results[name]['image_auroc']:.4f}  {flags}")

    window = bar_window(test["model"][labels == 0], test["model"][labels == 1])
    if window is not None:
        print(f"the bar is met from {window[0]:.4g} to below {window[1]:.4g}")

    def ordered_z(values: np.ndarray) -> list[float]:
        return [round(float(v), 2) for v in sorted(robust_z(values, held["model"]), reverse=True)]

    record = {
        "model": args.model,
        "encoder": model.config.encoder,
        "category": args.category,
        "seed": training.get("seed", 0),
        "model_target_fpr": training.get("target_fpr"),
        "num_held_out_normal": len(held_out),
        "num_good_test": int((labels == 0).sum()),
        "num_defective_test": int((labels == 1).sum()),
        "parts": parts,
        "rules": results,
        "robust_z_held_out": ordered_z(held["model"]),
        "robust_z_good_test": ordered_z(test["model"][labels == 0]),
        "bar_window": None if window is None else window_record(window, held["model"]),
        "command": shlex.join(["python", *sys.argv]),
    }
    write_json(args.output, record)


if __name__ == "__main__":
    main()
