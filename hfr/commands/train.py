"""``hfr train``: train one category (or every category of a dataset, in this process or on
Ray), calibrate it, save it (and evaluate it if asked)."""

from __future__ import annotations

import argparse
import json

from hfr.commands.common import load_dataset, model_settings, run_options
from hfr.data import categories
from hfr.pipeline import train_category
from hfr.scale.fleet import FAILED, CategoryJob, train_all


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.all:
        return _run_all(args, parser)
    if args.ray:
        parser.error("--ray trains many categories: use it with --data and --all")
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
        f"features {result.feature_seconds:.1f} s, {per_epoch:.2f} s/epoch "
        f"({model.config.training['precision']}); trained {trained} "
        f"epochs{resumed} in {model.config.training['seconds']} s, final loss "
        f"{result.losses[-1]:.4f}; threshold {model.config.calibration.threshold:.4f}; "
        f"saved to {args.output}"
    )
    return 0


def _run_all(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Every category under ``--data``; one line per category as it finishes, then a summary."""
    if not args.data or args.category:
        parser.error("--all needs --data and no --category")
    jobs = [
        CategoryJob.of(args.data, args.dataset_name, category, args.output)
        for category in categories(args.data)
    ]
    outcomes = train_all(
        jobs,
        model_settings(args),
        run_options(args),
        evaluate=args.evaluate,
        ray_address=args.ray,
        gpus_per_task=args.gpus_per_task,
        cpus_per_task=args.cpus_per_task,
        on_outcome=lambda outcome: print(outcome, flush=True),
    )
    print(json.dumps({o.category: str(o).split(": ", 1)[1] for o in outcomes}, indent=2))
    return 1 if any(o.status == FAILED for o in outcomes) else 0
