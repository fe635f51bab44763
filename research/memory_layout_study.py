"""The patch memory laid out on another grid, on one trained model (no retraining): each
layout's memory rebuilt from the model's training images, then measured within the model's map
(at each memory weight and sigma, its threshold set afresh as training sets it) and alone.

python research/memory_layout_study.py --model runs/size512/efficientnet_lite0/seed0/screw \
    --data ../shared/datasets/mvtec_ad --category screw --layouts 16,32 --limits 4096,0 \
    --sigmas 2,4 --output research/results/memory_layout/screw_efficientnet_lite0_512.json
python research/memory_layout_study.py --model runs/guarantee/efficientnet_lite0/seed0/screw \
    --data runs/structural6 --category screw --layouts 16,8 --poolings 1,3 --fractions 0.05,0.01 \
    --weights 3,6 --output structural.json

Layouts, by the stride of a memory cell in input pixels:

- ``16``: the model's own (each stride-16 cell: its stride-8 features averaged over it and its
  stride-16 features, :func:`hfr.scoring.terms.memory.patch_vectors`);
- ``32``: those vectors averaged over 2 x 2 cells, so that a 512x512 input's memory has as many
  cells as a 256x256 input's, each seeing as much of the part;
- ``8``: PatchCore's (Roth et al. 2022): the stride-8 features and the stride-16 features
  upsampled (bilinear) to them.

With a pooling of 3 each feature is first averaged over its 3 x 3 neighbourhood (PatchCore's,
``scoring.memory_pooling``). The coreset keeps ``--fractions`` of the cells up to ``--limits``
vectors (0: no limit), chosen from a seeded sample beyond it, as training chooses it
(:meth:`~hfr.scoring.terms.memory.PatchMemory.from_features`), and is searched in full. Each row
holds image AUROC, pixel AUROC and AUPRO (each per defect type) and the share of defective and
good images flagged, within the map; ``alone`` the same figures of the memory's map by itself
(upsampled and smoothed as the map is, the image score its maximum). Layout 16 with the model's
own pooling, fraction and limit, its weight and sigma is the model as trained.
"""

from __future__ import annotations

import itertools
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from five_seed_study import PER_TYPE, recalibrate_as_trained
from sigma_study import load, study_parser

from hfr import HFR
from hfr.config import DEFAULT_MEMORY_LIMIT
from hfr.evaluate import EvaluationMaps, collect, compute_metrics, threshold_rates
from hfr.feature_passes import feature_batches
from hfr.images import ImageInput
from hfr.progress import ignore_progress
from hfr.scoring import maps as anomaly
from hfr.scoring.terms.memory import PatchMemory, patch_vectors
from hfr.serving.outputs import write_json
from hfr.train import training_split

METRICS = ("image_auroc", "pixel_auroc", "aupro")
LAYOUTS = (16, 32, 8)
NO_LIMIT = 2**62


