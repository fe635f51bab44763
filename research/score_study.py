"""How the image score and the map are computed, compared on one trained model (no retraining).

python research/score_study.py --model MODEL_DIR --data ../shared/datasets/mvtec_ad \
    --category screw --output research/results/score_study/screw_mobilenetv2.json

Reads the model's per-level residual maps for its held-out normal training images (the
calibration split, reproduced from the config's seed) and for the test images, then scores
every variant: the map (plain sum as in the paper, or each level standardised by its normal
statistics) and the image score (max, top-k mean, high quantile). Reports image AUROC, pixel
AUROC, AUPRO and the rate of flagged defective / good test images at mean + 3 std of the
held-out normal scores, per variant. Test labels are never used to set anything.
"""

from __future__ import annotations

import argparse
import shlex
import sys

import numpy as np
import torch
from splits import held_out_images

from hfr import HFR, metrics
from hfr.data import load_mvtec
from hfr.scoring.maps import anomaly_map, residual_maps
from hfr.serving.outputs import write_json


def level_residuals(model: HFR, images: list, batch_size: int = 16) -> list[torch.Tensor]:
    """The three residual maps of each image, at their native resolutions."""
    levels: list[list[torch.Tensor]] = [[], [], []]
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = model.preprocess(images[start : start + batch_size])
            features, reconstructions = model.reconstruct(batch)
            for index, residual in enumerate(residual_maps(features, reconstructions)):
                levels[index].append(residual.cpu())
    return [torch.cat(level) for level in levels]


def maps_of(levels: list[torch.Tensor], weights, size, sigma) -> torch.Tensor:
    """The smoothed sum of levels, each as ``(level - shift) / scale``."""
    shifted = [
        (level - shift) / scale for level, (shift, scale) in zip(levels, weights, strict=True)
    ]
    return torch.cat(
        [
            anomaly_map([lv[i : i + 32] for lv in shifted], size, sigma)
            for i in range(0, levels[0].shape[0], 32)
        ]
    )


def image_scores(maps: torch.Tensor, how: str) -> np.ndarray:
    flat = maps.flatten(1)
    if how == "max":
        return flat.amax(1).numpy()
    if how.startswith("top"):
        fraction = float(how[3:]) / 100.0
        k = max(1, round(fraction * flat.shape[1]))
        return flat.topk(k, dim=1).values.mean(1).numpy()
    if how.startswith("q"):
        return flat.quantile(float(how[1:]) / 100.0, dim=1).numpy()
    raise ValueError(how)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--category", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--sigma", type=float, default=None, help="default: the model's")
    args = parser.parse_args()
    model = HFR.from_pretrained(args.model)
    config = model.config
    dataset = load_mvtec(args.data, args.category)
    held_out = held_out_images(model, dataset.train)
    size = config.preprocessing.input_size
    sigma = config.sigma if args.sigma is None else args.sigma
    normal_levels = level_residuals(model, held_out)
    test_levels = level_residuals(model, [s.image for s in dataset.test])
    labels = np.array([s.label for s in dataset.test])
    masks = np.stack([s.mask(size) for s in dataset.test])
    plain = [(0.0, 1.0)] * 3
    standardised = [(float(lv.mean()), float(lv.std())) for lv in normal_levels]
    results = []
    dropped = (0.0, float("inf"))
    variants = {
        "sum": plain,
        "standardised_sum": standardised,
        "mean_scaled_sum": [(0.0, mean) for mean, _ in standardised],
        "std_scaled_sum": [(0.0, std) for _, std in standardised],
    }
    for keep in ((0,), (1,), (2,), (1, 2), (0, 1)):
        name = "standardised_levels_" + "".join(str(k + 1) for k in keep)
        variants[name] = [standardised[k] if k in keep else dropped for k in range(3)]
    for map_name, weights in variants.items():
        normal_maps = maps_of(normal_levels, weights, size, sigma)
        test_maps = maps_of(test_levels, weights, size, sigma)
        pixel = {
            "pixel_auroc": metrics.pixel_auroc(masks, test_maps.numpy()),
            "aupro": metrics.aupro(masks, test_maps.numpy()),
        }
        for score_name in ("max", "top1", "top0.1", "q99"):
            normal_scores = image_scores(normal_maps, score_name)
            scores = image_scores(test_maps, score_name)
            threshold = max(normal_scores.mean() + 3 * normal_scores.std(), normal_scores.max())
            flagged = scores >= threshold
            at_target = {}
            for fpr in (0.01, 0.05):
                z = {0.01: 2.326, 0.05: 1.645}[fpr]
                median = np.median(normal_scores)
                spread = 1.4826 * np.median(np.abs(normal_scores - median))
                for name, cut in (
                    ("gauss", normal_scores.mean() + z * normal_scores.std(ddof=1)),
                    ("robust", median + z * spread),
                ):
                    hit = scores >= cut
                    at_target[f"{name}_fpr{fpr}"] = (
                        round(float(hit[labels == 1].mean()), 3),
                        round(float(hit[labels == 0].mean()), 3),
                    )
            per_defect = {
                defect: metrics.image_auroc(
                    np.r_[np.zeros((labels == 0).sum()), np.ones(len(idx))],
                    np.r_[scores[labels == 0], scores[idx]],
                )
                for defect in sorted({s.defect for s in dataset.test if s.label == 1})
                for idx in [np.array([i for i, s in enumerate(dataset.test) if s.defect == defect])]
            }
            results.append(
                {
                    "map": map_name,
                    "score": score_name,
                    "image_auroc": metrics.image_auroc(labels, scores),
                    **pixel,
                    "tpr_at_calibrated": float(flagged[labels == 1].mean()),
                    "fpr_at_calibrated": float(flagged[labels == 0].mean()),
                    "tpr_fpr_at_target": at_target,
                    "per_defect_image_auroc": per_defect,
                }
            )
            print(
                f"{map_name:17s} {score_name:7s} image {results[-1]['image_auroc']:.4f} "
                f"pixel {pixel['pixel_auroc']:.4f} aupro {pixel['aupro']:.4f} "
                f"tpr {results[-1]['tpr_at_calibrated']:.3f} "
                f"fpr {results[-1]['fpr_at_calibrated']:.3f} {at_target}"
            )
    record = {
        "model": args.model,
        "encoder": config.encoder,
        "category": args.category,
        "sigma": sigma,
        "num_held_out_normal": len(held_out),
        "level_stats_normal": standardised,
        "variants": results,
        "command": shlex.join(["python", *sys.argv]),
    }
    print(write_json(args.output, record), end="")


if __name__ == "__main__":
    main()
