"""The false-alarm rate the threshold promises against the share of good test images it flags,
over seeds, categories and backbones: the conformal rule (the default from 0.21) against the
lognormal fit (0.17-0.20), both set on the same held-out normal scores of the same models.

python research/guarantee_study.py --data ../shared/datasets/mvtec_ad --seeds 0,1,2,3,4 \
    --models-dir runs/guarantee --output research/results/guarantee_0.21

Each model is trained as a user trains it (``hfr train`` with the defaults, the backbone's
ImageNet weights and ``--seed``; a model already in ``--models-dir`` is reused), and records the
held-out normal scores it was calibrated on (``calibration.scores``). Each rule sets its
threshold from those scores at ``--target-fpr``; the good and the defective test images are
scored once and counted against each threshold. Test labels set nothing.

Pooled over the seeds, the good test images flagged are compared with the 95 % binomial upper
bound of what the guaranteed rate allows: flagged <= binom.ppf(0.95, good images, rate).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
from scipy.stats import binom

from hfr import HFR, metrics
from hfr.cli import main as hfr_main
from hfr.data import load_mvtec
from hfr.metrics import binomial_interval
from hfr.scoring.calibration import Calibration
from hfr.serving.outputs import write_json

BACKBONES = {
    "mobilenetv2": ("mobilenetv2_100", "mobilenet_v2-b0353104.pth"),
    "efficientnet_lite0": ("tf_efficientnet_lite0", "efficientnet-lite0-57934424.pth"),
}
RULES = ("conformal", "lognormal")


def trained_model(args: argparse.Namespace, category: str, backbone: str, seed: int) -> HFR:
    """The model of one run, trained with ``hfr train`` unless ``--models-dir`` holds it."""
    folder = Path(args.models_dir, backbone, f"seed{seed}", category)
    if not (folder / "config.json").is_file():
        encoder, weights = BACKBONES[backbone]
        argv = ["-q", "train", "--data", args.data, "--category", category, "--encoder"]
        argv += [encoder, "--encoder-weights", weights, "--seed", str(seed)]
        argv += ["--calibration-fraction", str(args.calibration_fraction)]
        if hfr_main([*argv, "--output", str(folder)]) != 0:
            raise SystemExit(f"training {backbone} {category} seed {seed} failed")
    return HFR.from_pretrained(folder)


def run(args: argparse.Namespace, category: str, backbone: str, seed: int) -> dict:
    """Both rules' thresholds and what they flag on the test split, for one model."""
    model = trained_model(args, category, backbone, seed)
    held_out = model.config.calibration.recorded_scores()
    test = load_mvtec(args.data, category).test
    scores = np.array([p.score for p in model.predict([s.image for s in test])])
    labels = np.array([s.label for s in test])
    row = {"category": category, "backbone": backbone, "seed": seed, "held_out": held_out.size}
    row["image_auroc"] = metrics.image_auroc(labels, scores)
    for rule in RULES:
        calibration = Calibration.from_normal_scores(held_out, target_fpr=args.target_fpr, fit=rule)
        flagged = scores > calibration.threshold
        row[rule] = {
            "threshold": calibration.threshold,
            "guaranteed_fpr": calibration.guaranteed_fpr,
            "fpr_bound": calibration.fpr_bound,
            "num_above": calibration.num_above,
            "good_flagged": int(flagged[labels == 0].sum()),
            "good": int((labels == 0).sum()),
            "defective_flagged": int(flagged[labels == 1].sum()),
            "defective": int((labels == 1).sum()),
        }
    return row


def pooled(rows: list[dict], rule: str) -> dict:
    """One rule's counts over ``rows`` (the seeds of one category and backbone), and whether
    the good images flagged stay within the 95 % binomial bound of the guaranteed rate."""
    parts = [row[rule] for row in rows]
    good = sum(p["good"] for p in parts)
    flagged = sum(p["good_flagged"] for p in parts)
    expected = sum(p["guaranteed_fpr"] * p["good"] for p in parts) / good
    allowed = int(binom.ppf(0.95, good, expected))
    defective = sum(p["defective"] for p in parts)
    return {
        "good_flagged": flagged,
        "good": good,
        "good_flagged_share": flagged / good,
        "good_flagged_interval": binomial_interval(flagged, good),
        "guaranteed_fpr": expected,
        "allowed_at_95": allowed,
        "kept": flagged <= allowed,
        "defective_flagged_share": sum(p["defective_flagged"] for p in parts) / defective,
        "defective": defective,
    }


def table(summary: dict) -> str:
    """The summary as a markdown table."""
    lines = [
        "| category | backbone | rule | good flagged (pooled) | 95 % interval | guaranteed | "
        "allowed at 95 % | kept | defective flagged |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, rules in summary.items():
        category, backbone = key.split("/")
        for rule, p in rules.items():
            low, high = p["good_flagged_interval"]
            lines.append(
                f"| {category} | {backbone} | {rule} | {p['good_flagged']}/{p['good']} "
                f"({100 * p['good_flagged_share']:.1f} %) | {100 * low:.1f}-{100 * high:.1f} % | "
                f"{100 * p['guaranteed_fpr']:.1f} % | {p['allowed_at_95']} | "
                f"{'yes' if p['kept'] else 'no'} | {100 * p['defective_flagged_share']:.1f} % |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="MVTec AD root")
    parser.add_argument("--categories", default="bottle,screw")
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--target-fpr", type=float, default=0.01)
    parser.add_argument("--calibration-fraction", type=float, default=0.1)
    parser.add_argument("--models-dir", required=True, help="where the trained models go")
    parser.add_argument("--output", required=True, help="folder for runs.json, summary.*")
    args = parser.parse_args(argv)
    rows = [
        run(args, category, backbone, int(seed))
        for backbone in args.backbones.split(",")
        for category in args.categories.split(",")
        for seed in args.seeds.split(",")
    ]
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(f"{row['category']}/{row['backbone']}", []).append(row)
    summary = {key: {rule: pooled(group, rule) for rule in RULES} for key, group in groups.items()}
    command = shlex.join(["python", "research/guarantee_study.py", *(argv or sys.argv[1:])])
    output = Path(args.output)
    write_json(output / "runs.json", {"command": command, "runs": rows})
    write_json(output / "summary.json", {"command": command, "summary": summary})
    (output / "summary.md").write_text(f"`{command}`\n\n{table(summary)}")
    print(table(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