def laid_out(features: list[torch.Tensor], layout: int, pooling: int) -> list[torch.Tensor]:
    """Encoder features ``[f1, f2, f3]`` rearranged so that :func:`patch_vectors` (pooling 1,
    no context) reads them as the vectors of ``layout``, each feature first averaged over its
    ``pooling`` x ``pooling`` neighbourhood.

    Example:
        >>> features = [None, torch.randn(1, 2, 8, 8), torch.randn(1, 3, 4, 4)]
        >>> [tuple(patch_vectors(laid_out(features, s, 3)).shape) for s in (16, 32, 8)]
        [(1, 5, 4, 4), (1, 5, 2, 2), (1, 5, 8, 8)]
    """
    fine, coarse = features[1].float(), features[2].float()
    if pooling > 1:
        fine, coarse = (
            F.avg_pool2d(level, pooling, 1, pooling // 2, count_include_pad=False)
            for level in (fine, coarse)
        )
    if layout == 16:
        return [None, fine, coarse]
    if layout == 32:
        return [None, F.avg_pool2d(fine, 2), F.avg_pool2d(coarse, 2)]
    # stride 8: the fine features repeated 2 x 2, which patch_vectors averages back to them
    upsampled = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear")
    return [None, fine.repeat_interleave(2, -2).repeat_interleave(2, -1), upsampled]


class LaidOutMemory(PatchMemory):
    """A patch memory of the vectors of another ``layout`` (and ``pooling``)."""

    def __init__(self, bank: torch.Tensor, *, layout: int, pooling: int) -> None:
        super().__init__(bank)
        self.layout, self.layout_pooling = layout, pooling

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.distances(patch_vectors(laid_out(features, self.layout, self.layout_pooling)))


def laid_out_memory(
    model: HFR,
    training_images: Sequence[ImageInput],
    *,
    layout: int,
    pooling: int,
    fraction: float,
    limit: int,
) -> LaidOutMemory:
    """The memory of ``layout`` fitted from ``training_images`` as training fits its own."""
    batches = (
        laid_out(levels, layout, pooling)
        for levels in feature_batches(model, training_images, None, 16, False, ignore_progress)
    )
    fitted = PatchMemory.from_features(
        batches, fraction=fraction, limit=limit, images=len(training_images), dims="all"
    )
    return LaidOutMemory(fitted.bank, layout=layout, pooling=pooling)


@torch.inference_mode()
def memory_alone(model: HFR, dataset, sigma: float) -> EvaluationMaps:
    """The maps of ``model``'s memory by itself, upsampled and smoothed as the model's map."""
    memory, maps = model.term("memory"), []
    for start in range(0, len(dataset.test), 16):
        batch = model.preprocess([s.image for s in dataset.test[start : start + 16]])
        distances = memory(model.encode(batch))
        maps.append(anomaly.anomaly_map([distances], tuple(batch.shape[-2:]), sigma).cpu())
    maps = torch.cat(maps).numpy()
    masks = np.stack([s.mask(maps.shape[-2:]) for s in dataset.test]) if dataset.has_masks else []
    return EvaluationMaps(
        maps=maps,
        masks=np.asarray(masks),
        labels=np.array([s.label for s in dataset.test]),
        scores=maps.reshape(len(maps), -1).max(1),
        defects=[s.defect for s in dataset.test],
    )


def figures(values: dict) -> dict:
    """The row's figures of a :func:`compute_metrics` result."""
    return {name: values.get(name) for name in (*METRICS, *PER_TYPE)}


def main() -> None:
    parser = study_parser(__doc__)
    parser.add_argument("--layouts", default="16", help="comma-separated: 16, 32, 8")
    parser.add_argument("--poolings", default=None, help="comma-separated (default: the model's)")
    parser.add_argument("--fractions", default=None, help="comma-separated (default: the model's)")
    parser.add_argument("--limits", default=None, help="comma-separated, 0: none (the model's)")
    parser.add_argument("--weights", default=None, help="comma-separated (default: the model's)")
    parser.add_argument("--sigmas", default=None, help="comma-separated (default: the model's)")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    model = HFR.from_pretrained(args.model).eval()
    trained, training = model.config, model.config.training or {}
    if model.term("memory") is None or trained.scoring.memory_context:
        parser.error(f"{args.model}: a model with a patch memory and no memory context")
    layouts = [int(layout) for layout in args.layouts.split(",")]
    if not set(layouts) <= set(LAYOUTS):
        parser.error(f"--layouts: {', '.join(map(str, LAYOUTS))}")

    def numbers(option: str | None, own: float) -> list[float]:
        return [own] if option is None else [float(value) for value in option.split(",")]

    poolings = numbers(args.poolings, trained.scoring.memory_pooling)
    fractions = numbers(args.fractions, training["memory_fraction"])
    limits = numbers(args.limits, training.get("memory_limit", DEFAULT_MEMORY_LIMIT))
    weights = numbers(args.weights, trained.scoring.memory_weight)
    sigmas = numbers(args.sigmas, trained.sigma)
    dataset = load(args.protocol, args.data, args.category)
    training_images, held_out = training_split(model, dataset.train)
    rows = []
    for layout, pooling, fraction, limit in itertools.product(layouts, poolings, fractions, limits):
        pooling, limit = int(pooling), int(limit)
        started = time.perf_counter()
        model.terms["memory"] = laid_out_memory(
            model, training_images, layout=layout, pooling=pooling, fraction=fraction,
            limit=limit or NO_LIMIT,
        )  # fmt: skip
        setting = {
            "layout": layout,
            "pooling": pooling,
            "fraction": fraction,
            "limit": limit,
            "memory_size": len(model.term("memory").bank),
            "coreset_seconds": time.perf_counter() - started,
        }
        for sigma in sigmas:
            alone = figures(compute_metrics(memory_alone(model, dataset, sigma)))
            for weight in weights:
                scoring = replace(trained.scoring, memory_weight=weight, memory_scale=None)
                model.config = trained.replace(scoring=scoring, sigma=sigma)
                recalibrate_as_trained(model, held_out)
                maps, _ = collect(model, dataset, progress=False)
                values = {**compute_metrics(maps), **threshold_rates(model, maps)}
                row = {**setting, "sigma": sigma, "weight": weight, **figures(values)}
                row |= {name: values[name] for name in ("threshold_tpr", "threshold_fpr")}
                row |= {"threshold": model.config.calibration.threshold, "alone": alone}
                rows.append(row)
                print(
                    f"layout {layout} pooling {pooling} fraction {fraction:g} limit {limit} "
                    f"({setting['memory_size']} kept) sigma {sigma:g} weight {weight:g}:  "
                    + " / ".join(f"{row[name]:.4f}" for name in METRICS)
                    + "  alone "
                    + " / ".join(f"{alone[name]:.4f}" for name in METRICS),
                    flush=True,
                )
    record = {
        "model": args.model,
        "encoder": trained.encoder,
        "input_size": list(trained.preprocessing.input_size),
        "category": args.category,
        "seed": training.get("seed", 0),
        "command": shlex.join(["python", *sys.argv]),
        "num_training_images": len(training_images),
        "num_held_out_normal": len(held_out),
        "results": rows,
    }
    write_json(args.output, record)


if __name__ == "__main__":
    main()
