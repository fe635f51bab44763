"""The ``hfr`` command: one subcommand per user task.

Building the parser imports no torch: ``hfr --help`` answers at once, and a subcommand's module
(``hfr.commands.<name>``) is imported only when it runs.

Example:
    >>> parser = build_parser()
    >>> parser.parse_args(["train", "--train-dir", "good", "--output", "m"]).lr
    0.4
"""

from __future__ import annotations

import argparse
import importlib
import logging
import shlex
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from hfr import __version__
from hfr.config.options import (
    add_setting_options,
    image_sizes,
    term_weight,
)
from hfr.config.settings import (
    BACKENDS,
    DEFAULT_INPUT_SIZE,
    DEFAULT_TARGET_FPR,
    INT8_SCOPES,
    MAX_INT8_DROPS,
    ModelSettings,
    TrainConfig,
    benchmark_term_weights,
)
from hfr.errors import HFRError
from hfr.extras import require
from hfr.scoring.calibration import THRESHOLD_FITS

PROTOCOLS = ("mvtec", "mnist", "fashion-mnist", "cifar10")
# Option parsers that moved to the settings they parse (0.20), still found here with a warning.
_MOVED = {"level_weights", "weight_or_auto"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        warnings.warn(
            f"hfr.cli.{name} moved to hfr.config.options.{name}", DeprecationWarning, stacklevel=2
        )
        return getattr(importlib.import_module("hfr.config.options"), name)
    raise AttributeError(f"module 'hfr.cli' has no attribute {name!r}")


class ProtocolDefault:
    """Default of an option that ``reproduce`` takes from the protocol (shown as such in help)."""

    def __repr__(self) -> str:
        return "the protocol's"


PROTOCOL_DEFAULT = ProtocolDefault()


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows every option's default (unless None or off) and keeps the descriptions' breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if action.nargs == 0 or default in (None, argparse.SUPPRESS) or "default" in text:
            return text
        return f"{text} (default: %(default)r)" if text else "default: %(default)r"


def add_model_arguments(
    parser: argparse.ArgumentParser, *, protocol_defaults: bool = False
) -> None:
    """The options of a new model and its training (train, push, reproduce): one per setting
    of :class:`~hfr.config.ModelSettings` and :class:`~hfr.config.TrainConfig`, as declared
    there. With ``protocol_defaults``, size, epochs and lr default to the protocol's (see
    ``reproduce``)."""
    group = parser.add_argument_group("model and training")
    per_protocol = dict.fromkeys(("input_size", "epochs", "lr"), PROTOCOL_DEFAULT)
    defaults = per_protocol if protocol_defaults else None
    add_setting_options(group, ModelSettings, defaults=defaults)
    add_setting_options(group, TrainConfig, defaults=defaults)
    _add_device(group)


def _add_ray_address(group: argparse._ArgumentGroup, what: str) -> None:
    group.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help=f"{what}: a cluster address, 'auto', or nothing for a local Ray",
    )


def _add_device(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--device", default=None, help="cuda, mps or cpu (default: the best available)"
    )


def _add_train(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "train",
        help="train a category and save it (config, weights, model card)",
        description="Train one category on normal images, calibrate it, save it.\n\n"
        "  hfr train --data DIR --category bottle --encoder mobilenetv2_100 \\\n"
        "      --encoder-weights mobilenet_v2-b0353104.pth --evaluate --output models/bottle",
        formatter_class=_HelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="dataset root in MVTec AD layout (DIR/<category>/...)")
    source.add_argument("--train-dir", help="a plain folder of normal training images")
    parser.add_argument("--category", help="category under --data (required with --data)")
    parser.add_argument(
        "--all",
        action="store_true",
        help="every category under --data, each into OUTPUT/hfr-<dataset>-<category>; "
        "finished ones are skipped, interrupted ones resume",
    )
    parser.add_argument("--dataset-name", default="mvtec_ad", help="recorded in config and card")
    parser.add_argument("--evaluate", action="store_true", help="evaluate on the test split")
    parser.add_argument(
        "--output", required=True, help="model folder to write (with --all: their parent)"
    )
    add_ray_arguments(parser)
    add_model_arguments(parser)


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """``--ray`` and the resources of one category's task (train and push with --all)."""
    group = parser.add_argument_group("Ray (pip install 'hfr[ray]'; with --all)")
    _add_ray_address(group, "one Ray task per category")
    group.add_argument(
        "--gpus-per-task", type=float, default=0.0, help="GPUs per category (fractions share one)"
    )
    group.add_argument("--cpus-per-task", type=float, default=1.0, help="CPUs per category")


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "evaluate",
        help="every metric of a model on an MVTec-layout category, as JSON",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--model", required=True, help="model folder or Hub repo id")
    parser.add_argument("--data", required=True, help="dataset root in MVTec AD layout")
    parser.add_argument("--category", required=True, help="category folder under --data")
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    parser.add_argument("--save-maps", help="also write the maps, masks and labels (.npz)")
    parser.add_argument("--output", required=True, help="results JSON to write")
    _add_device(parser)


