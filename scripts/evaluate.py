"""Evaluate a model on an MVTec-layout category and write every metric as JSON.

python scripts/evaluate.py --model MODEL_DIR_OR_REPO --data DIR --category bottle \
    --output results.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from _common import command_line, load_model
from hfr.data import load_mvtec
from hfr.evaluate import collect, report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="model folder or Hub repo id")
    parser.add_argument("--data", required=True, help="dataset root in MVTec AD layout")
    parser.add_argument("--category", required=True)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default=None)
    parser.add_argument(
        "--save-maps", help="also write the per-image maps, masks and labels (.npz)"
    )
    parser.add_argument("--output", required=True, help="results JSON to write")
    args = parser.parse_args()

    model = load_model(args.model, args.device)
    dataset = load_mvtec(args.data, args.category)
    maps, seconds_per_image = collect(model, dataset, batch_size=args.batch_size)
    results = {
        **report(model, dataset, maps, seconds_per_image),
        "model": args.model,
        "encoder": model.encoder_name,
        "command": command_line(),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    if args.save_maps:
        np.savez_compressed(
            args.save_maps, maps=maps.maps, masks=maps.masks, labels=maps.labels, scores=maps.scores
        )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
