"""How the residual levels and the added terms become the map, and the map the image score: the
``scoring`` section of ``config.json``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from hfr.config.checks import check, exact_keys, is_number
from hfr.config.settings import (
    AUTO,
    COLOUR_DISTANCES,
    COMBINATIONS,
    HFR_LEVEL_WEIGHTS,
    MEMORY_POOLINGS,
    MEMORY_STRIDES,
    SCORING_PRESETS,
    TERMS,
)

LEVEL_SCALINGS = ("none", "normal_mean")
IMAGE_SCORES = ("max", "top_k_mean")
PAPER_LEVEL_WEIGHTS = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class Scoring:
    """How the three residual levels become the map, and the map the image score.

    ``level_scaling``: ``"none"`` sums the levels as they are (the paper, eq. 9); ``"normal_mean"``
    divides each level by its mean over held-out normal images first (``level_scales``, set by
    calibration). Each level is then multiplied by its ``level_weights`` entry (strides 4, 8,
    16). ``image_score``: ``"max"`` of the map (the paper, eq. 11) or ``"top_k_mean"``, the mean
    of its highest ``top_k_fraction`` of pixels.

    Each added term (``TERMS``) has a weight (0: off; ``"auto"``: chosen by training) and a
    scale, its mean on held-out normal images, set by calibration: ``position``, the distance of
    each stride-8 feature from the normal ones at its position (:mod:`hfr.scoring.terms.position`);
    ``memory``, the distance of each patch to the nearest normal training patch
    (:mod:`hfr.scoring.terms.memory`), its features first averaged over ``memory_pooling`` x
    ``memory_pooling`` neighbourhoods, and ``memory_context`` times their means over 3 x 3
    neighbourhoods appended (0: none), each patch ``memory_stride`` input pixels a side (16, the
    stride-16 cells; 32 or 64, their vectors averaged over 2 x 2 or 4 x 4 cells; ``"auto"``
    until training chooses the input size); ``colour``, the distance of the input's colour in each
    4 x 4 cell from the normal colours at that cell (:mod:`hfr.scoring.terms.colour`), measured as
    ``colour_distance`` says. ``combination`` sums everything (``"sum"``) or multiplies the fine
    evidence, strides 4 and 8, with the coarse, stride 16 and the added terms (``"product"``).

    Example:
        >>> Scoring.preset("hfr").image_score, Scoring.preset("hfr").level_weights
        ('top_k_mean', (0.5, 0.5, 1.0))
    """

    level_scaling: str
    image_score: str
    top_k_fraction: float
    level_scales: tuple[float, ...] | None
    level_weights: tuple[float, float, float]
    position_weight: float | str
    position_scale: float | None
    memory_weight: float
    memory_scale: float | None
    memory_pooling: int
    memory_context: float
    memory_stride: int | str
    combination: str
    colour_weight: float | str
    colour_scale: float | None
    colour_distance: str

    def __post_init__(self) -> None:
        self._check_levels()
        for term in TERMS:
            weight, scale = (
                getattr(self, f"{term}_weight"),
                getattr(self, f"{term}_scale"),
            )
            auto = term != "memory" and weight == AUTO
            check(
                auto or (is_number(weight) and weight >= 0),
                f"scoring.{term}_weight",
                "a number >= 0" if term == "memory" else "a number >= 0 or 'auto'",
                weight,
            )
            if not auto:
                object.__setattr__(self, f"{term}_weight", float(weight))
            check(
                scale is None or (is_number(scale) and scale > 0),
                f"scoring.{term}_scale",
                "null or a number above 0",
                scale,
            )
            if scale is not None:
                object.__setattr__(self, f"{term}_scale", float(scale))
        for name, allowed in (
            ("memory_pooling", MEMORY_POOLINGS),
            ("combination", COMBINATIONS),
            ("colour_distance", COLOUR_DISTANCES),
        ):
            value = getattr(self, name)
            ok = value in allowed and type(value) is type(allowed[0])
            check(ok, f"scoring.{name}", f"one of {allowed}", value)
        stride = self.memory_stride
        ok = stride == AUTO or (stride in MEMORY_STRIDES and type(stride) is int)
        check(ok, "scoring.memory_stride", f"one of {(AUTO, *MEMORY_STRIDES)}", stride)
        context = self.memory_context
        ok = is_number(context) and context >= 0
        check(ok, "scoring.memory_context", "a number >= 0", context)
        object.__setattr__(self, "memory_context", float(context))

    def _check_levels(self) -> None:
        for name, allowed in (
            ("level_scaling", LEVEL_SCALINGS),
            ("image_score", IMAGE_SCORES),
        ):
            value = getattr(self, name)
            check(value in allowed, f"scoring.{name}", f"one of {allowed}", value)
        check(
            is_number(self.top_k_fraction) and 0 < self.top_k_fraction <= 1,
            "scoring.top_k_fraction",
            "a number in (0, 1]",
            self.top_k_fraction,
        )
        scales = self.level_scales
        check(
            scales is None
            or (
                isinstance(scales, Sequence)
                and len(scales) == 3
                and all(is_number(v) and v > 0 for v in scales)
            ),
            "scoring.level_scales",
            "null or three numbers above 0",
            scales,
        )
        if scales is not None:
            object.__setattr__(self, "level_scales", tuple(float(v) for v in scales))
        weights = self.level_weights
        check(
            isinstance(weights, Sequence)
            and len(weights) == 3
            and all(is_number(v) and v >= 0 for v in weights)
            and any(v > 0 for v in weights),
            "scoring.level_weights",
            "three numbers >= 0, not all 0",
            weights,
        )
        object.__setattr__(self, "level_weights", tuple(float(v) for v in weights))
        object.__setattr__(self, "top_k_fraction", float(self.top_k_fraction))

    @classmethod
    def preset(cls, name: str, **changes: Any) -> Scoring:
        """A named setting with ``changes``: ``"paper"`` (max of the plain sum) or ``"hfr"``
        (levels scaled by their normal means and weighted ``HFR_LEVEL_WEIGHTS``, mean of the
        map's top 1 %), each with no added term."""
        check(name in SCORING_PRESETS, "scoring", f"one of {SCORING_PRESETS}", name)
        paper = name == "paper"
        values = {
            "level_scaling": "none" if paper else "normal_mean",
            "image_score": "max" if paper else "top_k_mean",
            "top_k_fraction": 0.01,
            "level_scales": None,
            "level_weights": PAPER_LEVEL_WEIGHTS if paper else HFR_LEVEL_WEIGHTS,
            "memory_pooling": 1,
            "memory_context": 0.0,
            "memory_stride": MEMORY_STRIDES[0],
            "combination": "sum",
            "colour_distance": "mahalanobis",
            **{f"{term}_weight": 0.0 for term in TERMS},
            **{f"{term}_scale": None for term in TERMS},
        }
        return cls(**{**values, **changes})

    @property
    def needs_level_scales(self) -> bool:
        """Whether calibration must still measure ``level_scales``."""
        return self.level_scaling != "none" and self.level_scales is None

    @property
    def unresolved(self) -> list[str]:
        """The settings still ``"auto"``, which training decides."""
        weights = [f"{t}_weight" for t in TERMS if getattr(self, f"{t}_weight") == AUTO]
        return weights + (["memory_stride"] if self.memory_stride == AUTO else [])

    @classmethod
    def from_dict(cls, values: object) -> Scoring:
        """Build from ``config.json`` values."""
        exact_keys("scoring", values, cls)
        return cls(**values)

    def to_dict(self) -> dict:
        """JSON-ready form for ``config.json``."""
        values = asdict(self)
        values["level_scales"] = None if self.level_scales is None else list(self.level_scales)
        values["level_weights"] = list(self.level_weights)
        return values
