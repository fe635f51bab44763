"""PatchCore or PaDiM (anomalib) trained and measured as ``hfr evaluate`` measures HFR, with the
encoder weights HFR uses: the peers' figures beside HFR's on any MVTec-layout category.

python scripts/peer_evaluate.py --method patchcore --encoder mobilenetv2_100 \\
    --encoder-weights mobilenet_v2-b0353104.pth --data ../shared/datasets/mvtec_ad \\
    --category bottle --output patchcore_bottle.json

Needs anomalib (``pip install -r requirements-peers.txt``). The backbone is HFR's encoder
(:func:`hfr.network.encoder.build_encoder`, the same weights file, timm's module names), its
weights copied into anomalib's feature extractor. PatchCore: the stride-8 and -16 features, a
1 % coreset (``--coreset``), 9 neighbours for the image score; PaDiM: strides 4, 8 and 16, 100
of their channels. Images are stretched to ``--image-size`` and normalised with ImageNet's
statistics; maps are compared with the masks at that size (nearest), with the metrics of
:func:`hfr.evaluate.compute_metrics`, per defect type included.
"""

from __future__ import annotations

import argparse
import shlex
import sys

import numpy as np
import torch
from anomalib import __version__ as anomalib_version
from anomalib.models.image.padim.torch_model import PadimModel
from anomalib.models.image.patchcore.torch_model import PatchcoreModel

from hfr.config import Preprocessing
from hfr.data import load_mvtec
from hfr.evaluate import EvaluationMaps, compute_metrics
from hfr.images import read_image
from hfr.network.encoder import build_encoder
from hfr.preprocessing import to_batch
from hfr.serving.outputs import write_json

BATCH = 16


def peer_model(method: str, encoder: str, weights: str) -> torch.nn.Module:
    """The anomalib torch model of ``method`` on HFR's encoder with ``weights``."""
    frozen, _ = build_encoder(encoder, weights, feature_location="stage")
    layers = list(frozen.backbone.feature_info.module_name())
    if method == "patchcore":
        model = PatchcoreModel(layers=layers[1:], backbone=encoder, pre_trained=False)
    else:
        model = PadimModel(encoder, layers, pre_trained=False, n_features=100)
    model.feature_extractor.feature_extractor.load_state_dict(frozen.backbone.state_dict())
    return model


def batches(images: list, preprocessing: Preprocessing):
    """Normalised batches of ``images`` (paths), ``BATCH`` at a time."""
    for start in range(0, len(images), BATCH):
        pixels = [read_image(item).pixels for item in images[start : start + BATCH]]
        yield to_batch(pixels, preprocessing, torch.device("cpu"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--method", choices=("patchcore", "padim"), required=True)
    parser.add_argument("--encoder", required=True)
    parser.add_argument("--encoder-weights", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--category", required=True)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--coreset", type=float, default=0.01, help="PatchCore's coreset share")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    dataset = load_mvtec(args.data, args.category)
    size = (args.image_size, args.image_size)
    preprocessing = Preprocessing(size)
    model = peer_model(args.method, args.encoder, args.encoder_weights).train()
    with torch.no_grad():
        for batch in batches(list(dataset.train), preprocessing):
            model(batch)
        if args.method == "patchcore":
            model.subsample_embedding(args.coreset)
        else:
            model.fit()
        model.eval()
        maps, scores = [], []
        for batch in batches([s.image for s in dataset.test], preprocessing):
            output = model(batch)
            maps.append(output.anomaly_map[:, 0].numpy())
            scores.append(output.pred_score.reshape(-1).numpy())
    result = EvaluationMaps(
        maps=np.concatenate(maps),
        masks=np.stack([s.mask(size) for s in dataset.test]),
        labels=np.array([s.label for s in dataset.test]),
        scores=np.concatenate(scores),
        defects=[s.defect for s in dataset.test],
    )
    record = {
        **compute_metrics(result),
        "method": args.method,
        "encoder": args.encoder,
        "encoder_weights": args.encoder_weights,
        "category": args.category,
        "resolution": f"{args.image_size}x{args.image_size}",
        "anomalib": anomalib_version,
        "command": shlex.join(["python", *sys.argv]),
    }
    print(write_json(args.output, record), end="")


if __name__ == "__main__":
    main()
