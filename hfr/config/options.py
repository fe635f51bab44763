"""How a setting is declared (:func:`setting`: its default, flag and help) and how the ``hfr``
command's options are made from the declarations (:func:`add_setting_options`,
:func:`settings_from_options`), with the parsers of the options' values. Nothing here imports
torch."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Collection
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any

from hfr.config.checks import is_int

AUTO = "auto"  # a setting that training decides from the training images
FULL_WIDTH = "full"  # a decoder whose blocks are as wide as the features they decode
SEARCH_ALL = "all"  # a patch memory searched in every number of its vectors
MIN_INPUT_SIDE = 32  # the smallest input side (hfr.config.schema.Preprocessing)


@dataclass(frozen=True)
class Option:
    """How a setting appears on the command line: its flag and what argparse needs."""

    flag: str
    help: str
    parse: Callable[[str], Any] | None = None
    choices: tuple | None = None
    metavar: str | None = None
    negated: bool = False  # a true/false setting that the flag turns off


def setting(default: Any, flag: str | None = None, help: str = "", **option: Any) -> Any:
    """A settings field with ``default``, shown on the command line as ``flag`` (none: the
    setting is Python-only) with ``help`` and the :class:`Option` keywords ``option``."""
    metadata = {"option": Option(flag, help, **option)} if flag else {}
    return field(default=default, metadata=metadata)


def image_size(text: str) -> int | tuple[int, int]:
    """``--image-size``: one side (``256``) or ``HEIGHTxWIDTH`` (``192x256``).

    Example:
        >>> image_size("256"), image_size("192x256")
        (256, (192, 256))
    """
    parts = text.lower().split("x")
    if len(parts) > 2 or not all(part.strip().isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"expected SIDE or HEIGHTxWIDTH (e.g. 192x256): {text!r}")
    sides = tuple(int(part) for part in parts)
    return sides[0] if len(sides) == 1 else sides


def image_size_or_auto(text: str) -> int | tuple[int, int] | str:
    """``--image-size``: :func:`image_size`, or ``auto`` (chosen by training from the training
    images' size and aspect, within ``--input-budget``).

    Example:
        >>> image_size_or_auto("auto"), image_size_or_auto("320x768")
        ('auto', (320, 768))
    """
    if text == AUTO:
        return AUTO
    try:
        return image_size(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected auto, SIDE or HEIGHTxWIDTH (e.g. 320x768): {text!r}"
        ) from None


def input_budget(text: str) -> int | tuple[int, int]:
    """``--input-budget``: :func:`image_size`, at least 32x32's pixels.

    Example:
        >>> input_budget("512"), input_budget("384x512")
        (512, (384, 512))
    """
    size = image_size(text)
    if size_pixels(size) < MIN_INPUT_SIDE**2:
        raise argparse.ArgumentTypeError(
            f"expected SIDE or HEIGHTxWIDTH with at least {MIN_INPUT_SIDE}x{MIN_INPUT_SIDE}'s "
            f"pixels (e.g. 512): {text!r}"
        )
    return size


def size_pixels(size: object) -> object:
    """The pixels of a square of side ``size`` or of a ``(height, width)`` pair; anything else
    as it is (for the caller's check to name).

    Example:
        >>> size_pixels(512), size_pixels((384, 512)), size_pixels("512")
        (262144, 196608, '512')
    """
    if is_int(size):
        return size * size
    pair = isinstance(size, tuple | list) and len(size) == 2 and all(is_int(s) for s in size)
    return size[0] * size[1] if pair else size


def image_sizes(text: str) -> list[int | tuple[int, int]]:
    """A comma-separated list of :func:`image_size` values.

    Example:
        >>> image_sizes("256,512,320x768")
        [256, 512, (320, 768)]
    """
    return [image_size(part) for part in text.split(",")]


def level_weights(text: str) -> tuple[float, float, float]:
    """``--level-weights``: three comma-separated numbers >= 0 for strides 4, 8 and 16.

    Example:
        >>> level_weights("0.5,1,1")
        (0.5, 1.0, 1.0)
    """
    try:
        weights = tuple(float(part) for part in text.split(","))
    except ValueError:
        weights = ()
    if len(weights) != 3 or not all(0 <= w < math.inf for w in weights) or not any(weights):
        raise argparse.ArgumentTypeError(
            f"expected three numbers >= 0, not all 0, e.g. 0.5,1,1: {text!r}"
        )
    return weights


def term_weight(text: str) -> float:
    """The weight of an added scoring term: a number >= 0 (0: off).

    Example:
        >>> term_weight("1")
        1.0
    """
    try:
        weight = float(text)
    except ValueError:
        weight = -1.0
    if not 0 <= weight < math.inf:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, e.g. 1: {text!r}")
    return weight


def width_or_full(text: str) -> int | None:
    """``--decoder-width``: a number of channels >= 1, or ``full`` (each level's own width).

    Example:
        >>> width_or_full("64"), width_or_full("full")
        (64, None)
    """
    if text == FULL_WIDTH:
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected {FULL_WIDTH} or a whole number >= 1: {text!r}")
    return int(text)


def search_dims_option(text: str) -> int | str:
    """``--memory-search-dims``: a number of directions >= 1, ``all`` or ``auto``.

    Example:
        >>> search_dims_option("64"), search_dims_option("all"), search_dims_option("auto")
        (64, 'all', 'auto')
    """
    if text in (AUTO, SEARCH_ALL):
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(
            f"expected {AUTO}, {SEARCH_ALL} or a whole number >= 1: {text!r}"
        )
    return int(text)


def stride_or_auto(text: str) -> int | str:
    """``--memory-stride``: a whole number of pixels, or ``auto`` (from the input's scale).

    Example:
        >>> stride_or_auto("32"), stride_or_auto("auto")
        (32, 'auto')
    """
    if text == AUTO:
        return AUTO
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected {AUTO} or a whole number, e.g. 32: {text!r}")
    return int(text)


def weight_or_auto(text: str) -> float | str:
    """A term's weight or ``auto`` (chosen by training from the training images).

    Example:
        >>> weight_or_auto("auto"), weight_or_auto("0")
        ('auto', 0.0)
    """
    if text == AUTO:
        return AUTO
    try:
        return term_weight(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected auto or a number >= 0, e.g. 1: {text!r}"
        ) from None


def add_setting_options(
    group: argparse.ArgumentParser | argparse._ArgumentGroup,
    settings: type,
    *,
    defaults: dict[str, Any] | None = None,
    names: Collection[str] | None = None,
) -> None:
    """One option per field of the settings class ``settings`` that declares a flag (of the
    fields in ``names`` only, when given), its destination the field's name; ``defaults``
    replaces a field's default by name."""
    for item in fields(settings):
        option: Option | None = item.metadata.get("option")
        if option is None or (names is not None and item.name not in names):
            continue
        default = (defaults or {}).get(item.name, _default(item))
        if option.negated:
            group.add_argument(option.flag, dest=item.name, action="store_false", help=option.help)
            continue
        extra = {"choices": option.choices, "metavar": option.metavar}
        if option.parse is not None:
            extra["type"] = option.parse
        group.add_argument(
            option.flag,
            dest=item.name,
            default=default,
            help=option.help,
            **{k: v for k, v in extra.items() if v is not None},
        )


def settings_from_options(settings: type, args: argparse.Namespace) -> Any:
    """An instance of the settings class ``settings`` from the options that
    :func:`add_setting_options` added (fields without a flag keep their defaults)."""
    return settings(
        **{item.name: getattr(args, item.name) for item in fields(settings) if item.metadata}
    )


def _default(item: Field) -> Any:
    return item.default if item.default is not MISSING else item.default_factory()
