"""What a model's ``config.json`` holds today, typed and validated once.

Every field is checked when a config is built; a wrong value raises
:class:`~hfr.errors.ConfigError` naming the field, the expected type or range, and the value
found. A new config comes from :class:`~hfr.config.settings.ModelSettings`
(:meth:`HFRConfig.build`); configs of earlier versions pass through :mod:`hfr.config.compat`
first, so this module knows only today's schema.

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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from hfr import __version__
from hfr.config import compat
from hfr.config.checks import (
    check,
    exact_keys,
    is_int,
    is_number,
    optional_object,
    optional_str,
)
from hfr.config.options import MIN_INPUT_SIDE, size_pixels
from hfr.config.scoring import Scoring
from hfr.config.settings import (
    AUTO,
    CONTEXT_MIN_INPUT,
    CONTEXT_SIGMA,
    DECODER_BLOCKS,
    DECODERS,
    DEFAULT_INPUT_BUDGET,
    DEFAULT_INPUT_SIZE,
    DEFAULT_SIGMA,
    FEATURE_LOCATIONS,
    MEMORY_STRIDES,
    RESIZE_MODES,
    TERMS,
    ModelSettings,
    scale_step,
)
from hfr.errors import ConfigError
from hfr.scoring.calibration import Calibration

FORMAT_VERSION = compat.FORMAT_VERSION
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
MAX_INPUT_SIDE = 1024
MIN_INPUT_BUDGET = MIN_INPUT_SIDE**2  # pixels: the smallest input's
MIN_TILE_SIDE, MAX_TILE_SIDE = 16, 65535  # image pixels
MAX_SIGMA = 64.0
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
RANDOM_WEIGHTS = "random"
# The scoring terms that model each position of the whole input: off in a tiled model.
TILED_OFF_TERMS = ("position", "colour")


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB image becomes the encoder's input: size ``(height, width)``, resize filter,
    how a different aspect is fitted (``resize``: ``"stretch"``, ``"letterbox"``, or
    ``"auto"``, which training decides from the training images and which stretches until
    then) and normalisation. The whole image is always used (no crop: a defect may sit at the
    border). With ``tile`` ``(height, width)``, in image pixels, the image is seen as
    overlapping tiles of that size, each stretched to the input (:mod:`hfr.tiling`).

    ``input_budget`` (pixels) is set while the input size is ``"auto"``: training then chooses
    the size from the training images within that many pixels
    (:func:`hfr.preprocessing.auto_input_size`) and clears it; until then the input is
    ``DEFAULT_INPUT_SIZE`` square."""

    input_size: tuple[int, int]
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    resize: str = "stretch"
    tile: tuple[int, int] | None = None
    input_budget: int | None = None

    def __post_init__(self) -> None:
        size = self.input_size
        check(
            isinstance(size, Sequence)
            and not isinstance(size, str)
            and len(size) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) for s in size)
            and all(MIN_INPUT_SIDE <= s <= MAX_INPUT_SIDE and s % 16 == 0 for s in size),
            "preprocessing.input_size",
            f"two integers, multiples of 16 in [{MIN_INPUT_SIDE}, {MAX_INPUT_SIDE}]",
            size,
        )
        check(
            self.interpolation in INTERPOLATIONS,
            "preprocessing.interpolation",
            f"one of {INTERPOLATIONS}",
            self.interpolation,
        )
        modes = (*RESIZE_MODES, AUTO)
        check(self.resize in modes, "preprocessing.resize", f"one of {modes}", self.resize)
        for name, values, low in (
            ("mean", self.mean, -math.inf),
            ("std", self.std, 0.0),
        ):
            check(
                isinstance(values, Sequence)
                and len(values) == 3
                and all(is_number(v) and v > low for v in values),
                f"preprocessing.{name}",
                "three finite numbers" + (" above 0" if low == 0.0 else ""),
                values,
            )
        if self.tile is not None:
            tile = (self.tile, self.tile) if is_int(self.tile) else self.tile
            check(
                isinstance(tile, Sequence)
                and not isinstance(tile, str)
                and len(tile) == 2
                and all(is_int(s) and MIN_TILE_SIDE <= s <= MAX_TILE_SIDE for s in tile),
                "preprocessing.tile",
                f"null, or one or two integers in [{MIN_TILE_SIDE}, {MAX_TILE_SIDE}] (pixels)",
                self.tile,
            )
            check(
                self.resize == "stretch",
                "preprocessing.resize",
                "'stretch' with tiles (each tile is stretched to the input)",
                self.resize,
            )
            object.__setattr__(self, "tile", tuple(tile))
        check(
            self.input_budget is None
            or (is_int(self.input_budget) and self.input_budget >= MIN_INPUT_BUDGET),
            "preprocessing.input_budget",
            f"null, or at least {MIN_INPUT_BUDGET} pixels ({MIN_INPUT_SIDE}x{MIN_INPUT_SIDE}'s)",
            self.input_budget,
        )
        object.__setattr__(self, "input_size", tuple(size))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    @classmethod
    def for_encoder(
        cls,
        encoder: str,
        input_size: int | Sequence[int],
        *,
        resize: str = "stretch",
        tile: int | Sequence[int] | None = None,
        input_budget: int | Sequence[int] | None = None,
    ) -> Preprocessing:
        """timm's mean, std and interpolation for ``encoder``, at ``input_size``: one side,
        ``(height, width)`` or ``"auto"`` within ``input_budget`` (the pixels of a square of
        that side or of ``(height, width)``); ``resize`` and ``tile`` as given.

        Example:
            >>> Preprocessing.for_encoder("resnet18", "auto", input_budget=512).input_budget
            262144
        """
        import timm

        sizes = {"input_size": _sides(input_size), "input_budget": None}
        if input_size == AUTO:
            sizes = {
                "input_size": _sides(DEFAULT_INPUT_SIZE),
                "input_budget": size_pixels(input_budget),
            }
        try:
            cfg = timm.models.get_pretrained_cfg(encoder)
        except (RuntimeError, KeyError):
            cfg = None
        if cfg is None:
            return cls(**sizes, resize=resize, tile=tile)
        interpolation = cfg.interpolation if cfg.interpolation in INTERPOLATIONS else "bilinear"
        return cls(
            **sizes,
            interpolation=interpolation,
            mean=cfg.mean,
            std=cfg.std,
            resize=resize,
            tile=tile,
        )

    @classmethod
    def from_dict(cls, values: object) -> Preprocessing:
        """Build from ``config.json`` values (``tile`` and ``input_budget`` may be absent: no
        tiles, a fixed input size)."""
        if isinstance(values, dict):
            values = {"tile": None, "input_budget": None, **values}
        exact_keys("preprocessing", values, cls)
        return cls(**values)

    def to_dict(self) -> dict:
        """JSON-ready form for ``config.json`` (``tile`` only when there are tiles and
        ``input_budget`` only while the size is undecided, so a trained untiled model's config
        reads as before in every hfr version)."""
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        for name in ("tile", "input_budget"):
            if values[name] is None:
                del values[name]
        return values