def _add_predict(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "predict",
        help="score images without ground truth: scores.csv and heat-map overlays",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--model", required=True, help="model folder or Hub repo id")
    parser.add_argument(
        "inputs",
        nargs="+",
        help="image files or URIs, folders of images, or lists of them (.txt: one per line; "
        ".parquet: a 'path' or 'image' column)",
    )
    parser.add_argument("--output", required=True, help="folder for scores.csv and overlays/")
    parser.add_argument(
        "--threshold", type=float, default=0.5, help="on the normalised scale (0.5: calibrated)"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="torch",
        help="onnxruntime: run the model exported to ONNX on the CPU (pip install "
        "'hfr[export]'); --model is then an .onnx file from `hfr export`, or a model that is "
        "exported first, to OUTPUT/model.onnx",
    )
    parser.add_argument("--opacity", type=float, default=0.5, help="of the heat map")
    parser.add_argument("--no-overlays", action="store_true")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the results already in --output"
    )
    parser.add_argument(
        "--resume", action="store_true", help="keep the results in --output, score only the rest"
    )
    group = parser.add_argument_group("Ray (pip install 'hfr[ray]')")
    _add_ray_address(group, "decode with Ray Data, score in a pool of actors")
    group.add_argument("--workers", type=int, default=1, help="predictor actors (model loads)")
    group.add_argument("--gpus-per-worker", type=float, default=0.0, help="fractions share a GPU")
    group.add_argument(
        "--cpus-per-worker",
        type=float,
        default=None,
        help="CPUs per actor, its torch threads rounded up (default: the Ray's CPUs less 0.5 "
        "for decoding, shared among the workers)",
    )
    _add_device(parser)


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "calibrate",
        help="set a trained model's threshold afresh from normal images it was not trained on",
        description="Score normal images the model never trained on (more of them, or closer\n"
        "to what it will see, than the tenth of its training images held out at training) and\n"
        "set the threshold from them, or with --add from them and the normal scores the model\n"
        "already holds. The scores do not change; the model is saved to --output.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--model", required=True, help="model folder or Hub repo id")
    parser.add_argument(
        "inputs", nargs="+", help="normal images: files, folders of images, or lists of them"
    )
    parser.add_argument("--output", required=True, help="folder to save the recalibrated model")
    parser.add_argument(
        "--target-fpr",
        type=float,
        default=DEFAULT_TARGET_FPR,
        help="share of normal images the verdict may flag: guaranteed where the images are "
        "enough (conformal), estimated by the other fits",
    )
    parser.add_argument(
        "--threshold-fit",
        choices=THRESHOLD_FITS,
        help="conformal (a guarantee), or a robust fit of the scores' logarithms or of the "
        "scores (default: as the model was calibrated; normal for a model that records none)",
    )
    parser.add_argument(
        "--add",
        action="store_true",
        help="add these images to the normal images the model was calibrated on (models "
        "calibrated by hfr 0.21 or later) instead of replacing them",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    _add_device(parser)


def _add_push(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "push",
        help="publish categories to the Hub as <org>/hfr-<dataset>-<category>",
        description="Push a saved model folder, or train and push categories of a dataset.\n"
        "The token comes from `hf auth login` or HF_TOKEN. A failing category does not stop\n"
        "the others; weights already on the Hub are skipped unless --force.",
        formatter_class=_HelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a saved model folder to push as it is")
    source.add_argument("--data", help="dataset root in MVTec AD layout")
    parser.add_argument("--org", required=True, help="Hub user or organisation")
    parser.add_argument("--category", action="append", help="category to push (repeatable)")
    parser.add_argument("--all", action="store_true", help="every category found under --data")
    parser.add_argument("--dataset-name", default="mvtec_ad", help="in the repo names and cards")
    parser.add_argument("--work-dir", default="models", help="where trained folders are kept")
    parser.add_argument("--dry-run", action="store_true", help="prepare everything, push nothing")
    parser.add_argument("--force", action="store_true", help="push even if the Hub has them")
    parser.add_argument("--private", action="store_true", help="create private repos")
    add_ray_arguments(parser)
    add_model_arguments(parser)


def _add_export(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "export",
        help="export a model to ONNX and check it against PyTorch (needs hfr[export])",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--model", required=True, help="model folder or Hub repo id")
    parser.add_argument("--output", required=True, help="ONNX file to write")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset version")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime check")
    parser.add_argument(
        "--int8",
        choices=INT8_SCOPES,
        help="write an int8 model (ONNX Runtime static quantisation) of the decoder's or of all "
        "convolutions; kept only if its image AUROC and AUPRO on --data/--category are within "
        "--max-auroc-drop and --max-aupro-drop of the float export's",
    )
    parser.add_argument("--data", help="with --int8: dataset root in MVTec AD layout")
    parser.add_argument("--category", help="with --int8: the category to calibrate and measure on")
    parser.add_argument(
        "--max-auroc-drop",
        type=float,
        default=MAX_INT8_DROPS["image_auroc"],
        help="with --int8: the largest image-AUROC loss accepted",
    )
    parser.add_argument(
        "--max-aupro-drop",
        type=float,
        default=MAX_INT8_DROPS["aupro"],
        help="with --int8: the largest AUPRO loss accepted (where the test images have masks)",
    )


def _add_benchmark(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "benchmark",
        help="speed and memory: encoder only against the full pipeline",
        description="Random-init encoders (timing does not depend on weight values), each in its\n"
        "own process. On CPU, peak memory is the process's peak RSS; on CUDA, torch's peak.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or mps")
    parser.add_argument(
        "--encoders",
        default="mobilenetv2_100,tf_efficientnet_lite0,resnet18,wide_resnet50_2",
        help="comma-separated timm names",
    )
    parser.add_argument("--batch-size", default="1,16,32", help="one or a comma-separated list")
    parser.add_argument(
        "--image-size",
        type=image_sizes,
        default=[DEFAULT_INPUT_SIZE],
        help="input side or HEIGHTxWIDTH; a comma-separated list times each",
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (median)")
    parser.add_argument("--channels-last", action="store_true", help="channels-last tensors")
    parser.add_argument("--compile", action="store_true", help="torch.compile the forward pass")
    add_setting_options(
        parser, ModelSettings, names=("decoder_width", "decoder_blocks", "memory_context")
    )
    add_setting_options(parser, TrainConfig, names=("memory_search_dims",))
    parser.add_argument(
        "--onnxruntime",
        action="store_true",
        help="also time the full pipeline exported to ONNX and run by ONNX Runtime (CPU; "
        "pip install 'hfr[export]')",
    )
    for name, weight in benchmark_term_weights().items():
        parser.add_argument(
            f"--{name}-weight",
            type=term_weight,
            default=weight,
            metavar="W",
            help=f"time the {name} term too, fitted to random features and images; 0 is off "
            "(default: hfr train's weight, 0 where training decides)",
        )
    parser.add_argument("--output", required=True, help="JSON list of records")
    parser.add_argument("--markdown", help="also write a markdown table with command and machine")


def _add_reproduce(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "reproduce",
        help="the paper's protocols on the data available, beside the paper's numbers",
        description="MVTec runs at 256x256, lr 0.4, 50 epochs (more for small categories); the\n"
        "one-class protocols (mnist, fashion-mnist, cifar10) at 32x32, lr 0.04, 10 epochs\n"
        "unless given. Each run is saved as JSON when it finishes; running again skips\n"
        "finished runs and resumes the rest.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("protocol", choices=PROTOCOLS)
    parser.add_argument("--data", help="dataset root (fashion-mnist: Debian's copy by default)")
    parser.add_argument("--output-dir", required=True, help="records, models and summary.md")
    parser.add_argument("--only", help="comma-separated run names (categories or classes)")
    add_model_arguments(parser, protocol_defaults=True)


def _add_info(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "info", help="a model's config: encoder, preprocessing, calibration, metrics"
    )
    parser.add_argument("model", help="model folder or Hub repo id")


def build_parser() -> argparse.ArgumentParser:
    """The ``hfr`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="hfr",
        description="HFR anomaly detection: train, evaluate, predict, publish, export, measure.",
    )
    parser.add_argument("--version", action="version", version=f"hfr {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _add_train,
        _add_evaluate,
        _add_predict,
        _add_calibrate,
        _add_push,
        _add_export,
        _add_benchmark,
        _add_reproduce,
        _add_info,
    ):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hfr`` with ``argv`` (default: the process's arguments); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = shlex.join(["hfr", *argv])
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        if getattr(args, "ray", None) is not None:
            require("ray", "ray")  # before the command's imports (seconds): said at once
        command = importlib.import_module(f"hfr.commands.{args.command}")
        return command.run(args, parser)
    except HFRError as error:
        print(f"hfr {args.command}: error: {error}", file=sys.stderr)
        return 2
