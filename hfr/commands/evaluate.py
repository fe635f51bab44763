"""``hfr evaluate``: every metric of a model on an MVTec-layout category, as JSON."""

from __future__ import annotations

import argparse
import json

import numpy as np

from hfr.commands.common import load_model
from hfr.data import load_mvtec
from hfr.evaluate import collect, report
from hfr.serving.outputs import write_json


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    model = load_model(args.model, args.device)
    dataset = load_mvtec(args.data, args.category)
    maps, seconds_per_image = collect(model, dataset, batch_size=args.batch_size)
    results = {
        **report(model, dataset, maps, seconds_per_image),
        "model": args.model,
        "encoder": model.config.encoder,
        "command": args.command_line,
    }
    write_json(args.output, results)
    if args.save_maps:
        np.savez_compressed(
            args.save_maps, maps=maps.maps, masks=maps.masks, labels=maps.labels, scores=maps.scores
        )
    print(json.dumps(results, indent=2))
    return 0