def _sides(size: object) -> object:
    """A side ``s`` as ``(s, s)``; anything else as it is (checked by :class:`Preprocessing`)."""
    if is_int(size):
        return size, size
    return tuple(size) if isinstance(size, Sequence) and not isinstance(size, str) else size


@dataclass(frozen=True)
class HFRConfig:
    """Everything needed to rebuild a model around its decoder weights (``config.json``).

    ``training`` and ``evaluation`` record how the model was made and measured (for its card);
    ``hfr_version`` is the version that wrote the config (``None``: before 0.20).
    """

    encoder: str
    encoder_weights: str | None
    encoder_fingerprint: str | None
    feature_location: str
    decoder: str
    decoder_width: int | None
    decoder_blocks: str
    preprocessing: Preprocessing
    sigma: float | str
    scoring: Scoring
    calibration: Calibration | None = None
    dataset: str | None = None
    category: str | None = None
    training: dict | None = None
    evaluation: dict | None = None
    format_version: int = FORMAT_VERSION
    hfr_version: str | None = __version__

    def __post_init__(self) -> None:
        check(
            self.format_version == FORMAT_VERSION and not isinstance(self.format_version, bool),
            "format_version",
            f"{FORMAT_VERSION} (this hfr reads formats up to {FORMAT_VERSION}; upgrade hfr)",
            self.format_version,
        )
        check(
            isinstance(self.encoder, str) and bool(self.encoder),
            "encoder",
            "a timm model name",
            self.encoder,
        )
        for name in ("encoder_weights", "encoder_fingerprint", "dataset", "category"):
            optional_str(name, getattr(self, name))
        optional_str("hfr_version", self.hfr_version)
        check(
            self.feature_location in FEATURE_LOCATIONS,
            "feature_location",
            f"one of {FEATURE_LOCATIONS}",
            self.feature_location,
        )
        check(self.decoder in DECODERS, "decoder", f"one of {DECODERS}", self.decoder)
        check(
            self.decoder_width is None or (is_int(self.decoder_width) and self.decoder_width >= 1),
            "decoder_width",
            "null or an integer >= 1",
            self.decoder_width,
        )
        check(
            self.decoder_blocks in (AUTO, *DECODER_BLOCKS),
            "decoder_blocks",
            f"one of {(AUTO, *DECODER_BLOCKS)}",
            self.decoder_blocks,
        )
        check(
            isinstance(self.preprocessing, Preprocessing),
            "preprocessing",
            "a Preprocessing",
            self.preprocessing,
        )
        check(
            self.decoder != "context" or min(self.preprocessing.input_size) >= CONTEXT_MIN_INPUT,
            "decoder",
            f"'paper' for inputs under {CONTEXT_MIN_INPUT} px a side (the context decoder "
            "predicts each cell of the stride-16 map from the cells two away)",
            self.decoder,
        )
        pending = self.preprocessing.input_budget is not None
        check(
            (is_number(self.sigma) and 0 <= self.sigma <= MAX_SIGMA)
            or (pending and self.sigma == AUTO),
            "sigma",
            f"a number in [0, {MAX_SIGMA:g}]" + (" or 'auto'" if pending else ""),
            self.sigma,
        )
        check(isinstance(self.scoring, Scoring), "scoring", "a Scoring", self.scoring)
        check(
            pending or self.scoring.memory_stride != AUTO,
            "scoring.memory_stride",
            "a number of pixels once the input size is decided",
            self.scoring.memory_stride,
        )
        check(
            self.calibration is None or isinstance(self.calibration, Calibration),
            "calibration",
            "a Calibration or null",
            self.calibration,
        )
        if self.preprocessing.tile is not None:
            for name in TILED_OFF_TERMS:
                weight = getattr(self.scoring, f"{name}_weight")
                check(
                    weight == 0,
                    f"scoring.{name}_weight",
                    "0 with tiles (the term models each position of the whole image, which "
                    "a tile does not show)",
                    weight,
                )
        optional_object("training", self.training)
        optional_object("evaluation", self.evaluation)
        if self.sigma != AUTO:
            object.__setattr__(self, "sigma", float(self.sigma))

    @property
    def unresolved(self) -> list[str]:
        """The settings still ``"auto"``, which training decides from the training images."""
        preprocessing = self.preprocessing
        size = ["preprocessing.input_size"] if preprocessing.input_budget is not None else []
        resize = ["preprocessing.resize"] if preprocessing.resize == AUTO else []
        sigma = ["sigma"] if self.sigma == AUTO else []
        return size + resize + sigma + [f"scoring.{name}" for name in self.scoring.unresolved]

    @property
    def map_sigma(self) -> float:
        """The smoothing of the maps: ``sigma``, or while the input size is still ``"auto"``
        the default for the input it has until training decides it."""
        if self.sigma == AUTO:
            return default_sigma(self.decoder, self.preprocessing.input_size)
        return self.sigma

    def with_input_size(self, size: tuple[int, int]) -> HFRConfig:
        """This config with its ``"auto"`` input decided as ``size`` (the budget cleared), and
        its sigma and memory stride, where still ``"auto"``, chosen for that input.

        Example:
            >>> config = HFRConfig.build(encoder="resnet18", input_size="auto")
            >>> config.sigma, config.scoring.memory_stride
            ('auto', 'auto')
            >>> decided = config.with_input_size((512, 512))
            >>> decided.sigma, decided.scoring.memory_stride, decided.unresolved
            (4.0, 32, ['preprocessing.resize', 'scoring.colour_weight'])
        """
        preprocessing = replace(self.preprocessing, input_size=_sides(size), input_budget=None)
        sigma, stride = _at_scale(
            self.sigma, self.scoring.memory_stride, self.decoder, preprocessing.input_size
        )
        scoring = replace(self.scoring, memory_stride=stride)
        return self.replace(preprocessing=preprocessing, sigma=sigma, scoring=scoring)

    @classmethod
    def build(cls, settings: ModelSettings | None = None, /, **keywords: Any) -> HFRConfig:
        """The config of a new model from ``settings``, or from its fields as ``keywords``
        (with the records ``dataset``, ``category``, ``training``, ``evaluation``).

        Preprocessing is timm's for the encoder; the decoder ``"context"`` from
        ``CONTEXT_MIN_INPUT`` px a side on and ``"paper"`` below; sigma ``CONTEXT_SIGMA`` with
        the context decoder and the paper's with its, and the patch memory's cells 16 px, each
        times the input's :func:`~hfr.config.settings.scale_step`; the level weights the scoring
        preset's. ``"auto"`` settings stay so until training decides them (with an ``"auto"``
        input, also the sigma and memory stride that follow from it).

        Example:
            >>> config = HFRConfig.build(encoder="resnet18", input_size=(64, 96))
            >>> config.scoring.memory_weight, config.unresolved
            (3.0, ['preprocessing.resize', 'scoring.colour_weight'])
        """
        names = {f.name for f in fields(ModelSettings)}
        given = {k: v for k, v in keywords.items() if k in names}
        records = {k: v for k, v in keywords.items() if k not in names}
        if settings is None:
            settings = ModelSettings(**given)
        elif given:
            raise ConfigError("pass either ModelSettings or its fields as keywords, not both")
        if settings.input_size != AUTO and settings.input_budget != DEFAULT_INPUT_BUDGET:
            raise ConfigError(
                f"input_budget ({settings.input_budget!r}) sets the most pixels of an input size "
                f"chosen from the images: give input_size='auto' (--image-size auto) with it, or "
                f"leave it out with input_size {settings.input_size!r}"
            )
        tiled = settings.tile is not None
        preprocessing = Preprocessing.for_encoder(
            settings.encoder,
            settings.input_size,
            resize="stretch" if tiled and settings.resize == AUTO else settings.resize,
            tile=settings.tile,
            input_budget=settings.input_budget,
        )
        decoder = settings.decoder
        if decoder is None:
            large = min(preprocessing.input_size) >= CONTEXT_MIN_INPUT
            decoder = "context" if large else "paper"
        sigma = AUTO if settings.sigma is None else settings.sigma
        stride = settings.memory_stride
        if preprocessing.input_budget is None:  # the input is decided: so are they
            sigma, stride = _at_scale(sigma, stride, decoder, preprocessing.input_size)
        weights = {f"{term}_weight": getattr(settings, f"{term}_weight") for term in TERMS}
        if tiled:  # the per-position terms have no place in a tile: "auto" is off
            weights.update({k: 0.0 for k, v in weights.items() if v == AUTO})
        scoring = Scoring.preset(
            settings.scoring,
            **weights,
            memory_pooling=settings.memory_pooling,
            memory_context=settings.memory_context,
            memory_stride=stride,
            combination=settings.combination,
            colour_distance=settings.colour_distance,
        )
        if settings.level_weights is not None:
            scoring = replace(scoring, level_weights=tuple(settings.level_weights))
        return cls(
            encoder=settings.encoder,
            encoder_weights=settings.encoder_weights,
            encoder_fingerprint=None,
            feature_location=settings.feature_location,
            decoder=decoder,
            decoder_width=settings.decoder_width,
            decoder_blocks=settings.decoder_blocks,
            preprocessing=preprocessing,
            sigma=sigma,
            scoring=scoring,
            **records,
        )

    @classmethod
    def from_dict(cls, data: object, *, source: str = CONFIG_FILE) -> HFRConfig:
        """Validate ``config.json`` contents, of this version or an earlier one
        (:func:`hfr.config.compat.upgrade`); errors name ``source`` and the field."""
        try:
            values = compat.upgrade(data)
            unknown = sorted(set(values) - {f.name for f in fields(cls)})
            check(
                not unknown,
                "every key",
                "a field this hfr knows (upgrade hfr?)",
                unknown,
            )
            missing = sorted(f.name for f in fields(cls) if f.name not in values)
            check(not missing, "the config", "an HFR config with every key", missing)
            values["preprocessing"] = Preprocessing.from_dict(values["preprocessing"])
            values["scoring"] = Scoring.from_dict(values["scoring"])
            if values["calibration"] is not None:
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
        first = ("format_version", "hfr_version")
        return {
            **{k: values[k] for k in first},
            **{k: v for k, v in values.items() if k not in first},
        }

    def replace(self, **changes: Any) -> HFRConfig:
        """A copy with ``changes``, validated like any config."""
        return replace(self, **changes)

    @property
    def weights_file_name(self) -> str | None:
        """The encoder weights as stored: a file name (never a local path), ``random`` or None."""
        if self.encoder_weights in (None, RANDOM_WEIGHTS):
            return self.encoder_weights
        return self.encoder_weights.replace("\\", "/").rsplit("/", 1)[-1]


