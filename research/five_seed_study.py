"""Does a setting cost accuracy? Models trained with ``hfr train`` and a candidate's options
against models trained with the reference's, on five seeds of bottle and screw with both
backbones, held to the bar every change of a default meets: no five-seed mean lower by more
than 0.005 image AUROC or 0.002 pixel AUROC / AUPRO.

python research/five_seed_study.py --data ../shared/datasets/mvtec_ad \
    --candidate="--image-size 512" --models-dir runs/size512 --reference-dir runs/guarantee \
    --output research/results/image_size_0.25

(``--candidate=...`` with ``=``: argparse reads a value that starts with ``--`` as an option.)
With ``--reference-records`` (an earlier study's ``measured/reference`` folder) instead of
``--reference-dir``, the reference figures are that study's records of the same backbone, seed
and category, each kept with its model's weights fingerprint, and no reference model is
trained: for a reference whose settings have not changed since it was recorded.
Each model is trained as a user trains it (``hfr train`` with the defaults, the backbone's
ImageNet weights, ``--seed`` and the options; a model already in its folder, laid out as
``BACKBONE/seedS/CATEGORY``, is reused) and measured with :func:`hfr.evaluate.evaluate` on the
category's test split. Each measurement is kept in ``OUTPUT/measured/`` beside the model's
weights fingerprint, so that a study run again (or run one model at a time while the others
train) measures each model once. Each row also records the model's input size, training
seconds and milliseconds per test image, and the input ``--image-size auto`` would choose for
the category's training images at the default budget.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from hfr import HFR
from hfr.calibrate import recalibrate
from hfr.cli import main as hfr_main
from hfr.config import DEFAULT_INPUT_BUDGET
from hfr.data import load_mvtec
from hfr.evaluate import evaluate
from hfr.images import ImageInput
from hfr.preprocessing import auto_input_size, typical_size
from hfr.serving.outputs import write_json
from hfr.train import training_split

BACKBONES = {
    "mobilenetv2": ("mobilenetv2_100", "mobilenet_v2-b0353104.pth"),
    "efficientnet_lite0": ("tf_efficientnet_lite0", "efficientnet-lite0-57934424.pth"),
}
METRICS = {"image_auroc": 0.005, "pixel_auroc": 0.002, "aupro": 0.002}  # the largest drop allowed
PER_TYPE = ("per_defect_pixel_auroc", "per_defect_aupro")
SCRIPT = "research/five_seed_study.py"


def trained_model(
    folder: Path, data: str, backbone: str, category: str, seed: int, options: list[str]
) -> HFR:
    """The model in ``folder``, trained there with ``hfr train`` and ``options`` when missing."""
    if not (folder / "config.json").is_file():
        encoder, weights = BACKBONES[backbone]
        argv = ["-q", "train", "--data", data, "--category", category, "--encoder", encoder]
        argv += ["--encoder-weights", weights, "--seed", str(seed), *options]
        if hfr_main([*argv, "--output", str(folder)]) != 0:
            raise SystemExit(f"training {backbone} {category} seed {seed} failed")
    return HFR.from_pretrained(folder)


def measured(folder: Path, model: HFR, data: str, category: str, cache: Path) -> dict:
    """The model's image AUROC, pixel AUROC and AUPRO on the test split, its input size,
    training seconds and ms per test image: from ``cache`` when it holds this model's
    measurement (the same weights file), else measured and written there."""
    fingerprint = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    if cache.is_file():
        kept = json.loads(cache.read_text())
        if kept.get("weights_sha256") == fingerprint:
            return kept["measured"]
    report = evaluate(model, load_mvtec(data, category), progress=False)
    config = model.config
    result = {
        "input_size": list(config.preprocessing.input_size),
        "decoder_width": config.decoder_width,
        **{name: report[name] for name in METRICS},
        "train_seconds": (config.training or {}).get("seconds"),
        "ms_per_image": report["inference_ms_per_image"],
    }
    write_json(cache, {"model": str(folder), "weights_sha256": fingerprint, "measured": result})
    return result


@functools.cache
def auto_choice(data: str, category: str) -> tuple[int, int]:
    """The input ``--image-size auto`` chooses for the category's training images at the
    default budget (read once per category)."""
    images = load_mvtec(data, category).train
    return auto_input_size(typical_size(images), DEFAULT_INPUT_BUDGET**2)


def summary_rows(rows: list[dict]) -> list[dict]:
    """Per category and backbone: each metric's mean over the seeds for the reference and the
    candidate, its change and whether that is within the bar, and the mean costs."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["category"], row["backbone"]), []).append(row)
    result = []
    for (category, backbone), group in groups.items():
        line = {"category": category, "backbone": backbone, "seeds": len(group)}
        for name, allowed in METRICS.items():
            reference = float(np.mean([row["reference"][name] for row in group]))
            candidate = float(np.mean([row["candidate"][name] for row in group]))
            line[name] = {"reference": reference, "candidate": candidate}
            line[name]["change"] = candidate - reference
            line[name]["within_bar"] = candidate - reference >= -allowed
        for cost in ("ms_per_image", "train_seconds"):
            values = [[row[side][cost] for row in group] for side in ("reference", "candidate")]
            known = all(v is not None for side in values for v in side)
            line[cost] = [float(np.mean(side)) for side in values] if known else None
        result.append(line)
    return result


