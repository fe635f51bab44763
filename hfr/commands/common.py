"""Pieces the subcommands share: building settings from options, loading models and data."""

from __future__ import annotations

import argparse

from hfr.config import ModelSettings, TrainConfig
from hfr.config.options import settings_from_options
from hfr.data import AnomalyDataset, load_folder, load_mvtec
from hfr.device import auto_device
from hfr.model import HFR
from hfr.pipeline import RunOptions


def model_settings(args: argparse.Namespace) -> ModelSettings:
    """The new model's settings from :func:`hfr.cli.add_model_arguments` options."""
    return settings_from_options(ModelSettings, args)


def run_options(args: argparse.Namespace) -> RunOptions:
    """Training settings, device and the recorded command from the options."""
    training = settings_from_options(TrainConfig, args)
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
