"""HFR beside PatchCore and PaDiM (anomalib) on the same backbone, timed in the same rounds.

python scripts/peer_benchmark.py --encoders mobilenetv2_100,resnet18 --batch-size 1,16 \\
    --output research/results/peer_speed_0.23.json

Needs anomalib (``pip install -r requirements-peers.txt``); the hfr package does not depend on
it. Backbones are random-init, as in ``hfr benchmark`` (timing does not depend on the weights):

- HFR at the benchmark's defaults, its scoring terms fitted to random evidence as
  ``hfr benchmark`` fits them (:func:`hfr.commands.benchmark.add_random_terms`);
- PatchCore (anomalib's torch model) with the backbone's stride-8 and stride-16 features and a
  memory bank of the size its 1 % coreset keeps of bottle's 188 training images (random rows);
- PaDiM with the stride-4, -8 and -16 features and 100 of their channels, its Gaussians fitted
  to 188 random images.

All three run the backbone to stride 16 and no further, so each one's time is given beside the
encoder's forward (HFR's ``encode``), in interleaved rounds: medians of ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
from pathlib import Path

import torch
from anomalib import __version__ as anomalib_version
from anomalib.models.image.padim.torch_model import PadimModel
from anomalib.models.image.patchcore.torch_model import PatchcoreModel

from hfr import HFR, __version__
from hfr.commands.benchmark import BOTTLE_TRAIN_IMAGES, add_random_terms, machine
from hfr.config.settings import benchmark_term_weights
from hfr.network.encoder import build_encoder
from hfr.serving.outputs import write_json
from hfr.timing import interleaved_medians

PATCHCORE_CORESET = 0.01
PADIM_FEATURES = 100
METHODS = ("hfr", "patchcore", "padim")


def stage_layers(encoder: str) -> list[str]:
    """The module names of ``encoder``'s features at strides 4, 8 and 16 (those HFR takes), as
    anomalib's feature extractor names layers."""
    frozen, _ = build_encoder(encoder, "random", feature_location="stage")
    return list(frozen.backbone.feature_info.module_name())


def patchcore(encoder: str, layers: list[str], size: int) -> PatchcoreModel:
    """PatchCore on the stride-8 and stride-16 layers, with a bank (random rows) of the size its
    1 % coreset keeps of bottle's training images."""
    model = PatchcoreModel(layers=layers[1:], backbone=encoder, pre_trained=False).eval()
    patches_per_image = (size // 8) ** 2
    kept = round(PATCHCORE_CORESET * BOTTLE_TRAIN_IMAGES * patches_per_image)
    model.memory_bank = torch.randn(kept, sum(model.feature_extractor.out_dims))
    return model


def padim(encoder: str, layers: list[str], size: int) -> PadimModel:
    """PaDiM on the stride-4, -8 and -16 layers, its Gaussians fitted to random images."""
    model = PadimModel(encoder, layers, pre_trained=False, n_features=PADIM_FEATURES).train()
    with torch.inference_mode():
        for start in range(0, BOTTLE_TRAIN_IMAGES, 16):
            model(torch.randn(min(16, BOTTLE_TRAIN_IMAGES - start), 3, size, size))
    model.fit()
    return model.eval()


def time_methods(encoder: str, batch_sizes: list[int], size: int, repeats: int) -> list[dict]:
    """Milliseconds per image of the encoder and of each method, for every batch size."""
    weights = {f"{name}_weight": w for name, w in benchmark_term_weights().items()}
    hfr = HFR(encoder=encoder, encoder_weights="random", input_size=size, **weights)
    add_random_terms(hfr)
    layers = stage_layers(encoder)
    models = {"hfr": hfr.eval(), "patchcore": patchcore(encoder, layers, size)}
    models["padim"] = padim(encoder, layers, size)
    records = []
    for batch in batch_sizes:
        images = torch.randn(batch, 3, size, size)
        steps = {"encoder": lambda x=images: hfr.encode(x)}
        steps |= {name: (lambda m=model, x=images: m(x)) for name, model in models.items()}
        with torch.inference_mode():
            seconds = interleaved_medians(steps, torch.device("cpu"), repeats=repeats)
        record = {"encoder": encoder, "batch_size": batch, "image_size": size}
        record["ms_per_image"] = {name: 1000 * s / batch for name, s in seconds.items()}
        record["over_encoder"] = {name: seconds[name] / seconds["encoder"] for name in METHODS}
        records.append(record)
        print(json.dumps(record), flush=True)
    return records


def markdown(records: list[dict], command: str) -> str:
    """The records as a table: each method's ms per image and its ratio to the encoder."""
    lines = [
        f"`{command}`",
        "",
        "| encoder | batch | encoder ms/img | HFR ms/img (/ encoder) | PatchCore | PaDiM |",
        "|---|---|---|---|---|---|",
    ]
    for r in records:
        ms, ratio = r["ms_per_image"], r["over_encoder"]
        cells = [f"{ms[name]:.1f} ({ratio[name]:.2f}x)" for name in METHODS]
        lines.append(
            f"| {r['encoder']} | {r['batch_size']} | {ms['encoder']:.1f} | {' | '.join(cells)} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--encoders", default="mobilenetv2_100,resnet18")
    parser.add_argument("--batch-size", default="1,16", help="comma-separated")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--output", required=True, help="JSON; a .md table beside it")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch_sizes = [int(b) for b in args.batch_size.split(",")]
    records = []
    for encoder in args.encoders.split(","):
        records += time_methods(encoder, batch_sizes, args.image_size, args.repeats)
    command = shlex.join(["python", *sys.argv])
    write_json(
        args.output,
        {
            "command": command,
            "records": records,
            "threads": args.threads,
            "machine": machine("cpu"),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "anomalib": anomalib_version,
            "hfr": __version__,
            "patchcore_coreset": PATCHCORE_CORESET,
            "padim_features": PADIM_FEATURES,
        },
    )
    Path(args.output).with_suffix(".md").write_text(markdown(records, command))


if __name__ == "__main__":
    main()
