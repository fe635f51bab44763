"""Configs written by earlier versions, read as today's schema.

Every ``config.json`` from 0.1 to 0.19 says ``format_version`` 1 and lacks the keys added after
it was written; each missing key gets the value such a config always scored with. From 0.20 on,
configs record the ``hfr_version`` that wrote them, with every key: ``format_version`` 2 (0.20),
3 (0.21: the calibration states the rate it guarantees and keeps its normal scores), 4 (0.22:
the decoder's width, ``decoder_width``; earlier decoders were as wide as each level), 5 (0.25's
development: the decoder's convolutions, ``decoder_blocks``; earlier decoders' were dense), 6
(0.25's development: the patch memory's context, ``scoring.memory_context``; earlier memories had
none), 7 (0.25 on: the patch memory's cell, ``scoring.memory_stride``; earlier memories' cells were
the stride-16 ones).
Only this module knows the old forms: the rest of the code sees today's schema.

Example:
    >>> old = {"format_version": 1, "encoder": "resnet18", "encoder_fingerprint": None,
    ...        "preprocessing": {"input_size": [256, 256], "interpolation": "bilinear",
    ...                          "mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]}}
    >>> new = upgrade(old)
    >>> new["format_version"], new["decoder"], new["sigma"], new["scoring"]["image_score"]
    (7, 'paper', 4.0, 'max')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hfr.config.settings import TERMS
from hfr.errors import ConfigError
from hfr.scoring.thresholds import fpr_bound, guaranteed_fpr

FORMAT_VERSION = 7
# Keys a format-1 config may lack, and the values it scored with: the paper's decoder, sigma
# and scoring (before 0.3 every model scored so), stage features, stretched images.
_FORMAT_1_DEFAULTS = {
    "encoder_weights": None,
    "feature_location": "stage",
    "decoder": "paper",
    "sigma": 4.0,
    "calibration": None,
    "dataset": None,
    "category": None,
    "training": None,
    "evaluation": None,
    "hfr_version": None,
}
# Scoring keys added after a config could have been written: each added term off, equal level
# weights, the levels summed; the patch memory's features pooled 3 x 3 (its setting before the
# key existed) and the colour term's squared distance (likewise).
_SCORING_ADDED = {
    "level_weights": [1.0, 1.0, 1.0],
    **{
        f"{term}_{key}": value
        for term in TERMS
        for key, value in (("weight", 0.0), ("scale", None))
    },
    "memory_pooling": 3,
    "memory_context": 0.0,
    "memory_stride": 16,
    "combination": "sum",
    "colour_distance": "squared",
}
_PAPER_SCORING = {
    **_SCORING_ADDED,
    "level_scaling": "none",
    "image_score": "max",
    "top_k_fraction": 0.01,
    "level_scales": None,
    "memory_pooling": 1,
    "colour_distance": "mahalanobis",
}
_CALIBRATION_ADDED = {"target_fpr": None, "num_above": None, "fit": None}
# Added in format 3; the guaranteed rate and its bound follow from the count above (when known).
_CALIBRATION_ADDED_3 = ("guaranteed_fpr", "fpr_bound", "scores")
# The patch memory's coreset share in models whose training record has no memory_fraction.
LEGACY_MEMORY_FRACTION = 0.01


def upgrade(data: object) -> dict[str, Any]:
    """The contents of a ``config.json`` of any version as today's schema (a new dict); a
    config of a later format, or not a config at all, raises :class:`ConfigError`."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"the config must be a JSON object, got {type(data).__name__!r}")
    version = data.get("format_version")
    if version == FORMAT_VERSION:
        return dict(data)
    if version not in range(1, FORMAT_VERSION) or isinstance(version, bool):
        raise ConfigError(
            f"format_version must be 1 to {FORMAT_VERSION} (this hfr reads formats up to "
            f"{FORMAT_VERSION}; upgrade hfr for others), got {version!r}"
        )
    values = _upgrade_format_1(data) if version == 1 else dict(data)
    values["format_version"] = FORMAT_VERSION
    values.setdefault("decoder_width", None)
    values.setdefault("decoder_blocks", "dense")
    if isinstance(values.get("scoring"), Mapping):
        values["scoring"] = {"memory_context": 0.0, "memory_stride": 16, **values["scoring"]}
    calibration = values.get("calibration")
    if version < 3 and isinstance(calibration, Mapping):
        values["calibration"] = _with_guarantee(calibration)
    return values


def _with_guarantee(calibration: Mapping[str, Any]) -> dict[str, Any]:
    """A calibration of format 1 or 2 with the format-3 keys: no scores, and the rate its
    threshold guarantees where the count above it was recorded (0.14 on)."""
    values = {**dict.fromkeys(_CALIBRATION_ADDED_3), **calibration}
    count, above = values.get("num_images"), values.get("num_above")
    counted = all(isinstance(v, int) and not isinstance(v, bool) for v in (count, above))
    if counted and 0 <= above <= count and count >= 2:
        values["guaranteed_fpr"] = guaranteed_fpr(count, above)
        values["fpr_bound"] = fpr_bound(count, above)
    return values


def _upgrade_format_1(data: Mapping[str, Any]) -> dict[str, Any]:
    """A format-1 config (0.1-0.19) with every key format 2 has."""
    required = ("encoder", "encoder_fingerprint", "preprocessing")
    missing = [key for key in required if key not in data]
    if missing:
        raise ConfigError(f"the config must be an HFR config with keys {list(required)}")
    values = {**_FORMAT_1_DEFAULTS, **data}
    _drop_input_size(values)
    preprocessing = values["preprocessing"]
    if isinstance(preprocessing, Mapping):
        values["preprocessing"] = {"resize": "stretch", **preprocessing}
    scoring = values.get("scoring", _PAPER_SCORING)
    if isinstance(scoring, Mapping):
        values["scoring"] = {**_SCORING_ADDED, **scoring}
    calibration = values["calibration"]
    if isinstance(calibration, Mapping):
        values["calibration"] = {**_CALIBRATION_ADDED, **calibration}
    return values


def _drop_input_size(values: dict[str, Any]) -> None:
    """Configs before 0.2 held ``input_size`` beside the preprocessing's: it must agree."""
    side = values.pop("input_size", None)
    if side is None:
        return
    preprocessing = values["preprocessing"]
    size = preprocessing.get("input_size") if isinstance(preprocessing, Mapping) else None
    if not size or side != size[0]:
        raise ConfigError(f"input_size must be the side of preprocessing.input_size, got {side!r}")
