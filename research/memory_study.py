"""The patch memory's coreset fraction, its neighbourhood pooling, and the input's colour in its
vectors, compared on one trained model (no retraining).

python research/memory_study.py --model MODEL_DIR --data ../shared/datasets/mvtec_ad \
    --category screw --fractions 0.01,0.03,0.05 --shares 0,0.12 \
    --output research/results/memory_study/seed0/screw_mobilenetv2.json
python research/memory_study.py --model MODEL_DIR --data runs/structural6 --category screw \
    --poolings 1,3 --output pooling.json
python research/memory_study.py --model MODEL_DIR --data ../shared/datasets/mnist \
    --protocol mnist --category 8 --fractions 0.01,0.05 --output 8.json

For each pooling (the side of the neighbourhood each feature is averaged over first,
``scoring.memory_pooling``), each fraction (the share of the training images' cells the greedy
coreset keeps) and each colour share, the memory is rebuilt from the model's training images, in
the order training used them, and its scale and the threshold are set afresh from the held-out
normal images as training sets them; then the model is measured on the test split (image AUROC,
pixel AUROC, AUPRO, each per defect type, the share of defective and good images flagged) and,
on MVTec AD, by the synthetic large-defect check (``synthetic_defects.py``, seed 0) on the good
test images. Training never sees the memory, so this is what a model trained with each setting
would score; the model's own pooling and fraction with share 0 reproduce its own memory and
threshold.

The colour: an ImageNet encoder keeps a region's features when the region is made brighter or
darker, so on parts placed at random, where the per-position colour term is off, nothing in
the map sees such a change. With a share above 0 each stride-16 cell's memory vector gets the
mean colour of its 16 x 16 pixels of the normalised input, multiplied by a factor chosen so
that the colour's total variance over the training cells is ``share`` times the features'.

The threshold fits: with ``--threshold-fits lognormal,normal`` each row also records the
verdict with the threshold set by each way of reading the held-out scores (``verdict_by_fit``;
:meth:`~hfr.scoring.calibration.Calibration.from_normal_scores`); the row's own figures use
the model's.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F
from sigma_study import load, study_parser
from synthetic_defects import synthetic_check

from hfr import HFR
from hfr.config import DEFAULT_TARGET_FPR
from hfr.config.compat import LEGACY_MEMORY_FRACTION
from hfr.evaluate import EvaluationMaps, collect, compute_metrics, threshold_rates
from hfr.images import ImageInput, load_rgb
from hfr.scoring.terms.memory import PatchMemory, kept_vectors, patch_vectors
from hfr.serving.outputs import write_json
from hfr.train import recalibrate, training_split

METRICS = ("image_auroc", "pixel_auroc", "aupro")


def cell_colour(images: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """The mean colour of a normalised ``(B, 3, H, W)`` batch over each cell of the
    ``(B, C, h, w)`` patch ``vectors``."""
    return F.adaptive_avg_pool2d(images.float(), vectors.shape[-2:])


class ColouredPatchMemory(PatchMemory):
    """A patch memory whose vectors end with ``factor`` times the cell's mean colour (none at
    ``factor`` 0); the batch's normalised images are handed over in ``images`` before each
    call."""

    def __init__(self, bank: torch.Tensor, *, pooling: int, context: float, factor: float) -> None:
        super().__init__(bank, pooling=pooling, context=context)
        self.factor = factor
        self.images: torch.Tensor | None = None

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        vectors = patch_vectors(features, self.pooling, self.context)
        if self.factor == 0:  # the plain memory's vectors, searched as the model searches them
            return self.distances(vectors)
        colour = self.factor * cell_colour(self.images, vectors)
        return self.distances(torch.cat([vectors, colour], 1))


def hand_inputs_to_memory(model: HFR) -> None:
    """Give each batch the encoder sees (the normalised images) to the model's memory while it
    is a :class:`ColouredPatchMemory`: a forward pre-hook on the encoder, the model untouched."""

    def hand_over(_encoder: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if isinstance(model.term("memory"), ColouredPatchMemory):
            model.term("memory").images = inputs[0]

    model.encoder.register_forward_pre_hook(hand_over)


def training_cells(
    model: HFR, images: Sequence[ImageInput], pooling: int, batch_size: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(N, C)`` patch vectors (features averaged over ``pooling`` x ``pooling`` first,
    with the model's memory context) and ``(N, 3)`` cell colours of every cell of ``images``."""
    context = model.config.scoring.memory_context
    vectors, colours = [], []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = model.preprocess(images[start : start + batch_size])
            cells = patch_vectors(model.encode(batch), pooling, context)
            vectors.append(cells.permute(0, 2, 3, 1).flatten(0, 2))
            colours.append(cell_colour(batch, cells).permute(0, 2, 3, 1).flatten(0, 2))
    return torch.cat(vectors), torch.cat(colours)


def coloured_memory(
    vectors: torch.Tensor,
    colours: torch.Tensor,
    *,
    fraction: float,
    share: float,
    pooling: int,
    context: float,
) -> ColouredPatchMemory:
    """The coreset memory of ``fraction`` of the cells, with their colour at ``share`` of the
    features' total variance, kept as :class:`~hfr.scoring.terms.memory.PatchMemory` keeps it."""
    factor = (share * vectors.var(0).sum() / colours.var(0).sum()).sqrt().item()
    cells = torch.cat([vectors, factor * colours], 1) if factor > 0 else vectors
    bank = kept_vectors(cells, fraction)
    return ColouredPatchMemory(bank, pooling=pooling, context=context, factor=factor)


