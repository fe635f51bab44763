"""``hfr train``: train one category, calibrate it, save it (and evaluate it if asked)."""

from __future__ import annotations

import argparse
import json

from hfr.commands.common import load_dataset, model_settings, run_options
from hfr.pipeline import train_category


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    dataset = load_dataset(args, parser)
    model, result = train_category(
        dataset,
        args.output,
        settings=model_settings(args),
        options=run_options(args),
        run_evaluation=args.evaluate,
    )
    if model.config.evaluation:
        print(json.dumps(model.config.evaluation, indent=2))
    trained = len(result.losses) - result.resumed_epochs
    resumed = f" after resuming at epoch {result.resumed_epochs}" if result.resumed_epochs else ""
    per_epoch = result.train_seconds / max(trained, 1)
    print(
        f"features {result.feature_seconds:.1f} s, {per_epoch:.2f} s/epoch; trained {trained} "
        f"epochs{resumed} in {model.config.training['seconds']} s, final loss "
        f"{result.losses[-1]:.4f}; threshold {model.config.calibration.threshold:.4f}; "
        f"saved to {args.output}"
    )
    return 0
