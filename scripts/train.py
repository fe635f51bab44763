"""Train one HFR category and save it with ``save_pretrained`` (config, weights, model card).

python scripts/train.py --data DIR --category bottle --encoder mobilenetv2_100 \
    --encoder-weights mobilenet_v2-b0353104.pth --epochs 50 --output models/hfr-mvtec-bottle
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import command_line
from hfr import HFR
from hfr.data import AnomalyDataset, load_folder, load_mvtec
from hfr.encoder import FEATURE_LOCATIONS
from hfr.pipeline import train_category
from hfr.train import TrainConfig, TrainResult


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Encoder and optimiser options, shared with scripts/push.py."""
    defaults = TrainConfig()
    parser.add_argument("--encoder", default="resnet18.tv_in1k", help="timm model name")
    parser.add_argument(
        "--encoder-weights", default=None, help="weights file (default: timm's, from the Hub)"
    )
    parser.add_argument(
        "--feature-location",
        choices=FEATURE_LOCATIONS,
        default="stage",
        help="stage outputs (paper) or the expansion layers of MobileNet/EfficientNet encoders",
    )
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--sigma", type=float, default=4.0, help="Gaussian smoothing of the map")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--no-feature-cache", action="store_true", help="re-encode images every epoch"
    )
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")


def training_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        cache_features=not args.no_feature_cache,
    )


def train_from_args(
    dataset: AnomalyDataset, output: str | Path, args: argparse.Namespace, **options: object
) -> tuple[HFR, TrainResult]:
    """``train_category`` with the options of :func:`add_training_arguments`."""
    return train_category(
        dataset,
        output,
        encoder=args.encoder,
        encoder_weights=args.encoder_weights,
        feature_location=args.feature_location,
        image_size=args.image_size,
        sigma=args.sigma,
        config=training_config(args),
        device=args.device,
        command=command_line(),
        **options,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--data", help="dataset root in MVTec AD layout (DIR/<category>/train/good)"
    )
    source.add_argument("--train-dir", help="a plain folder of normal training images")
    parser.add_argument("--category", help="category under --data (required with --data)")
    parser.add_argument(
        "--dataset-name", default="mvtec_ad", help="recorded in the config and card"
    )
    add_training_arguments(parser)
    parser.add_argument(
        "--evaluate", action="store_true", help="evaluate on the test split afterwards"
    )
    parser.add_argument("--output", required=True, help="model folder to write")
    args = parser.parse_args()
    if args.data and not args.category:
        parser.error("--data needs --category")
    if args.data:
        dataset = load_mvtec(args.data, args.category, name=args.dataset_name)
    else:
        dataset = load_folder(args.train_dir, category=args.category)
    model, result = train_from_args(dataset, args.output, args, run_evaluation=args.evaluate)
    if model.evaluation:
        print(json.dumps(model.evaluation, indent=2))
    epochs = max(len(result.losses), 1)
    print(
        f"features {result.feature_seconds:.1f} s, {result.train_seconds / epochs:.2f} s/epoch; "
        f"trained {len(result.losses)} epochs in {model.training_info['seconds']} s, "
        f"final loss {result.losses[-1]:.4f}; threshold {model.calibration.threshold:.4f}; "
        f"saved to {args.output}"
    )


if __name__ == "__main__":
    main()
