"""Does a narrower decoder cost accuracy? Models trained with ``--decoder-width W`` against
models trained with each decoder block as wide as its level (``full``, every model before
0.22), on five seeds of bottle and screw with both backbones.

python research/decoder_width_study.py --data ../shared/datasets/mvtec_ad --width 64 \
    --models-dir runs/width --reference-dir runs/guarantee \
    --output research/results/decoder_width_0.22

Each model is trained as a user trains it (``hfr train`` with the defaults, the backbone's
ImageNet weights, ``--seed`` and ``--decoder-width``; a model already in ``--models-dir`` is
reused) and measured with :func:`hfr.evaluate.evaluate` on the category's test split. The
reference models are full-width models of the same seeds (``--reference-dir``, laid out as
``BACKBONE/seedS/CATEGORY``, e.g. those of ``research/guarantee_study.py``); the ones missing
there are trained with ``--decoder-width full``. The summary gives each five-seed mean and its
change, against the bar of issue 38: no mean lower by more than 0.005 image AUROC or 0.002
pixel AUROC / AUPRO.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np

from hfr import HFR
from hfr.cli import main as hfr_main
from hfr.data import load_mvtec
from hfr.evaluate import evaluate
from hfr.serving.outputs import write_json

BACKBONES = {
    "mobilenetv2": ("mobilenetv2_100", "mobilenet_v2-b0353104.pth"),
    "efficientnet_lite0": ("tf_efficientnet_lite0", "efficientnet-lite0-57934424.pth"),
}
METRICS = {"image_auroc": 0.005, "pixel_auroc": 0.002, "aupro": 0.002}  # the largest drop allowed


def trained_model(folder: Path, data: str, backbone: str, category: str, seed: int, width: str):
    """The model in ``folder``, trained there with ``hfr train`` when it is missing."""
    if not (folder / "config.json").is_file():
        encoder, weights = BACKBONES[backbone]
        argv = ["-q", "train", "--data", data, "--category", category, "--encoder", encoder]
        argv += ["--encoder-weights", weights, "--seed", str(seed), "--decoder-width", width]
        if hfr_main([*argv, "--output", str(folder)]) != 0:
            raise SystemExit(f"training {backbone} {category} seed {seed} failed")
    return HFR.from_pretrained(folder)


def measured(model: HFR, data: str, category: str) -> dict:
    """The model's image AUROC, pixel AUROC and AUPRO on the test split, and its width."""
    report = evaluate(model, load_mvtec(data, category), progress=False)
    width = model.config.decoder_width
    return {"decoder_width": width, **{name: report[name] for name in METRICS}}


def summary_rows(rows: list[dict]) -> list[dict]:
    """Per category and backbone: each metric's mean over the seeds, for both widths."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["category"], row["backbone"]), []).append(row)
    result = []
    for (category, backbone), group in groups.items():
        line = {"category": category, "backbone": backbone, "seeds": len(group)}
        for name, allowed in METRICS.items():
            full = float(np.mean([row["full"][name] for row in group]))
            narrow = float(np.mean([row["narrow"][name] for row in group]))
            line[name] = {"full": full, "narrow": narrow, "change": narrow - full}
            line[name]["within_bar"] = narrow - full >= -allowed
        result.append(line)
    return result


def table(rows: list[dict], width: int) -> str:
    """The summary as a markdown table."""
    lines = [
        f"| category | backbone | seeds | image AUROC full -> {width} | pixel AUROC | AUPRO | "
        "within the bar |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [
            f"{row[name]['full']:.4f} -> {row[name]['narrow']:.4f} ({row[name]['change']:+.4f})"
            for name in METRICS
        ]
        within = all(row[name]["within_bar"] for name in METRICS)
        lines.append(
            f"| {row['category']} | {row['backbone']} | {row['seeds']} | {' | '.join(cells)} | "
            f"{'yes' if within else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="MVTec AD root")
    parser.add_argument("--width", type=int, required=True, help="the narrow decoder's width")
    parser.add_argument("--categories", default="bottle,screw")
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--models-dir", required=True, help="where the narrow models go")
    parser.add_argument("--reference-dir", required=True, help="full-width models (or where)")
    parser.add_argument("--output", required=True, help="folder for runs.json, summary.*")
    args = parser.parse_args(argv)
    rows = []
    for backbone in args.backbones.split(","):
        for category in args.categories.split(","):
            for seed in map(int, args.seeds.split(",")):
                where = Path(backbone, f"seed{seed}", category)
                run = (args.data, backbone, category, seed)
                full = trained_model(Path(args.reference_dir, where), *run, "full")
                narrow = trained_model(Path(args.models_dir, where), *run, str(args.width))
                row = {"category": category, "backbone": backbone, "seed": seed}
                row["full"] = measured(full, args.data, category)
                row["narrow"] = measured(narrow, args.data, category)
                rows.append(row)
                print(row, flush=True)
    summary = summary_rows(rows)
    command = shlex.join(["python", "research/decoder_width_study.py", *(argv or sys.argv[1:])])
    output = Path(args.output)
    write_json(output / "runs.json", {"command": command, "runs": rows})
    write_json(output / "summary.json", {"command": command, "summary": summary})
    (output / "summary.md").write_text(f"`{command}`\n\n{table(summary, args.width)}")
    print(table(summary, args.width))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