def table(rows: list[dict], reference: str, candidate: str) -> str:
    """The summary as a markdown table."""
    lines = [
        f"| category | backbone | seeds | image AUROC {reference} -> {candidate} | pixel AUROC | "
        "AUPRO | ms / test image | within the bar |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [
            f"{row[name]['reference']:.4f} -> {row[name]['candidate']:.4f} "
            f"({row[name]['change']:+.4f})"
            for name in METRICS
        ]
        cost = row.get("ms_per_image")
        cells.append(f"{cost[0]:.0f} -> {cost[1]:.0f}" if cost else "-")
        within = all(row[name]["within_bar"] for name in METRICS)
        lines.append(
            f"| {row['category']} | {row['backbone']} | {row['seeds']} | {' | '.join(cells)} | "
            f"{'yes' if within else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def parser(description: str) -> argparse.ArgumentParser:
    """The options every five-seed study takes (the settings compared are the caller's)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", required=True, help="MVTec AD root")
    parser.add_argument("--categories", default="bottle,screw")
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--models-dir", required=True, help="where the candidate models go")
    references = parser.add_mutually_exclusive_group(required=True)
    references.add_argument("--reference-dir", help="the reference models (or where)")
    references.add_argument(
        "--reference-records",
        help="an earlier study's measured/reference folder: its figures, no reference models",
    )
    parser.add_argument("--output", required=True, help="folder for runs.json, summary.*")
    parser.add_argument(
        "--trained-only",
        action="store_true",
        help="leave out the seeds whose candidate model is not trained yet (no training)",
    )
    return parser


def run(
    args: argparse.Namespace,
    options: dict[str, list[str]],
    labels: tuple[str, str],
    command: str,
) -> int:
    """Train (where missing) and measure the reference and candidate models of ``args``
    (``options``: the ``hfr train`` options of each side), write the records under
    ``args.output`` with ``command`` and print the summary labelled ``labels``."""
    output = Path(args.output)
    rows = []
    for backbone in args.backbones.split(","):
        for category in args.categories.split(","):
            for seed in map(int, args.seeds.split(",")):
                where = Path(backbone, f"seed{seed}", category)
                if (
                    args.trained_only
                    and not (Path(args.models_dir, where) / "config.json").exists()
                ):
                    continue
                row = {"category": category, "backbone": backbone, "seed": seed}
                sides = [("candidate", args.models_dir)]
                if args.reference_records:
                    record = Path(args.reference_records, where.with_suffix(".json"))
                    if not record.is_file():
                        raise SystemExit(f"no reference record {record}")
                    kept = json.loads(record.read_text())
                    row["reference"] = kept["measured"]
                    row["reference_record"] = {
                        "path": str(record),
                        **{k: kept[k] for k in ("model", "weights_sha256")},
                    }
                else:
                    sides.insert(0, ("reference", args.reference_dir))
                for side, root in sides:
                    folder = Path(root, where)
                    model = trained_model(
                        folder, args.data, backbone, category, seed, options[side]
                    )
                    cache = output / "measured" / side / where.with_suffix(".json")
                    row[side] = measured(folder, model, args.data, category, cache)
                row["auto_input_size"] = list(auto_choice(args.data, category))
                rows.append(row)
                print(row, flush=True)
    summary = summary_rows(rows)
    write_json(output / "runs.json", {"command": command, "options": options, "runs": rows})
    write_json(output / "summary.json", {"command": command, "summary": summary})
    (output / "summary.md").write_text(f"`{command}`\n\n{table(summary, *labels)}")
    print(table(summary, *labels))
    return 0


def rescoring_parser(description: str) -> argparse.ArgumentParser:
    """The options every study that rescores the reference models takes (the variants compared
    are the caller's)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", required=True, help="MVTec AD root, or a structural check")
    parser.add_argument("--categories", default="bottle,screw")
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--reference-dir", required=True)
    parser.add_argument("--output", required=True)
    return parser


def recalibrate_as_trained(model: HFR, held_out: Sequence[ImageInput]) -> None:
    """Set ``model``'s threshold (and any scale left unset) afresh on the ``held_out`` normal
    images, at the false-alarm rate its training recorded, as training sets them."""
    target_fpr = (model.config.training or {}).get("target_fpr")
    recalibrate(model, held_out, target_fpr=target_fpr, progress=False)


def rescored_runs(
    args: argparse.Namespace,
    variants: Sequence[float],
    rescore: Callable[[HFR, float, list[ImageInput], list[ImageInput]], None],
) -> dict[float, list[dict]]:
    """For each reference model of ``args`` (``--reference-dir``, trained there with the
    defaults where missing) and each of ``variants``: the model rescored by ``rescore(model,
    variant, training_images, held_out)`` (the split training made) and measured on the test
    split (``METRICS``, each defect type's pixel figures where the data has types, the memory's
    search), beside the reference's measurement, as rows for :func:`summary_rows`."""
    output = Path(args.output)
    rows: dict[float, list[dict]] = {variant: [] for variant in variants}
    for backbone in args.backbones.split(","):
        for category in args.categories.split(","):
            dataset = load_mvtec(args.data, category)
            for seed in map(int, args.seeds.split(",")):
                where = Path(backbone, f"seed{seed}", category)
                folder = Path(args.reference_dir, where)
                model = trained_model(folder, args.data, backbone, category, seed, [])
                cache = output / "measured" / "reference" / where.with_suffix(".json")
                reference = measured(folder, model, args.data, category, cache)
                training_images, held_out = training_split(model, dataset.train)
                for variant in variants:
                    model = HFR.from_pretrained(folder)
                    rescore(model, variant, training_images, held_out)
                    report = evaluate(model, dataset, progress=False)
                    memory = model.term("memory")
                    candidate = {name: report[name] for name in METRICS}
                    candidate |= {name: report[name] for name in PER_TYPE if name in report}
                    candidate |= {"search_dims": memory.search_dims}
                    candidate |= {"vector_dims": memory.bank.shape[1]}
                    candidate |= {"ms_per_image": report["inference_ms_per_image"]}
                    candidate["train_seconds"] = reference["train_seconds"]
                    row = {"category": category, "backbone": backbone, "seed": seed}
                    rows[variant].append(row | {"reference": reference, "candidate": candidate})
                    print(variant, rows[variant][-1], flush=True)
    return rows


def write_rescored(
    rows: dict[float, list[dict]], output: Path, command: str, name: str, label: str
) -> None:
    """Each variant's runs and summary under ``output/NAME_VARIANT/``, the table's columns
    ``label`` (the reference's, then the variant's with ``{}`` for its value)."""
    for variant, variant_rows in rows.items():
        folder = output / f"{name}_{variant:g}"
        summary = summary_rows(variant_rows)
        write_json(folder / "runs.json", {"command": command, "runs": variant_rows})
        write_json(folder / "summary.json", {"command": command, "summary": summary})
        reference, candidate = label
        labels = (reference, candidate.format(f"{variant:g}"))
        (folder / "summary.md").write_text(f"`{command}`\n\n{table(summary, *labels)}")
        print(table(summary, *labels))


def main(argv: list[str] | None = None) -> int:
    study = parser(__doc__.split("\n\n")[0])
    study.add_argument("--candidate", required=True, help="hfr train options, one string")
    study.add_argument("--reference", default="", help="hfr train options (default: none)")
    args = study.parse_args(argv)
    options = {side: shlex.split(getattr(args, side)) for side in ("reference", "candidate")}
    labels = (args.reference or "defaults", args.candidate)
    command = shlex.join(["python", SCRIPT, *(sys.argv[1:] if argv is None else argv)])
    return run(args, options, labels, command)


if __name__ == "__main__":
    raise SystemExit(main())