def verdicts_by_fit(
    model: HFR,
    held_out: Sequence[ImageInput],
    maps: EvaluationMaps,
    *,
    target_fpr: float,
    fits: Sequence[str],
) -> dict[str, dict[str, float | int | None]]:
    """For each fit, the threshold set from the ``held_out`` scores, how many of them lie above
    it, and the share of defective and good test images (``maps``) it flags; the model keeps
    its own calibration."""
    own = model.config
    verdicts = {}
    for fit in fits:
        calibration = recalibrate(
            model, held_out, target_fpr=target_fpr, threshold_fit=fit, progress=False
        )
        verdicts[fit] = {
            "threshold": calibration.threshold,
            "held_out_above_threshold": calibration.num_above,
            **threshold_rates(model, maps),
        }
        model.config = own
    return verdicts


def main() -> None:
    parser = study_parser(__doc__)
    parser.add_argument(
        "--fractions", help="comma-separated (default: the model's own, 0.01 before 0.16)"
    )
    parser.add_argument("--shares", default="0", help="comma-separated")
    parser.add_argument("--poolings", help="comma-separated sides (default: the model's own)")
    parser.add_argument(
        "--threshold-fits", help="comma-separated: lognormal, normal (default: the model's own)"
    )
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    model = HFR.from_pretrained(args.model).eval()
    hand_inputs_to_memory(model)
    if model.term("memory") is None:
        parser.error(f"{args.model} holds no patch memory: train it with a memory weight")
    trained, training = model.config, model.config.training or {}
    dataset = load(args.protocol, args.data, args.category)
    training_images, held_out = training_split(model, dataset.train)
    poolings = args.poolings or str(trained.scoring.memory_pooling)
    good = None  # the synthetic check on MVTec AD's good test images only, not on digits
    if args.protocol == "mvtec":
        good = [load_rgb(s.image) for s in dataset.test if s.label == 0]
    target_fpr = training.get("target_fpr", DEFAULT_TARGET_FPR)
    fractions = args.fractions or str(training.get("memory_fraction", LEGACY_MEMORY_FRACTION))
    rows = []
    cells = {}
    for pooling, fraction, share in (
        (int(pooling), float(fraction), float(share))
        for pooling in poolings.split(",")
        for fraction in fractions.split(",")
        for share in args.shares.split(",")
    ):
        if pooling not in cells:
            cells[pooling] = training_cells(model, training_images, pooling)
        vectors, colours = cells[pooling]
        started = time.perf_counter()
        model.terms["memory"] = coloured_memory(
            vectors,
            colours,
            fraction=fraction,
            share=share,
            pooling=pooling,
            context=trained.scoring.memory_context,
        )
        coreset_seconds = time.perf_counter() - started
        scoring = replace(trained.scoring, memory_pooling=pooling, memory_scale=None)
        model.config = trained.replace(scoring=scoring)
        recalibrate(model, held_out, target_fpr=target_fpr, progress=False)
        maps, _ = collect(model, dataset, progress=False)
        values = {**compute_metrics(maps), **threshold_rates(model, maps)}
        row = {
            "pooling": pooling,
            "fraction": fraction,
            "memory_size": len(model.term("memory").bank),
        }
        row |= {
            "coreset_seconds": coreset_seconds,
            "share": share,
            "factor": model.term("memory").factor,
        }
        row |= {name: values.get(name) for name in (*METRICS, "threshold_tpr", "threshold_fpr")}
        for name in ("per_defect_pixel_auroc", "per_defect_aupro"):
            if name in values:
                row[name] = values[name]
        row["threshold"] = model.config.calibration.threshold
        row["held_out_above_threshold"] = model.config.calibration.num_above
        if args.threshold_fits:
            row["verdict_by_fit"] = verdicts_by_fit(
                model, held_out, maps, target_fpr=target_fpr, fits=args.threshold_fits.split(",")
            )
        if good is not None:
            synthetic = synthetic_check(model, good)
            row["synthetic_pixel_auroc"] = synthetic["pixel_auroc"]
            row["synthetic_pixel_auroc_per_change"] = synthetic["pixel_auroc_per_change"]
        rows.append(row)
        print(
            f"pooling {pooling} fraction {fraction:5g} share {share:5g}  "
            + " / ".join("-" if row[name] is None else f"{row[name]:.4f}" for name in METRICS)
            + f"  flagged {row['threshold_tpr']:.3f} / {row['threshold_fpr']:.3f}"
            + (f"  synthetic {row['synthetic_pixel_auroc']:.4f}" if good is not None else "")
            + "".join(
                f"  {fit}: {verdict['threshold_tpr']:.3f} / {verdict['threshold_fpr']:.3f}"
                for fit, verdict in row.get("verdict_by_fit", {}).items()
            )
        )
    record = {
        "model": args.model,
        "encoder": trained.encoder,
        "protocol": args.protocol,
        "category": args.category,
        "seed": training.get("seed", 0),
        "command": shlex.join(["python", *sys.argv]),
        "num_training_images": len(training_images),
        "num_training_cells": len(vectors),  # each pooling describes the same cells
        "num_held_out_normal": len(held_out),
        "results": rows,
    }
    write_json(args.output, record)


if __name__ == "__main__":
    main()
