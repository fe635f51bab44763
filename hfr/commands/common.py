"""Pieces the subcommands share: building settings from options, loading models and data."""

from __future__ import annotations

import argparse

from hfr.config import TrainConfig
from hfr.data import AnomalyDataset, load_folder, load_mvtec
from hfr.device import auto_device
from hfr.model import HFR
from hfr.pipeline import ModelSettings, RunOptions


def model_settings(args: argparse.Namespace) -> ModelSettings:
    """The new model's settings from :func:`hfr.cli.add_model_arguments` options."""
    return ModelSettings(
        encoder=args.encoder,
        encoder_weights=args.encoder_weights,
        feature_location=args.feature_location,
        input_size=args.image_size,
        sigma=args.sigma,
        scoring=args.scoring,
        level_weights=args.level_weights,
        position_weight=args.position_weight,
        memory_weight=args.memory_weight,
        memory_pooling=args.memory_pooling,
        combination=args.combination,
        colour_weight=args.colour_weight,
        colour_distance=args.colour_distance,
        decoder=args.decoder,
        resize=args.resize,
    )


def run_options(args: argparse.Namespace) -> RunOptions:
    """Training settings, device and the recorded command from the options."""
    training = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        hard_fraction=args.hard_fraction,
        hard_weight=args.hard_weight,
        target_fpr=args.target_fpr,
        memory_fraction=args.memory_fraction,
        threshold_fit=args.threshold_fit,
        precision=args.precision,
        cache_features=not args.no_feature_cache,
    )
    return RunOptions(training=training, device=args.device, command=args.command_line)


def load_model(name_or_path: str, device: str | None) -> HFR:
    """A model from a local folder or a Hub repo id, on the chosen device."""
    return HFR.from_pretrained(name_or_path, map_location=auto_device(device))


def load_dataset(args: argparse.Namespace, parser: argparse.ArgumentParser) -> AnomalyDataset:
    """``--data`` with ``--category`` (MVTec layout), or a plain ``--train-dir``."""
    if args.data:
        if not args.category:
            parser.error("--data needs --category")
        return load_mvtec(args.data, args.category, name=args.dataset_name)
    return load_folder(args.train_dir, category=args.category)
