"""Export a model to ONNX (images -> maps, scores) and check it against PyTorch.

python scripts/export_onnx.py --model MODEL_DIR_OR_REPO --output model.onnx
"""

from __future__ import annotations

import argparse

import numpy as np
import onnxruntime
import torch

from _common import load_model
from hfr.export import export_onnx


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    model = load_model(args.model, "cpu")
    export_onnx(model, args.output)
    images = torch.randn(3, 3, *model.preprocessing.input_size)
    session = onnxruntime.InferenceSession(args.output, providers=["CPUExecutionProvider"])
    maps, scores = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        expected = model(images)
    map_error = float(np.abs(maps - expected.maps.numpy()).max())
    score_error = float(np.abs(scores - expected.scores.numpy()).max())
    print(
        f"wrote {args.output}; max |onnx - torch|: maps {map_error:.2e}, scores {score_error:.2e}"
    )


if __name__ == "__main__":
    main()
