"""The settings a new model is built and trained from, each declared once.

A setting is a field of :class:`ModelSettings` (the encoder, the input and how the maps are
made) or of :class:`TrainConfig` (the optimiser, the loss and calibration): its type, default
and help text are written there and nowhere else. ``HFR(...)``, ``HFRConfig.build``,
``train_category``, the ``hfr`` command's options (made by :mod:`hfr.config.options`) and the
app all read these declarations, so every entry point builds the same model from the same arguments.
Nothing here imports torch: the command line shows these defaults at once.

Example:
    >>> ModelSettings().memory_weight, ModelSettings().colour_weight, ModelSettings().resize
    (3.0, 'auto', 'auto')
    >>> TrainConfig().target_fpr
    0.01
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hfr.config.checks import is_int, is_number
from hfr.config.options import (
    AUTO,
    FULL_WIDTH,
    SEARCH_ALL,
    image_size,
    image_size_or_auto,
    input_budget,
    level_weights,
    search_dims_option,
    setting,
    stride_or_auto,
    term_weight,
    weight_or_auto,
    width_or_full,
)
from hfr.errors import TrainingError
from hfr.scoring.calibration import DEFAULT_THRESHOLD_FIT, THRESHOLD_FITS

DEFAULT_ENCODER = "resnet18.tv_in1k"
# 256x256 stays the default input: 512x512 (what input_size "auto" chooses for MVTec AD bottle
# and screw), with its memory cells and sigma at the 256x256 scale, is within the bar in seeds
# 0-1 (0-2 for EfficientNet-Lite0's screw, AUPRO -0.0019 at the edge), not yet over five seeds
# (research/results/image_size_auto_0.25).
DEFAULT_INPUT_SIZE = 256
# With input_size "auto", training fits the training images' aspect within as many pixels as a
# square input of this side (hfr.preprocessing.auto_input_size): 512x512, about 4x the time of
# 256x256 per image, and never fewer pixels than DEFAULT_INPUT_SIZE's square.
DEFAULT_INPUT_BUDGET = 512
# A larger input sees each part at a larger scale, so the patch memory's cells and the map's
# smoothing grow with it: an input of about 2^k times DEFAULT_INPUT_SIZE's side (k from
# scale_step) describes each memory cell over 16 x 2^k input pixels and smooths with 2^k times
# the decoder's sigma, as 256x256 does at k = 0. At 512x512, stride-16 cells each saw a quarter
# of the part and the memory limit kept 1.4 % of screw's (4,096 of 294,912); with stride-32 cells
# and sigma 4, EfficientNet-Lite0's seed 0 came within the bar of 256x256 on bottle and screw
# (research/notebook.md, "A larger input's patch memory at the 256x256 scale"). Steps beyond 2
# (inputs from about 724 px a side) are unmeasured, so such inputs keep 2's.
MEMORY_STRIDES = (16, 32, 64)
MAX_SCALE_STEP = 2
# The scoring terms added to the residual levels, each a module of hfr.scoring.terms with a
# weight setting (``<name>_weight``) and a scale that calibration measures.
TERMS = ("position", "memory", "colour")
# Where in each stage the features are taken: "stage" is the stage's output (the paper's choice);
# "expansion" is timm's inverted-residual expansion (MobileNet / EfficientNet families): the wide,
# activated output of the depthwise conv in each stage's last block, before its linear projection.
FEATURE_LOCATIONS = ("stage", "expansion")
# How an image whose aspect differs from the input's is fitted: "stretch" resizes it to the
# input; "letterbox" keeps its aspect, centres it and pads the rest with the mean colour (zero
# after normalisation). "auto" stretches when the training images share one aspect and
# letterboxes when their aspects differ, where stretching would distort each image differently.
RESIZE_MODES = ("stretch", "letterbox")
# With tiles (ModelSettings.tile), neighbouring tiles overlap by at least this share of a tile's
# side, so that a defect on one tile's border lies well inside the next one.
TILE_OVERLAP = 0.25
SCORING_PRESETS = ("hfr", "paper")
DEFAULT_SCORING = "hfr"
# How the fine levels are decoded: "paper" from d3 (eq. 3-4); "context" from a blind-spot
# description of f3, each cell predicted from the cells two away (hfr.network.decoder.ContextInput).
# That needs a stride-16 map of 4x4 or more: "context" from CONTEXT_MIN_INPUT px a side on.
DECODERS = ("paper", "context")
CONTEXT_MIN_INPUT = 64
# The most channels in a decoder block (hfr.network.decoder.hidden_width); None: each block as
# wide as the features it decodes. A narrow decoder is cheaper (ResNet18's 2.42 -> 0.61 GFLOPs per
# 256x256 image at 64) but, over five seeds, width 64 cost EfficientNet-Lite0's screw 0.006 image
# AUROC and 0.004 AUPRO (research/results/decoder_width_0.22): full width stays the default.
DEFAULT_DECODER_WIDTH = None
# The decoder's spatial convolutions: "dense" ones, or "separable" ones (depthwise, their channels
# mixed by the 1x1 convolutions around them), whose cost grows with a block's width, not its square.
# "auto" keeps the decoder within the budget of one forward pass: dense blocks where they cost at
# most MAX_DENSE_DECODER_SHARE of the encoder's FLOPs (MobileNetV2 0.42, EfficientNet-Lite0 0.43
# at full width), separable ones beyond (ResNet18 0.66, Wide-ResNet50-2 1.61), because separable
# blocks cost accuracy where dense ones are affordable: over five seeds they lowered screw's AUPRO
# by 0.0045 with MobileNetV2 and 0.0016 with EfficientNet-Lite0 (research/results/separable_0.25).
DECODER_BLOCKS = ("dense", "separable")
DEFAULT_DECODER_BLOCKS = AUTO
MAX_DENSE_DECODER_SHARE = 0.5
# What `hfr export --int8` quantises (hfr.quantize): the decoder's convolutions, or the encoder's
# too; and the largest losses it accepts before refusing to write the int8 model: the bar every
# change of a default meets (image AUROC 0.005, AUPRO 0.002).
INT8_SCOPES = ("decoder", "all")
MAX_INT8_DROPS = {"image_auroc": 0.005, "aupro": 0.002}
DEFAULT_SIGMA = 4.0  # the paper's; kept with its decoder
# The context decoder smooths less: its fine levels are predicted from a 5x5 neighbourhood, so
# its maps are spread already, and sigma 4 blurred small defects away.
CONTEXT_SIGMA = 2.0
# The "hfr" preset halves the two finer levels after scaling: their normal residuals spread
# the most for their mean (std / mean 0.9-1.2 at stride 4 and 0.6-1.1 at stride 8, against
# 0.4-0.7 at stride 16; research/results/score_study), so at full weight their stray peaks decide
# the top 1 % of many normal maps and outrank large smooth defects, which only stride 16 sees.
# Chosen over five seeds of bottle and screw (research/results/level_weights_0.19).
HFR_LEVEL_WEIGHTS = (0.5, 0.5, 1.0)
# How the fine evidence (strides 4 and 8) and the coarse (stride 16, the added terms) make the
# map: "sum" (the paper's eq. 9) or "product", (fine + 1) x (coarse + 1) - 1, high only where
# both are (sharper maps, blinder to large smooth defects).
COMBINATIONS = ("sum", "product")
DEFAULT_COMBINATION = "sum"
# The patch memory's weight (scoring.terms.memory), chosen on bottle and screw with two backbones
# and two seeds, and on MNIST (research/notebook.md, "Patch memory").
DEFAULT_MEMORY_WEIGHT = 3.0
# The side of the local mean taken of each feature before it joins a patch-memory vector
# (hfr.scoring.terms.memory.patch_vectors): 1 is none; 3, PatchCore's, blurred bottle's maps
# (research/results/memory).
MEMORY_POOLINGS = (1, 3)
DEFAULT_MEMORY_POOLING = 1
# The weight of the neighbourhood's mean (each feature averaged over MEMORY_CONTEXT_SIDE x
# MEMORY_CONTEXT_SIDE cells) appended to each patch-memory vector, so that a patch matches only
# where its surroundings match too: a smooth stretch where the normal part has structure then
# finds no near neighbour. 0 is none, the default: 2 found such gaps in screw better (structural
# check) but lowered bottle's five-seed AUPRO by 0.0022 with EfficientNet-Lite0, beyond the bar
# (research/notebook.md, "The patch memory's context").
MEMORY_CONTEXT_SIDE = 3
DEFAULT_MEMORY_CONTEXT = 0.0
# The share of the training images' patch vectors the memory's greedy coreset keeps: five seeds
# of bottle and screw showed screw's image AUROC and verdict rising from PatchCore's smallest,
# 1 %, to 5 %, and bottle unmoved (research/notebook.md, "Five seeds: the coreset fraction").
DEFAULT_MEMORY_FRACTION = 0.05
# The most patch vectors the memory keeps: its search then costs ~1.5 ms per 256x256 image with
# MobileNetV2 on 2 CPU threads however large the training set (47 ms at 10,000 images without
# it), and its coreset is chosen from at most limit / fraction vectors (bottle's and screw's
# 5 % are 2406 and 3686: the limit leaves them unchanged; research/results/memory_cost_0.22.json).
DEFAULT_MEMORY_LIMIT = 4096
MIN_MEMORY = 16  # patch vectors a memory keeps at least, however few the training images
# The memory's search is one matrix product whose cost grows with the numbers in each vector.
# Vectors of more than MAX_FULL_SEARCH_DIMS numbers (ResNet18's 384, Wide-ResNet50-2's 1536) are
# searched in MEMORY_SEARCH_SHARE of them, the kept vectors' first principal directions, and the
# distance to the vector found is measured in full; the mobile encoders' (MobileNetV2 128,
# EfficientNet-Lite0 152) are searched whole. Searched in a third of their directions, the mobile
# encoders' five-seed models lost at most 0.0013 screw AUPRO (research/results/memory_search).
MAX_FULL_SEARCH_DIMS = 192
MEMORY_SEARCH_SHARE = 1 / 3
# How the colour term (terms.colour) measures a cell's colour against the normal ones at that
# cell: "mahalanobis", the root of the mean over channels of the squared standardised
# difference (PaDiM's distance), or "squared", that mean itself, whose long tail lets a few
# cells of some normal bottles decide their image score (research/notebook.md, "Aligned parts:
# colour").
COLOUR_DISTANCES = ("mahalanobis", "squared")
DEFAULT_COLOUR_DISTANCE = "mahalanobis"
# The colour term's weight on aligned parts, where colour_weight "auto" turns it on, for each
# distance: the largest weight on the grid measured (0.25 to 3) that kept bottle's image AUROC
# at 1.000 with both backbones and seeds; for the distance, preferred to 1 (slightly more
# AUPRO) because its threshold flagged 2 of the 20 good test bottles in every run.
ALIGNED_COLOUR_WEIGHTS = {"mahalanobis": 1.5, "squared": 0.25}
DEFAULT_TARGET_FPR = 0.01
DEFAULT_EPOCHS = 50
# Small training sets get more epochs, so that the decoder makes at least this many SGD steps:
# MVTec AD bottle's 188 training images at batch 16 give 12 steps an epoch, 600 in 50 epochs.
MIN_STEPS = 600
DEFAULT_HARD_FRACTION = 0.01  # the hard term of the loss: the hardest 1 % of each level's pixels
DEFAULT_HARD_WEIGHT = 0.5  # ... weighs as much as the mean over all pixels
TRAINING_PRECISIONS = ("auto", "bf16", "fp32")  # of the decoder's training steps
# What scores images in `hfr predict` and the app: PyTorch, or the model exported to ONNX and
# run by ONNX Runtime on the CPU (the `export` extra).
BACKENDS = ("torch", "onnxruntime")


def scale_step(input_size: tuple[int, int]) -> int:
    """``2^k``, the input's scale against a ``DEFAULT_INPUT_SIZE`` square (the ratio of the
    geometric means of their sides) rounded to a power of two, from 1 to ``MAX_SCALE_STEP``.

    Example:
        >>> scale_step((256, 256)), scale_step((512, 512)), scale_step((432, 576))
        (1, 2, 2)
        >>> scale_step((64, 64)), scale_step((352, 352)), scale_step((1024, 1024))
        (1, 1, 2)
    """
    ratio = math.sqrt(input_size[0] * input_size[1]) / DEFAULT_INPUT_SIZE
    return min(2 ** max(round(math.log2(ratio)), 0), MAX_SCALE_STEP)


def _weights(values: tuple[float, ...]) -> str:
    return ",".join(f"{w:g}" for w in values)


@dataclass(frozen=True)
class ModelSettings:
    """What a new model is built from: the encoder, its input and how its maps are made.

    ``None`` and ``"auto"`` are decided when the model is built (``sigma``, ``memory_stride``,
    ``decoder``, ``level_weights``: from the input size and the scoring) or trained
    (``input_size``, and with it ``sigma`` and ``memory_stride``; ``resize``,
    ``position_weight``, ``colour_weight``: from the training images). Checked
    when the model's config is built (:meth:`HFRConfig.build <hfr.config.HFRConfig.build>`).
    """

    encoder: str = setting(DEFAULT_ENCODER, "--encoder", "timm model name")
    encoder_weights: str | None = setting(
        None,
        "--encoder-weights",
        "weights file name or path, or 'random' (default: timm's, from the Hub)",
    )
    feature_location: str = setting(
        "stage",
        "--feature-location",
        "stage outputs (paper) or the expansion layers of MobileNet/EfficientNet encoders",
        choices=FEATURE_LOCATIONS,
    )
    input_size: int | tuple[int, int] | str = setting(
        DEFAULT_INPUT_SIZE,
        "--image-size",
        "network input: one side, or HEIGHTxWIDTH (multiples of 16), or auto: the training "
        "images' (or tiles') aspect with as many pixels as they have, at most --input-budget "
        f"and at least {DEFAULT_INPUT_SIZE}x{DEFAULT_INPUT_SIZE}'s",
        parse=image_size_or_auto,
    )
    input_budget: int | tuple[int, int] = setting(
        DEFAULT_INPUT_BUDGET,
        "--input-budget",
        "with --image-size auto, the most pixels the input may have, as the SIDE of a square "
        "or HEIGHTxWIDTH: the time per image grows with them (512: about 4x 256's)",
        parse=input_budget,
    )
    tile: int | tuple[int, int] | None = setting(
        None,
        "--tile",
        "score each image in overlapping tiles of SIDE or HEIGHTxWIDTH image pixels, each "
        "resized to the network input, and train on such tiles: for images much larger than "
        "the input, where a small defect would shrink to a pixel or two (default: the whole "
        "image in one pass); the position and colour terms are off with tiles",
        parse=image_size,
    )
    resize: str = setting(
        AUTO,
        "--resize",
        "how images whose aspect differs from the input's are fitted: stretch (resized to "
        "it), letterbox (aspect kept, padded with the mean colour), or auto: stretch when the "
        "training images share one aspect, letterbox when their aspects differ",
        choices=(AUTO, *RESIZE_MODES),
    )
    sigma: float | None = setting(
        None,
        "--sigma",
        f"Gaussian smoothing of the map, in input pixels (default: {CONTEXT_SIGMA:g} with the "
        f"context decoder, {DEFAULT_SIGMA:g}, the paper's, with the paper's; twice that for an "
        f"input of about twice {DEFAULT_INPUT_SIZE}'s side or more)",
        parse=float,
    )
    scoring: str = setting(
        DEFAULT_SCORING,
        "--scoring",
        f"hfr: levels scaled by their normal means and weighted {_weights(HFR_LEVEL_WEIGHTS)}, "
        "image score the mean of the map's top 1 %%; paper: plain sum, image score its maximum",
        choices=SCORING_PRESETS,
    )
    level_weights: tuple[float, float, float] | None = setting(
        None,
        "--level-weights",
        "weights of the stride-4, 8 and 16 levels in the map (default: the scoring's)",
        parse=level_weights,
        metavar="W4,W8,W16",
    )
    position_weight: float | str = setting(
        0.0,
        "--position-weight",
        "for parts that sit in the same place in every image (a fixed camera and fixture): add "
        "W x the distance of each stride-8 feature from the normal ones at its position; 0 "
        "(default) is off, 1 measured best on aligned bottles; auto: 1 when position explains "
        "at least 80 %% of the training images' feature variance and there are 40 or more of "
        "them, else 0",
        parse=weight_or_auto,
        metavar="W",
    )
    memory_weight: float = setting(
        DEFAULT_MEMORY_WEIGHT,
        "--memory-weight",
        "add W x the distance of each patch (--memory-stride) to the nearest normal training "
        "patch (a coreset of them, --memory-fraction); 0 is off",
        parse=term_weight,
        metavar="W",
    )
    colour_weight: float | str = setting(
        AUTO,
        "--colour-weight",
        "add W x the distance of the input's colour in each 4x4-pixel cell from the normal "
        "colours at that cell: finds brighter, darker or discoloured regions on aligned parts; "
        "auto: "
        + " or ".join(f"{w:g} ({d})" for d, w in ALIGNED_COLOUR_WEIGHTS.items())
        + " by --colour-distance where --position-weight auto would find the parts aligned, "
        "else 0",
        parse=weight_or_auto,
        metavar="W",
    )
    colour_distance: str = setting(
        DEFAULT_COLOUR_DISTANCE,
        "--colour-distance",
        "how the colour term measures a cell against the normal colours there: mahalanobis, "
        "the root of the mean squared standardised difference over channels, or squared, that "
        "mean",
        choices=COLOUR_DISTANCES,
    )
    memory_pooling: int = setting(
        DEFAULT_MEMORY_POOLING,
        "--memory-pooling",
        "side of the local mean taken of each feature before it joins a patch vector: 1 is "
        "none; 3 is PatchCore's",
        parse=int,
        choices=MEMORY_POOLINGS,
    )
    memory_stride: int | str = setting(
        AUTO,
        "--memory-stride",
        "input pixels each patch-memory cell describes: its stride-8 and stride-16 features "
        "averaged over cells of this side; auto: 16, or 32 for an input of about twice "
        f"{DEFAULT_INPUT_SIZE}'s side or more, so that a cell sees as much of the part as at "
        f"{DEFAULT_INPUT_SIZE}x{DEFAULT_INPUT_SIZE}",
        parse=stride_or_auto,
        choices=(AUTO, *MEMORY_STRIDES),
    )
    memory_context: float = setting(
        DEFAULT_MEMORY_CONTEXT,
        "--memory-context",
        f"append W x the mean of each feature over its {MEMORY_CONTEXT_SIDE}x{MEMORY_CONTEXT_SIDE} "
        "neighbourhood to each patch vector, so that a patch matches a normal one only where "
        "its surroundings match too (for parts whose defects are absences); 0 is none",
        parse=term_weight,
        metavar="W",
    )
    combination: str = setting(
        DEFAULT_COMBINATION,
        "--combination",
        "sum adds every level and term into the map; product multiplies the fine evidence "
        "(strides 4, 8) with the coarse (stride 16, the terms): sharper maps, blinder to large "
        "smooth defects",
        choices=COMBINATIONS,
    )
    decoder: str | None = setting(
        None,
        "--decoder",
        "context: the fine levels of each cell are decoded from the cells around it, so a "
        "defect cannot be copied through; paper: every level decoded from the cell itself "
        f"(default: context from {CONTEXT_MIN_INPUT} px a side, paper below)",
        choices=DECODERS,
    )
    decoder_width: int | None = setting(
        DEFAULT_DECODER_WIDTH,
        "--decoder-width",
        "most channels in a decoder block: a wide encoder's decoder is then cheaper (ResNet18 "
        "at 64: a quarter of the GFLOPs), at some accuracy (docs/method.md, 'Decoder width'); "
        f"{FULL_WIDTH} (default): each block as wide as the features it decodes",
        parse=width_or_full,
        metavar="N",
    )
    decoder_blocks: str = setting(
        DEFAULT_DECODER_BLOCKS,
        "--decoder-blocks",
        "the decoder's spatial convolutions: dense, or separable (depthwise, then 1x1): cheaper "
        "(ResNet18's decoder a sixth of the GFLOPs), at some accuracy; auto (default): dense "
        f"where they cost at most {MAX_DENSE_DECODER_SHARE:g}x the encoder's FLOPs "
        "(docs/method.md, 'Separable decoder blocks')",
        choices=(AUTO, *DECODER_BLOCKS),
    )


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser, loss, schedule and calibration. SGD settings are the paper's (STFPM's).

    ``epochs=None`` trains ``DEFAULT_EPOCHS``, or more when there are too few images for
    ``MIN_STEPS`` SGD steps in that many (:func:`default_epochs`). The loss of each level mixes
    the mean residual of all pixels (the paper's, eq. 7-8) with weight ``1 - hard_weight`` and
    the mean of the hardest ``hard_fraction`` of the batch's pixels with ``hard_weight``.
    ``target_fpr`` is the share of normal images the verdict may flag, read from the held-out
    normal scores as ``threshold_fit`` says: guaranteed by the conformal rule where they are
    enough, estimated by the fits (``None``: mean + 3 std, at least the maximum).
    ``precision`` is that of the decoder's training steps; ``"auto"`` is bf16 where the device
    computes it natively (:func:`hfr.device.training_precision`). Scoring runs in
    fp32 on CPU and in bf16 autocast on CUDA, whatever the training precision.
    """

    epochs: int | None = setting(
        None,
        "--epochs",
        f"training epochs (default: {DEFAULT_EPOCHS}, more for small sets: at least "
        f"{MIN_STEPS} SGD steps)",
        parse=int,
    )
    batch_size: int = setting(16, "--batch-size", "images per SGD step", parse=int)
    lr: float = setting(0.4, "--lr", "SGD learning rate", parse=float)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    seed: int = setting(0, "--seed", "split and init seed", parse=int)
    calibration_fraction: float = setting(
        0.1,
        "--calibration-fraction",
        "share of the normal images held out to set the threshold (at least 2, and 5 from 20 "
        "images on); more held-out images lower the false-alarm rate it can guarantee",
        parse=float,
    )
    cache_features: bool = setting(
        True, "--no-feature-cache", "re-encode the images every epoch", negated=True
    )
    target_fpr: float | None = setting(
        DEFAULT_TARGET_FPR,
        "--target-fpr",
        "share of normal images the default verdict may flag, estimated from held-out normal "
        "images",
        parse=float,
    )
    hard_fraction: float = setting(
        DEFAULT_HARD_FRACTION,
        "--hard-fraction",
        "the hard term: the mean of this share of each level's pixels in a batch, the hardest ones",
        parse=float,
    )
    hard_weight: float = setting(
        DEFAULT_HARD_WEIGHT,
        "--hard-weight",
        "weight of the hard term in the loss, against the mean over all pixels (0: the "
        "paper's loss)",
        parse=float,
    )
    memory_fraction: float = setting(
        DEFAULT_MEMORY_FRACTION,
        "--memory-fraction",
        "share of the training images' patch vectors the patch memory keeps",
        parse=float,
    )
    memory_limit: int = setting(
        DEFAULT_MEMORY_LIMIT,
        "--memory-limit",
        "the most patch vectors the patch memory keeps, so that its search and its coreset "
        "cost the same however many training images there are (beyond limit / fraction "
        "vectors, a random sample of that many)",
        parse=int,
    )
    memory_search_dims: int | str = setting(
        AUTO,
        "--memory-search-dims",
        "how many principal directions of the kept patch vectors the memory's nearest vector is "
        "searched in (its distance is measured in all): all, N, or auto: all up to "
        f"{MAX_FULL_SEARCH_DIMS} numbers per vector, {MEMORY_SEARCH_SHARE:.2g} of them beyond "
        "(ResNet18's 384: 128)",
        parse=search_dims_option,
        metavar="N",
    )
    threshold_fit: str = setting(
        DEFAULT_THRESHOLD_FIT,
        "--threshold-fit",
        "how the threshold is read from the held-out normal scores: conformal guarantees "
        "--target-fpr (or the lowest rate the held-out images can), lognormal and normal "
        "estimate it by a robust fit",
        choices=THRESHOLD_FITS,
    )
    precision: str = setting(
        "auto",
        "--precision",
        "of the decoder's training steps; auto: bf16 where the device has it natively (CUDA, "
        "CPUs with AMX or AVX512-BF16), fp32 elsewhere",
        choices=TRAINING_PRECISIONS,
    )

    def __post_init__(self) -> None:
        epochs_ok = self.epochs is None or (is_int(self.epochs) and self.epochs >= 1)
        checks = (
            ("epochs", epochs_ok, "null or an integer >= 1"),
            (
                "batch_size",
                is_int(self.batch_size) and self.batch_size >= 2,
                "an integer >= 2",
            ),
            ("lr", is_number(self.lr) and self.lr > 0, "a number > 0"),
            (
                "momentum",
                is_number(self.momentum) and 0 <= self.momentum < 1,
                "in [0, 1)",
            ),
            (
                "weight_decay",
                is_number(self.weight_decay) and self.weight_decay >= 0,
                ">= 0",
            ),
            ("seed", is_int(self.seed), "an integer"),
            (
                "calibration_fraction",
                is_number(self.calibration_fraction) and 0 < self.calibration_fraction < 1,
                "a number in (0, 1)",
            ),
            ("cache_features", isinstance(self.cache_features, bool), "true or false"),
            (
                "hard_fraction",
                is_number(self.hard_fraction) and 0 < self.hard_fraction <= 1,
                "a number in (0, 1]",
            ),
            (
                "hard_weight",
                is_number(self.hard_weight) and 0 <= self.hard_weight <= 1,
                "a number in [0, 1]",
            ),
            (
                "target_fpr",
                self.target_fpr is None
                or (is_number(self.target_fpr) and 0 < self.target_fpr < 0.5),
                "null or a number in (0, 0.5)",
            ),
            (
                "memory_fraction",
                is_number(self.memory_fraction) and 0 < self.memory_fraction <= 1,
                "a number in (0, 1]",
            ),
            (
                "memory_limit",
                is_int(self.memory_limit) and self.memory_limit >= MIN_MEMORY,
                f"an integer >= {MIN_MEMORY}",
            ),
            (
                "memory_search_dims",
                self.memory_search_dims in (AUTO, SEARCH_ALL)
                or (is_int(self.memory_search_dims) and self.memory_search_dims >= 1),
                f"{AUTO!r}, {SEARCH_ALL!r} or an integer >= 1",
            ),
            (
                "threshold_fit",
                self.threshold_fit in THRESHOLD_FITS,
                f"one of {THRESHOLD_FITS}",
            ),
            (
                "precision",
                self.precision in TRAINING_PRECISIONS,
                f"one of {TRAINING_PRECISIONS}",
            ),
        )
        for name, ok, expected in checks:
            if not ok:
                raise TrainingError(f"{name} must be {expected}, got {getattr(self, name)!r}")


def default_epochs(num_train_images: int, batch_size: int) -> int:
    """``DEFAULT_EPOCHS``, or as many more as ``num_train_images`` need for ``MIN_STEPS`` SGD
    steps (a last batch of one image is skipped, as training does).

    Example:
        >>> default_epochs(188, 16), default_epochs(288, 16), default_epochs(19, 16)
        (50, 50, 300)
    """
    steps = num_train_images // batch_size + (num_train_images % batch_size >= 2)
    return max(DEFAULT_EPOCHS, math.ceil(MIN_STEPS / max(1, steps)))


def benchmark_term_weights() -> dict[str, float]:
    """The scoring terms' weights ``hfr benchmark`` times by default: ``hfr train``'s, and 0
    where training decides (``auto``), keyed by term.

    Example:
        >>> benchmark_term_weights()
        {'position': 0.0, 'memory': 3.0, 'colour': 0.0}
    """
    defaults = ModelSettings()
    weights = {name: getattr(defaults, f"{name}_weight") for name in TERMS}
    return {name: 0.0 if weight == AUTO else weight for name, weight in weights.items()}
