"""The checks every config section runs on its fields: one message form, naming the field, what
it must be and the value found."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields

from hfr.errors import ConfigError


def is_number(value: object) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value: object) -> bool:
    """An int, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def check(ok: bool, name: str, expected: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"{name} must be {expected}, got {value!r}")


def optional_str(name: str, value: object) -> None:
    check(value is None or isinstance(value, str), name, "a string or null", value)


def optional_object(name: str, value: object) -> None:
    check(
        value is None or isinstance(value, Mapping),
        name,
        "a JSON object or null",
        value,
    )


def exact_keys(name: str, values: object, cls: type) -> None:
    names = sorted(f.name for f in fields(cls))
    check(
        isinstance(values, Mapping) and set(values) == set(names),
        name,
        f"an object with keys {names}",
        values,
    )
