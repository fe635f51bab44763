"""``hfr export``: ONNX export of the whole pipeline, checked against PyTorch; with ``--int8``
an int8 model, kept only if it detects as well as the float one."""

from __future__ import annotations

import argparse
import json

from hfr.commands.common import load_model
from hfr.data import load_mvtec
from hfr.export import export_onnx, max_onnx_difference


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    model = load_model(args.model, "cpu")
    if args.int8:
        if not (args.data and args.category):
            parser.error(
                "--int8 measures the int8 model's image AUROC before keeping it: give --data "
                "and --category (a category with good and defective test images)"
            )
        from hfr.quantize import export_int8

        dataset = load_mvtec(args.data, args.category)
        record = export_int8(
            model,
            args.output,
            dataset,
            scope=args.int8,
            max_auroc_drop=args.max_auroc_drop,
            max_aupro_drop=args.max_aupro_drop,
        )
        print(json.dumps(record, indent=2))
        print(
            f"wrote {args.output}: int8 ({args.int8}), image AUROC "
            f"{record['float']['image_auroc']:.4f} -> {record['int8']['image_auroc']:.4f}"
        )
        return 0
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
