"""``hfr export``: ONNX export of the whole pipeline, checked against PyTorch."""

from __future__ import annotations

import argparse

from hfr.commands.common import load_model
from hfr.export import export_onnx, max_onnx_difference


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    model = load_model(args.model, "cpu")
    export_onnx(model, args.output, opset=args.opset)
    if args.no_check:
        print(f"wrote {args.output}")
        return 0
    difference = max_onnx_difference(model, args.output)
    print(
        f"wrote {args.output}; max |onnx - torch|: maps {difference['maps']:.2e}, "
        f"scores {difference['scores']:.2e}"
    )
    return 0
