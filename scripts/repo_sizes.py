"""Size of a category repo (decoder-only safetensors) against the full state dict it replaces.

python scripts/repo_sizes.py --output research/results/repo_sizes.md
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

from safetensors.torch import save_file

from hfr import HFR
from hfr.config import WEIGHTS_FILE


def sizes(encoder: str) -> tuple[int, int]:
    """Bytes of ``model.safetensors`` as HFR saves it, and of the whole model's state dict."""
    model = HFR(encoder=encoder, encoder_weights="random")
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        decoder_only = (Path(folder) / WEIGHTS_FILE).stat().st_size
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(Path(folder) / "full.safetensors"))
        full = (Path(folder) / "full.safetensors").stat().st_size
    return decoder_only, full


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--encoders", default="mobilenetv2_100,resnet18,wide_resnet50_2")
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    lines = [
        f"Command:\n\n```\n{shlex.join(['python', *sys.argv])}\n```\n",
        "| encoder | category repo (decoder only) | full state dict | share |",
        "|---|---|---|---|",
    ]
    for encoder in args.encoders.split(","):
        decoder_only, full = sizes(encoder)
        lines.append(
            f"| {encoder} | {decoder_only / 2**20:.2f} MiB | {full / 2**20:.2f} MiB | "
            f"{100 * decoder_only / full:.0f}% |"
        )
    Path(args.output).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