def _at_scale(
    sigma: float | str, stride: int | str, decoder: str, input_size: tuple[int, int]
) -> tuple[float, int]:
    """``sigma`` and the memory ``stride``, each where ``"auto"`` decided for ``input_size``."""
    if sigma == AUTO:
        sigma = default_sigma(decoder, input_size)
    if stride == AUTO:
        stride = memory_stride(input_size)
    return sigma, stride


def default_sigma(decoder: str, input_size: tuple[int, int]) -> float:
    """The map's smoothing where none is given: ``CONTEXT_SIGMA`` with the context decoder, the
    paper's ``DEFAULT_SIGMA`` with its, times the input's :func:`scale_step`.

    Example:
        >>> default_sigma("context", (256, 256)), default_sigma("context", (512, 512))
        (2.0, 4.0)
    """
    base = CONTEXT_SIGMA if decoder == "context" else DEFAULT_SIGMA
    return base * scale_step(input_size)


def memory_stride(input_size: tuple[int, int]) -> int:
    """The patch memory's cell side for an input of ``input_size``: 16 px times its
    :func:`scale_step`, so that each cell sees as much of the part as at 256x256.

    Example:
        >>> memory_stride((256, 256)), memory_stride((432, 576)), memory_stride((1024, 1024))
        (16, 32, 32)
    """
    return MEMORY_STRIDES[0] * scale_step(input_size)


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
    """Write ``config`` as ``config.json``, stamped with the version that writes it."""
    values = config.replace(hfr_version=__version__).to_dict()
    Path(path).write_text(json.dumps(values, indent=2) + "\n", encoding="utf-8")
