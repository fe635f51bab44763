"""The patch memory searched in fewer directions: five seeds of bottle and screw with both
backbones, each trained model rescored with its memory searched in a share of its vectors'
principal directions, against the model as trained (searched in all), held to the bar of every
change of a default (``five_seed_study.METRICS``).

python research/memory_search_study.py --data ../shared/datasets/mvtec_ad \
    --reference-dir runs/guarantee --shares 0.333,0.5 --output research/results/memory_search

The reference models are those of ``five_seed_study.py`` (``BACKBONE/seedS/CATEGORY`` under
``--reference-dir``, trained there with ``hfr train`` and the defaults where missing). Training
never sees the memory's search: the kept vectors are the same, so the model with its memory's
projection set (``PatchMemory(bank, projection=principal_directions(bank, D))``, D the share of
the vector's numbers, rounded) is what training with ``--memory-search-dims D`` would give;
its memory scale and threshold are then measured afresh on the held-out normal images, as
training measures them. Each share's runs and summary go to ``OUTPUT/share_S/``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import replace
from pathlib import Path

from five_seed_study import BACKBONES, METRICS, measured, summary_rows, table, trained_model

from hfr import HFR
from hfr.calibrate import recalibrate
from hfr.data import load_mvtec
from hfr.evaluate import evaluate
from hfr.scoring.terms.memory import PatchMemory, principal_directions
from hfr.serving.outputs import write_json
from hfr.train import training_split


def searched_in(model: HFR, dims: int, held_out: list) -> None:
    """Give ``model``'s memory a projection onto its bank's first ``dims`` principal directions
    and measure its memory scale and threshold afresh on the ``held_out`` normal images."""
    memory = model.term("memory")
    projection = principal_directions(memory.bank, dims)
    model.terms["memory"] = PatchMemory(memory.bank, pooling=memory.pooling, projection=projection)
    model.config = model.config.replace(scoring=replace(model.config.scoring, memory_scale=None))
    target_fpr = (model.config.training or {}).get("target_fpr")
    recalibrate(model, held_out, target_fpr=target_fpr, progress=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="MVTec AD root")
    parser.add_argument("--categories", default="bottle,screw")
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--reference-dir", required=True)
    parser.add_argument("--shares", default="0.333,0.5", help="comma-separated, of each vector")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    command = shlex.join(["python", *sys.argv])
    output = Path(args.output)
    shares = [float(share) for share in args.shares.split(",")]
    rows: dict[float, list[dict]] = {share: [] for share in shares}
    for backbone in args.backbones.split(","):
        for category in args.categories.split(","):
            dataset = load_mvtec(args.data, category)
            for seed in map(int, args.seeds.split(",")):
                where = Path(backbone, f"seed{seed}", category)
                folder = Path(args.reference_dir, where)
                model = trained_model(folder, args.data, backbone, category, seed, [])
                cache = output / "measured" / "reference" / where.with_suffix(".json")
                reference = measured(folder, model, args.data, category, cache)
                _, held_out = training_split(model, dataset.train)
                width = model.term("memory").bank.shape[1]
                for share in shares:
                    model = HFR.from_pretrained(folder)
                    dims = round(share * width)
                    searched_in(model, dims, held_out)
                    report = evaluate(model, dataset, progress=False)
                    candidate = {name: report[name] for name in METRICS}
                    candidate |= {"search_dims": dims, "vector_dims": width}
                    candidate |= {"ms_per_image": report["inference_ms_per_image"]}
                    candidate["train_seconds"] = reference["train_seconds"]
                    row = {"category": category, "backbone": backbone, "seed": seed}
                    rows[share].append(row | {"reference": reference, "candidate": candidate})
                    print(share, rows[share][-1], flush=True)
    for share, share_rows in rows.items():
        folder = output / f"share_{share:g}"
        summary = summary_rows(share_rows)
        write_json(folder / "runs.json", {"command": command, "share": share, "runs": share_rows})
        write_json(folder / "summary.json", {"command": command, "summary": summary})
        labels = ("all directions", f"{share:g} of them")
        (folder / "summary.md").write_text(f"`{command}`\n\n{table(summary, *labels)}")
        print(table(summary, *labels))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
