"""``hfr calibrate``: set a trained model's threshold afresh from normal images it was not
trained on (or add them to those it was calibrated on), and save it."""

from __future__ import annotations

import argparse
import json

from hfr.calibrate import recalibrate
from hfr.commands.common import load_model
from hfr.pipeline import save_model
from hfr.sources import expand_sources, read_source


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    model = load_model(args.model, args.device)
    before = model.config.calibration
    images = [read_source(source).pixels for source in expand_sources(args.inputs)]
    calibration = recalibrate(
        model,
        images,
        target_fpr=args.target_fpr,
        threshold_fit=args.threshold_fit,
        add=args.add,
        batch_size=args.batch_size,
    )
    save_model(model, args.output)
    recorded = calibration.to_dict()
    recorded.pop("scores")  # in the saved config.json
    summary = {
        "model": args.model,
        "output": args.output,
        "threshold_before": None if before is None else before.threshold,
        **recorded,
        "guarantee": calibration.guarantee(),
        "shortfall": calibration.shortfall(),
        "tail_warning": calibration.tail_warning(),
        "command": args.command_line,
    }
    print(json.dumps(summary, indent=2))
    return 0
