"""What a model's ``config.json`` holds, typed and validated once, and the training settings.

Nothing here imports torch, so the command line shows these defaults at once. Every field is
checked when a config is built; a wrong value raises :class:`~hfr.errors.ConfigError` naming the
field, the expected type or range, and the value found.

Example:
    >>> config = HFRConfig.build(encoder="resnet18", encoder_weights="random", input_size=64)
    >>> config.preprocessing.input_size, config.decoder, config.sigma
    ((64, 64), 'context', 2.0)
    >>> HFRConfig.from_dict({**config.to_dict(), "sigma": -1.0})
    Traceback (most recent call last):
    ...
    hfr.errors.ConfigError: config.json: sigma must be a number in [0, 64], got -1.0
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from hfr.calibration import DEFAULT_THRESHOLD_FIT, THRESHOLD_FITS, Calibration
from hfr.errors import ConfigError, TrainingError

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
DEFAULT_ENCODER = "resnet18.tv_in1k"
DEFAULT_INPUT_SIZE = 256
MAX_INPUT_SIDE = 1024
DEFAULT_SIGMA = 4.0  # the paper's; kept by its decoder
# New models with the context decoder smooth less: their fine levels are predicted from a 5x5
# neighbourhood, so their maps are spread already, and sigma 4 blurred small defects away.
CONTEXT_SIGMA = 2.0
MAX_SIGMA = 64.0
# Where in each stage the features are taken: "stage" is the stage's output (the paper's choice);
# "expansion" is timm's inverted-residual expansion (MobileNet / EfficientNet families): the wide,
# activated output of the depthwise conv in each stage's last block, before its linear projection.
FEATURE_LOCATIONS = ("stage", "expansion")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
# How an image whose aspect differs from the input's is fitted: "stretch" resizes it to the input
# (configs without the key); "letterbox" keeps its aspect, centres it and pads the rest with the
# mean colour (zero after normalisation). The same for square images into a square input. The
# training pipeline's "auto" stretches when the training images share one aspect and letterboxes
# when their aspects differ, where stretching would distort each image differently.
RESIZE_MODES = ("stretch", "letterbox")
AUTO_RESIZE = "auto"
AUTO_WEIGHT = "auto"  # an added term's weight chosen from the training images (hfr.position)
# How the fine levels are decoded: "paper" from d3 (eq. 3-4); "context" from a blind-spot
# description of f3, each cell predicted from the cells two away (hfr.decoder.ContextInput).
# That needs a stride-16 map of 4x4 or more: new models get "context" from CONTEXT_MIN_INPUT px
# a side on and "paper" below; configs without a decoder key load as "paper".
DECODERS = ("paper", "context")
CONTEXT_MIN_INPUT = 64
RANDOM_WEIGHTS = "random"
SCORING_PRESETS = ("hfr", "paper")
DEFAULT_TARGET_FPR = 0.01
DEFAULT_EPOCHS = 50
# Small training sets get more epochs, so that the decoder makes at least this many SGD steps:
# MVTec AD bottle's 188 training images at batch 16 give 12 steps an epoch, 600 in 50 epochs.
MIN_STEPS = 600
DEFAULT_HARD_FRACTION = 0.01  # the hard term of the loss: the hardest 1 % of each level's pixels
DEFAULT_HARD_WEIGHT = 0.5  # ... weighs as much as the mean over all pixels
TRAINING_PRECISIONS = ("auto", "bf16", "fp32")  # of the decoder's training steps
DEFAULT_SCORING = "hfr"  # new models; configs without a scoring section load as "paper"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check(ok: bool, name: str, expected: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"{name} must be {expected}, got {value!r}")


def _optional_str(name: str, value: object) -> None:
    _check(value is None or isinstance(value, str), name, "a string or null", value)


def _optional_object(name: str, value: object) -> None:
    _check(value is None or isinstance(value, Mapping), name, "a JSON object or null", value)


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB image becomes the encoder's input: size ``(height, width)``, resize filter,
    how a different aspect is fitted (``resize``, see ``RESIZE_MODES``) and normalisation.

    The whole image is always used (no crop: a defect may sit at the border).
    """

    input_size: tuple[int, int] = (DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE)
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    resize: str = "stretch"

    def __post_init__(self) -> None:
        size = self.input_size
        _check(
            isinstance(size, Sequence)
            and not isinstance(size, str)
            and len(size) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) for s in size)
            and all(32 <= s <= MAX_INPUT_SIDE and s % 16 == 0 for s in size),
            "preprocessing.input_size",
            f"two integers, multiples of 16 in [32, {MAX_INPUT_SIDE}]",
            size,
        )
        _check(
            self.interpolation in INTERPOLATIONS,
            "preprocessing.interpolation",
            f"one of {INTERPOLATIONS}",
            self.interpolation,
        )
        _check(
            self.resize in RESIZE_MODES,
            "preprocessing.resize",
            f"one of {RESIZE_MODES}",
            self.resize,
        )
        for name, values, low in (("mean", self.mean, -math.inf), ("std", self.std, 0.0)):
            _check(
                isinstance(values, Sequence)
                and len(values) == 3
                and all(_is_number(v) and v > low for v in values),
                f"preprocessing.{name}",
                "three finite numbers" + (" above 0" if low == 0.0 else ""),
                values,
            )
        object.__setattr__(self, "input_size", tuple(size))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    @classmethod
    def for_encoder(
        cls, encoder: str, input_size: int | Sequence[int], *, resize: str = "stretch"
    ) -> Preprocessing:
        """timm's mean, std and interpolation for ``encoder``, at ``input_size``: one side or
        ``(height, width)``."""
        import timm

        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        try:
            cfg = timm.models.get_pretrained_cfg(encoder)
        except (RuntimeError, KeyError):
            cfg = None
        if cfg is None:
            return cls(input_size=size, resize=resize)
        interpolation = cfg.interpolation if cfg.interpolation in INTERPOLATIONS else "bilinear"
        return cls(
            input_size=size,
            interpolation=interpolation,
            mean=cfg.mean,
            std=cfg.std,
            resize=resize,
        )

    @classmethod
    def from_dict(cls, values: object) -> Preprocessing:
        """Build from ``config.json`` values; without ``resize`` (before 0.7), ``"stretch"``."""
        _check(isinstance(values, Mapping), "preprocessing", "a JSON object", values)
        names = {f.name for f in fields(cls)}
        _check(
            set(values) in (names, names - {"resize"}),
            "preprocessing",
            f"an object with keys {sorted(names)}",
            values,
        )
        return cls(**values)

    def to_dict(self) -> dict:
        """JSON-ready form for ``config.json``."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


LEVEL_SCALINGS = ("none", "normal_mean")
IMAGE_SCORES = ("max", "top_k_mean")
# How the fine evidence (strides 4 and 8) and the coarse (stride 16, the added terms) make the
# map: "sum" (the paper's eq. 9, every model) or "product", (fine + 1) x (coarse + 1) - 1, high
# only where both are (an option: sharper maps, blinder to large smooth defects).
COMBINATIONS = ("sum", "product")
DEFAULT_COMBINATION = "sum"
PAPER_LEVEL_WEIGHTS = (1.0, 1.0, 1.0)
# The "hfr" preset halves the two finer levels after scaling: their normal residuals spread
# the most for their mean (std / mean 0.9-1.2 at stride 4 and 0.6-1.1 at stride 8, against
# 0.4-0.7 at stride 16; research/results/score_study), so at full weight their stray peaks decide
# the top 1 % of many normal maps and outrank large smooth defects, which only stride 16 sees.
# Chosen over five seeds of bottle and screw (research/results/level_weights_0.19; CHANGELOG,
# 0.8 and 0.19). Configs keep the weights they were written with.
HFR_LEVEL_WEIGHTS = (0.5, 0.5, 1.0)
# The side of the local mean taken of each feature before it joins a patch-memory vector
# (hfr.memory.patch_vectors): 1 is none; 3, PatchCore's, blurred bottle's maps
# (research/results/memory). Configs without the key load with LEGACY_MEMORY_POOLING.
MEMORY_POOLINGS = (1, 3)
DEFAULT_MEMORY_POOLING = 1
LEGACY_MEMORY_POOLING = 3
# The weight of the patch memory in models trained by the pipeline and the command line
# (HFRConfig.build keeps 0, since an untrained model has no memory to weigh). Chosen on bottle
# and screw with two backbones and two seeds, and on MNIST (research/notebook.md, "Patch
# memory").
TRAINED_MEMORY_WEIGHT = 3.0
# The share of the training images' patch vectors the memory's greedy coreset keeps (hfr.memory):
# five seeds of bottle and screw rescored with research/memory_study.py showed screw's image
# AUROC and verdict rising from PatchCore's smallest, 1 %, to 5 %, and bottle unmoved
# (research/notebook.md, "Five seeds: the coreset fraction"). Saved models keep the memory they
# were trained with; config.json records the fraction (training.memory_fraction).
DEFAULT_MEMORY_FRACTION = 0.05
LEGACY_MEMORY_FRACTION = 0.01
# How the colour term (hfr.colour) measures a cell's colour against the normal ones at that
# cell: "mahalanobis", the root of the mean over channels of the squared standardised
# difference (PaDiM's distance, with per-channel variances), or "squared", that mean itself,
# whose long tail lets a few cells of some normal bottles decide their image score and the
# threshold (research/notebook.md, "Aligned parts: colour"). Configs without the key load with
# LEGACY_COLOUR_DISTANCE.
COLOUR_DISTANCES = ("mahalanobis", "squared")
DEFAULT_COLOUR_DISTANCE = "mahalanobis"
LEGACY_COLOUR_DISTANCE = "squared"
# The weight of the colour term on aligned parts, where `colour_weight="auto"` (the default of
# trained models) turns it on, for each distance: the largest weight on the grid
# measured (0.25 to 3) that kept bottle's image AUROC at 1.000 with both backbones and seeds;
# for the distance, preferred to 1 (slightly more AUPRO) because its threshold flagged 2 of the
# 20 good test bottles in every run (research/notebook.md, "Aligned parts: colour").
ALIGNED_COLOUR_WEIGHTS = {"mahalanobis": 1.5, "squared": 0.25}
# Keys a config may lack: written before the field existed, they load with the value that
# scores as such a config always did (memory_pooling: LEGACY_MEMORY_POOLING; colour_distance:
# LEGACY_COLOUR_DISTANCE; the others their default, which is off for every added term).
_SCORING_KEYS_ADDED = frozenset(
    {
        "level_weights",
        "position_weight",
        "position_scale",
        "memory_weight",
        "memory_scale",
        "memory_pooling",
        "combination",
        "colour_weight",
        "colour_scale",
        "colour_distance",
    }
)
# The terms added to the residual levels: each has a weight (0: off) and a scale, its mean on
# held-out normal images, measured by calibration.
_EXTRA_TERMS = ("position", "memory", "colour")


@dataclass(frozen=True)
class Scoring:
    """How the three residual levels become the map, and the map the image score.

    ``level_scaling``: ``"none"`` sums the levels as they are (the paper, eq. 9); ``"normal_mean"``
    divides each level by its mean over held-out normal images first (``level_scales``, set by
    calibration), so that the noisy shallow level does not drown the deep one. Each level is
    then multiplied by its ``level_weights`` entry (strides 4, 8, 16). ``image_score``:
    ``"max"`` of the map (the paper, eq. 11) or ``"top_k_mean"``, the mean of its highest
    ``top_k_fraction`` of pixels, which one stray bright pixel cannot decide.

    ``position_weight`` (0: off) adds a term for parts that sit in the
    same place in every image: the distance of each stride-8 feature from the normal ones at
    its position (:mod:`hfr.position`), divided by its mean on held-out normal images
    (``position_scale``, set by calibration) and multiplied by the weight. ``memory_weight``
    (0: off) adds in the same way the distance of each stride-16
    patch to the nearest normal training patch (:mod:`hfr.memory`, ``memory_scale``), its
    features first averaged over ``memory_pooling`` x ``memory_pooling`` neighbourhoods.
    ``colour_weight`` (0: off) adds the distance of the input's colour
    in each 4 x 4 cell from the normal colours at that cell (:mod:`hfr.colour`,
    ``colour_scale``), for aligned parts, measured as ``colour_distance`` says (see
    ``COLOUR_DISTANCES``).
    ``combination`` (see ``COMBINATIONS``) sums everything (``"sum"``) or multiplies the fine
    evidence, strides 4 and 8, with the coarse, stride 16 and the added terms (``"product"``).

    Example:
        >>> Scoring.preset("paper") == Scoring()
        True
        >>> Scoring.preset("hfr").image_score, Scoring.preset("hfr").level_weights
        ('top_k_mean', (0.5, 0.5, 1.0))
    """

    level_scaling: str = "none"
    image_score: str = "max"
    top_k_fraction: float = 0.01
    level_scales: tuple[float, ...] | None = None
    level_weights: tuple[float, float, float] = PAPER_LEVEL_WEIGHTS
    position_weight: float = 0.0
    position_scale: float | None = None
    memory_weight: float = 0.0
    memory_scale: float | None = None
    memory_pooling: int = DEFAULT_MEMORY_POOLING
    combination: str = DEFAULT_COMBINATION
    colour_weight: float = 0.0
    colour_scale: float | None = None
    colour_distance: str = DEFAULT_COLOUR_DISTANCE

    def __post_init__(self) -> None:
        _check(
            self.level_scaling in LEVEL_SCALINGS,
            "scoring.level_scaling",
            f"one of {LEVEL_SCALINGS}",
            self.level_scaling,
        )
        _check(
            self.image_score in IMAGE_SCORES,
            "scoring.image_score",
            f"one of {IMAGE_SCORES}",
            self.image_score,
        )
        _check(
            _is_number(self.top_k_fraction) and 0 < self.top_k_fraction <= 1,
            "scoring.top_k_fraction",
            "a number in (0, 1]",
            self.top_k_fraction,
        )
        scales = self.level_scales
        _check(
            scales is None
            or (
                isinstance(scales, Sequence)
                and len(scales) == 3
                and all(_is_number(v) and v > 0 for v in scales)
            ),
            "scoring.level_scales",
            "null or three numbers above 0",
            scales,
        )
        if scales is not None:
            object.__setattr__(self, "level_scales", tuple(float(v) for v in scales))
        weights = self.level_weights
        _check(
            isinstance(weights, Sequence)
            and len(weights) == 3
            and all(_is_number(v) and v >= 0 for v in weights)
            and any(v > 0 for v in weights),
            "scoring.level_weights",
            "three numbers >= 0, not all 0",
            weights,
        )
        object.__setattr__(self, "level_weights", tuple(float(v) for v in weights))
        object.__setattr__(self, "top_k_fraction", float(self.top_k_fraction))
        for term in _EXTRA_TERMS:
            weight, scale = getattr(self, f"{term}_weight"), getattr(self, f"{term}_scale")
            _check(
                _is_number(weight) and weight >= 0,
                f"scoring.{term}_weight",
                "a number >= 0",
                weight,
            )
            object.__setattr__(self, f"{term}_weight", float(weight))
            _check(
                scale is None or (_is_number(scale) and scale > 0),
                f"scoring.{term}_scale",
                "null or a number above 0",
                scale,
            )
            if scale is not None:
                object.__setattr__(self, f"{term}_scale", float(scale))
        _check(
            type(self.memory_pooling) is int and self.memory_pooling in MEMORY_POOLINGS,
            "scoring.memory_pooling",
            f"one of {MEMORY_POOLINGS}",
            self.memory_pooling,
        )
        _check(
            self.combination in COMBINATIONS,
            "scoring.combination",
            f"one of {COMBINATIONS}",
            self.combination,
        )
        _check(
            self.colour_distance in COLOUR_DISTANCES,
            "scoring.colour_distance",
            f"one of {COLOUR_DISTANCES}",
            self.colour_distance,
        )

    @classmethod
    def preset(cls, name: str) -> Scoring:
        """A named setting: ``"paper"`` (max of the plain sum) or ``"hfr"`` (the default of new
        models: levels scaled by their normal means and weighted ``HFR_LEVEL_WEIGHTS``, mean of
        the top 1 % of the map)."""
        _check(name in SCORING_PRESETS, "scoring", f"one of {SCORING_PRESETS}", name)
        if name == "paper":
            return cls()
        return cls(
            level_scaling="normal_mean", image_score="top_k_mean", level_weights=HFR_LEVEL_WEIGHTS
        )

    @property
    def needs_level_scales(self) -> bool:
        """Whether calibration must still measure ``level_scales``."""
        return self.level_scaling != "none" and self.level_scales is None

    @classmethod
    def from_dict(cls, values: object) -> Scoring:
        """Build from ``config.json`` values; a key added after the config was written (see
        ``_SCORING_KEYS_ADDED``) takes the value such a config always scored with: equal level
        weights, no added terms, ``LEGACY_MEMORY_POOLING``, ``LEGACY_COLOUR_DISTANCE``."""
        _check(isinstance(values, Mapping), "scoring", "a JSON object", values)
        names = {f.name for f in fields(cls)}
        _check(
            names - _SCORING_KEYS_ADDED <= set(values) <= names,
            "scoring",
            f"an object with keys {sorted(names)}",
            values,
        )
        legacy = {
            "memory_pooling": LEGACY_MEMORY_POOLING,
            "colour_distance": LEGACY_COLOUR_DISTANCE,
        }
        return cls(**{**legacy, **values})

    def to_dict(self) -> dict:
        """JSON-ready form for ``config.json``."""
        values = asdict(self)
        values["level_scales"] = None if self.level_scales is None else list(self.level_scales)
        values["level_weights"] = list(self.level_weights)
        return values


@dataclass(frozen=True)
class HFRConfig:
    """Everything needed to rebuild a model around its decoder weights (``config.json``).

    ``training`` and ``evaluation`` record how the model was made and measured (for its card).
    """

    format_version: int = FORMAT_VERSION
    encoder: str = DEFAULT_ENCODER
    encoder_weights: str | None = None
    encoder_fingerprint: str | None = None
    feature_location: str = "stage"
    decoder: str = "paper"
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    sigma: float = DEFAULT_SIGMA
    scoring: Scoring = field(default_factory=Scoring)
    calibration: Calibration | None = None
    dataset: str | None = None
    category: str | None = None
    training: dict | None = None
    evaluation: dict | None = None

    def __post_init__(self) -> None:
        _check(
            self.format_version == FORMAT_VERSION and not isinstance(self.format_version, bool),
            "format_version",
            f"{FORMAT_VERSION} (this hfr reads format {FORMAT_VERSION}; upgrade hfr for others)",
            self.format_version,
        )
        _check(
            isinstance(self.encoder, str) and bool(self.encoder),
            "encoder",
            "a timm model name",
            self.encoder,
        )
        for name in ("encoder_weights", "encoder_fingerprint", "dataset", "category"):
            _optional_str(name, getattr(self, name))
        _check(
            self.feature_location in FEATURE_LOCATIONS,
            "feature_location",
            f"one of {FEATURE_LOCATIONS}",
            self.feature_location,
        )
        _check(self.decoder in DECODERS, "decoder", f"one of {DECODERS}", self.decoder)
        _check(
            self.decoder != "context" or min(self.preprocessing.input_size) >= CONTEXT_MIN_INPUT,
            "decoder",
            f"'paper' for inputs under {CONTEXT_MIN_INPUT} px a side (the context decoder "
            "predicts each cell of the stride-16 map from the cells two away)",
            self.decoder,
        )
        _check(
            isinstance(self.preprocessing, Preprocessing),
            "preprocessing",
            "a Preprocessing",
            self.preprocessing,
        )
        _check(
            _is_number(self.sigma) and 0 <= self.sigma <= MAX_SIGMA,
            "sigma",
            f"a number in [0, {MAX_SIGMA:g}]",
            self.sigma,
        )
        _check(isinstance(self.scoring, Scoring), "scoring", "a Scoring", self.scoring)
        _check(
            self.calibration is None or isinstance(self.calibration, Calibration),
            "calibration",
            "a Calibration or null",
            self.calibration,
        )
        _optional_object("training", self.training)
        _optional_object("evaluation", self.evaluation)
        object.__setattr__(self, "sigma", float(self.sigma))

    @classmethod
    def build(
        cls,
        *,
        encoder: str = DEFAULT_ENCODER,
        input_size: int | Sequence[int] = DEFAULT_INPUT_SIZE,
        preprocessing: Preprocessing | None = None,
        scoring: Scoring | str = DEFAULT_SCORING,
        level_weights: Sequence[float] | None = None,
        position_weight: float = 0.0,
        memory_weight: float = 0.0,
        memory_pooling: int = DEFAULT_MEMORY_POOLING,
        colour_weight: float = 0.0,
        colour_distance: str = DEFAULT_COLOUR_DISTANCE,
        combination: str = DEFAULT_COMBINATION,
        decoder: str | None = None,
        resize: str = "stretch",
        sigma: float | None = None,
        **values: Any,
    ) -> HFRConfig:
        """A config for a new model: preprocessing defaults to timm's for ``encoder`` with
        ``resize`` (see ``RESIZE_MODES``), scoring to the ``"hfr"`` preset
        (``scoring="paper"`` for the paper's) with its level weights unless ``level_weights``
        are given, the per-position term weighted ``position_weight``, the patch memory
        ``memory_weight`` (0: off) with ``memory_pooling`` and the per-position colour term
        ``colour_weight`` measured as ``colour_distance``, the levels combined by
        ``combination`` (see ``COMBINATIONS``), the decoder to ``"context"`` from
        ``CONTEXT_MIN_INPUT`` px a side on and ``"paper"`` below, and ``sigma`` to
        ``CONTEXT_SIGMA`` with the context decoder and the paper's ``DEFAULT_SIGMA`` with its."""
        preprocessing = preprocessing or Preprocessing.for_encoder(
            encoder, input_size, resize=resize
        )
        if decoder is None:
            large = min(preprocessing.input_size) >= CONTEXT_MIN_INPUT
            decoder = "context" if large else "paper"
        if sigma is None:
            sigma = CONTEXT_SIGMA if decoder == "context" else DEFAULT_SIGMA
        if isinstance(scoring, str):
            scoring = Scoring.preset(scoring)
        if level_weights is not None:
            scoring = replace(scoring, level_weights=tuple(level_weights))
        scoring = replace(scoring, combination=combination, colour_distance=colour_distance)
        if position_weight or memory_weight or colour_weight:
            scoring = replace(
                scoring,
                position_weight=position_weight,
                memory_weight=memory_weight,
                memory_pooling=memory_pooling,
                colour_weight=colour_weight,
            )
        return cls(
            encoder=encoder,
            decoder=decoder,
            sigma=sigma,
            preprocessing=preprocessing,
            scoring=scoring,
            **values,
        )

    @classmethod
    def from_dict(cls, data: object, *, source: str = CONFIG_FILE) -> HFRConfig:
        """Validate ``config.json`` contents; errors name ``source`` and the field.

        Configs written before a field existed load with that field's default.
        """
        try:
            _check(isinstance(data, Mapping), "the config", "a JSON object", type(data).__name__)
            values = dict(data)
            required = ("format_version", "encoder", "encoder_fingerprint", "preprocessing")
            missing = [key for key in required if key not in values]
            _check(not missing, "the config", f"an HFR config with keys {list(required)}", data)
            legacy_size = values.pop("input_size", None)  # written by format 1 before 0.2
            unknown = sorted(set(values) - {f.name for f in fields(cls)})
            _check(not unknown, "every key", "a field this hfr knows (upgrade hfr?)", unknown)
            values["preprocessing"] = Preprocessing.from_dict(values["preprocessing"])
            _check(
                legacy_size is None or legacy_size == values["preprocessing"].input_size[0],
                "input_size",
                "the side of preprocessing.input_size",
                legacy_size,
            )
            if "scoring" in values:  # configs before 0.3 score as the paper does
                values["scoring"] = Scoring.from_dict(values["scoring"])
            if values.get("calibration") is not None:
                values["calibration"] = Calibration.from_dict(values["calibration"])
            return cls(**values)
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None

    def to_dict(self) -> dict:
        """JSON-ready form for ``config.json``."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["preprocessing"] = self.preprocessing.to_dict()
        values["scoring"] = self.scoring.to_dict()
        values["calibration"] = None if self.calibration is None else self.calibration.to_dict()
        return values

    def replace(self, **changes: Any) -> HFRConfig:
        """A copy with ``changes``, validated like any config."""
        return replace(self, **changes)

    @property
    def weights_file_name(self) -> str | None:
        """The encoder weights as stored: a file name (never a local path), ``random`` or None."""
        if self.encoder_weights in (None, RANDOM_WEIGHTS):
            return self.encoder_weights
        return self.encoder_weights.replace("\\", "/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser, schedule and calibration. SGD settings are the paper's (those of STFPM).

    ``epochs=None`` (the default) trains ``DEFAULT_EPOCHS``, or more when there are too few
    images for ``MIN_STEPS`` SGD steps in that many (:func:`default_epochs`); a number trains
    exactly that many.

    ``target_fpr`` is the share of normal images the default verdict may flag, estimated from
    the held-out normal scores; ``None`` keeps the rule of earlier versions (mean + 3 std, at
    least the maximum). The loss of each level mixes the mean residual of all pixels (the paper's
    loss, eq. 7-8) with weight ``1 - hard_weight`` and the mean of the hardest ``hard_fraction``
    of the batch's pixels with weight ``hard_weight``; ``hard_weight=0`` is the paper's loss.
    ``memory_fraction`` is the share of the training images' patch vectors the patch memory
    keeps, when the scoring weighs one. ``threshold_fit`` is how the held-out scores are read
    for ``target_fpr``: ``"lognormal"`` (their logarithms) or ``"normal"`` (before 0.17).
    ``precision`` is that of the decoder's training steps: ``"bf16"`` (autocast: bf16
    activations, fp32 weights), ``"fp32"``, or ``"auto"``, bf16 where the device computes it
    natively (CUDA, CPUs with AMX or AVX512-BF16; :func:`hfr.device.training_precision`) and
    fp32 elsewhere; a trained model records the precision it ran in. Scoring is unaffected: it
    runs in fp32 on CPU and in bf16 autocast on CUDA, whatever the training precision.
    """

    epochs: int | None = None
    batch_size: int = 16
    lr: float = 0.4
    momentum: float = 0.9
    weight_decay: float = 1e-4
    seed: int = 0
    calibration_fraction: float = 0.1
    cache_features: bool = True
    target_fpr: float | None = DEFAULT_TARGET_FPR
    hard_fraction: float = DEFAULT_HARD_FRACTION
    hard_weight: float = DEFAULT_HARD_WEIGHT
    memory_fraction: float = DEFAULT_MEMORY_FRACTION
    threshold_fit: str = DEFAULT_THRESHOLD_FIT
    precision: str = "auto"

    def __post_init__(self) -> None:
        checks = (
            (
                "epochs",
                self.epochs is None or (_is_int(self.epochs) and self.epochs >= 1),
                "null or an integer >= 1",
            ),
            ("batch_size", _is_int(self.batch_size) and self.batch_size >= 2, "an integer >= 2"),
            ("lr", _is_number(self.lr) and self.lr > 0, "a number > 0"),
            ("momentum", _is_number(self.momentum) and 0 <= self.momentum < 1, "in [0, 1)"),
            ("weight_decay", _is_number(self.weight_decay) and self.weight_decay >= 0, ">= 0"),
            ("seed", _is_int(self.seed), "an integer"),
            (
                "calibration_fraction",
                _is_number(self.calibration_fraction) and 0 < self.calibration_fraction < 1,
                "a number in (0, 1)",
            ),
            ("cache_features", isinstance(self.cache_features, bool), "true or false"),
            (
                "hard_fraction",
                _is_number(self.hard_fraction) and 0 < self.hard_fraction <= 1,
                "a number in (0, 1]",
            ),
            (
                "hard_weight",
                _is_number(self.hard_weight) and 0 <= self.hard_weight <= 1,
                "a number in [0, 1]",
            ),
            (
                "target_fpr",
                self.target_fpr is None
                or (_is_number(self.target_fpr) and 0 < self.target_fpr < 0.5),
                "null or a number in (0, 0.5)",
            ),
            (
                "memory_fraction",
                _is_number(self.memory_fraction) and 0 < self.memory_fraction <= 1,
                "a number in (0, 1]",
            ),
            ("threshold_fit", self.threshold_fit in THRESHOLD_FITS, f"one of {THRESHOLD_FITS}"),
            ("precision", self.precision in TRAINING_PRECISIONS, f"one of {TRAINING_PRECISIONS}"),
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


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_config(path: str | Path) -> HFRConfig:
    """Read and validate a ``config.json``; any defect raises :class:`ConfigError` naming it."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not UTF-8 text ({error.reason} at byte {error.start})"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: not valid JSON ({error})") from None
    return HFRConfig.from_dict(data, source=str(path))


def write_config(config: HFRConfig, path: str | Path) -> None:
    """Write ``config`` as ``config.json``."""
    Path(path).write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
