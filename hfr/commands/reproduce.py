"""``hfr reproduce``: the paper's protocols on the data available, each as a table beside the
paper's numbers.

    hfr reproduce mvtec --data DIR --encoder mobilenetv2_100 \
        --encoder-weights mobilenet_v2-b0353104.pth --output-dir OUT
    hfr reproduce mnist --data DIR --encoder mobilenetv2_100 \
        --encoder-weights mobilenet_v2-b0353104.pth --feature-location expansion --output-dir OUT
    hfr reproduce fashion-mnist ...   # default data: /usr/share/datasets/fashion-mnist
    hfr reproduce cifar10 --data DIR_WITH_train_AND_test_CLASS_FOLDERS ...

MVTec runs with the paper's settings (256x256, lr 0.4, 50 epochs, more for categories of
fewer than about 190 training images); the one-class protocols
default to 32x32, lr 0.04 and 10 epochs (docs/results.md). Every run (a category
or a normal class) is saved as JSON when it finishes; running the command again skips finished
runs and resumes an interrupted one from its checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from hfr.cli import ProtocolDefault
from hfr.commands.common import model_settings, run_options
from hfr.config import TERMS
from hfr.data import (
    AnomalyDataset,
    categories,
    load_class_folders_one_class,
    load_idx_one_class,
    load_mvtec,
)
from hfr.errors import DatasetLayoutError
from hfr.pipeline import train_category
from hfr.serving.outputs import write_json

logger = logging.getLogger(__name__)

PAPER_MVTEC = {  # mean of the 15 MVTec AD categories (REFERENCE.md section 2)
    "HFR paper, R18": (0.976, 0.966, 0.906),
    "HFR paper, wR50": (0.986, 0.977, 0.925),
}
PAPER_ONE_CLASS = {  # mean AUROC over 10 classes: (R18, wR50)
    "mnist": (0.985, 0.990),
    "fashion-mnist": (0.939, 0.948),
    "cifar10": (0.577, 0.663),
}
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
DEFAULT_DATA = {"fashion-mnist": "/usr/share/datasets/fashion-mnist"}
# What calibration measured, left out of a run's settings.
MEASURED = frozenset({"level_scales", *(f"{name}_scale" for name in TERMS)})
ONE_CLASS_DEFAULTS = {"input_size": 32, "epochs": 10, "lr": 0.04}
PROTOCOL_DEFAULTS = {  # training options each protocol uses unless given on the command line
    "mvtec": {"input_size": 256, "epochs": None, "lr": 0.4},  # epochs: the library default
    "mnist": ONE_CLASS_DEFAULTS,
    "fashion-mnist": ONE_CLASS_DEFAULTS,
    "cifar10": ONE_CLASS_DEFAULTS,
}


def runs(args: argparse.Namespace) -> list[tuple[str, Callable[[], AnomalyDataset]]]:
    """(run name, dataset loader) pairs of the chosen protocol."""
    data = args.data or DEFAULT_DATA.get(args.protocol)
    if data is None:
        raise DatasetLayoutError(f"{args.protocol} needs --data")
    if args.protocol == "mvtec":
        return [(c, lambda c=c: load_mvtec(data, c)) for c in categories(data)]
    if args.protocol in ("mnist", "fashion-mnist"):
        return [
            (str(k), lambda k=k: load_idx_one_class(data, k, name=args.protocol)) for k in range(10)
        ]
    names = sorted(p.name for p in (Path(data) / "test").iterdir() if p.is_dir())
    return [
        (c, lambda c=c: load_class_folders_one_class(data, c)) for c in names or CIFAR10_CLASSES
    ]


def run_one(
    name: str, load: Callable[[], AnomalyDataset], args: argparse.Namespace, output: Path
) -> dict:
    dataset: AnomalyDataset = load()
    began = time.perf_counter()
    model, result = train_category(
        dataset, output / "models" / name, settings=model_settings(args), options=run_options(args)
    )
    return {
        "run": name,
        **model.config.evaluation,
        "train_seconds": model.config.training["seconds"],
        "epochs": len(result.losses),
        "total_seconds": round(time.perf_counter() - began, 1),
        "encoder": args.encoder,
        "encoder_weights": args.encoder_weights,
        "feature_location": args.feature_location,
        "decoder": args.decoder,
        "image_size": args.input_size,
        "resize": model.config.preprocessing.resize,
        "sigma": model.config.sigma,
        **{k: v for k, v in model.config.scoring.to_dict().items() if k not in MEASURED},
        "position_share": model.config.training.get("position_share"),
        **{k: v for k, v in model.config.training.items() if k.startswith("auto_")},
        "lr": args.lr,
        "hard_fraction": args.hard_fraction,
        "hard_weight": args.hard_weight,
    }


def summary(protocol: str, results: list[dict], args: argparse.Namespace) -> str:
    """A markdown table of the runs, their mean, and the paper's figures."""
    command = args.command_line
    label = f"HFR (ours), {args.encoder}"
    if args.feature_location != "stage":
        label += f" ({args.feature_location} features)"
    if protocol == "mvtec":
        lines = [
            "| category | image AUROC | pixel AUROC | AUPRO | train s |",
            "|---|---|---|---|---|",
        ]
        for r in results:
            lines.append(
                f"| {r['run']} | {r['image_auroc']:.4f} | {r['pixel_auroc']:.4f} | "
                f"{r['aupro']:.4f} | {r['train_seconds']} |"
            )
        lines += ["", "| system | image AUROC | pixel AUROC | AUPRO |", "|---|---|---|---|"]
        means = [
            sum(r[k] for r in results) / len(results)
            for k in ("image_auroc", "pixel_auroc", "aupro")
        ]
        lines.append(
            f"| {label}, mean of {len(results)} categories found | "
            + " | ".join(f"{m:.3f}" for m in means)
            + " |"
        )
        for system, values in PAPER_MVTEC.items():
            lines.append(
                f"| {system}, mean of 15 categories | "
                + " | ".join(f"{v:.3f}" for v in values)
                + " |"
            )
    else:
        lines = ["| normal class | AUROC | train s |", "|---|---|---|"]
        lines += [
            f"| {r['run']} | {r['image_auroc']:.4f} | {r['train_seconds']} |" for r in results
        ]
        mean = sum(r["image_auroc"] for r in results) / len(results)
        r18, wr50 = PAPER_ONE_CLASS[protocol]
        lines += [
            "",
            "| system | mean AUROC |",
            "|---|---|",
            f"| {label}, {len(results)} classes | {mean:.4f} |",
            f"| HFR paper, R18 | {r18:.3f} |",
            f"| HFR paper, wR50 | {wr50:.3f} |",
        ]
    return f"Command:\n\n```\n{command}\n```\n\n" + "\n".join(lines) + "\n"


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    for option, value in PROTOCOL_DEFAULTS[args.protocol].items():
        if isinstance(getattr(args, option), ProtocolDefault):
            setattr(args, option, value)
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    results = []
    for name, load in runs(args):
        if args.only and name not in args.only.split(","):
            continue
        record = output / f"{name}.json"
        if record.is_file():
            logger.info("%s: done before, kept (%s)", name, record)
        else:
            write_json(record, run_one(name, load, args, output))
        results.append(json.loads(record.read_text()))
        logger.info("%s: image AUROC %.4f", name, results[-1]["image_auroc"])
    (output / "summary.md").write_text(summary(args.protocol, results, args))
    print((output / "summary.md").read_text())
    return 0
