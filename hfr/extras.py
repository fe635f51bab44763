"""Optional dependencies, imported only when a feature needs them, with the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from hfr.errors import HFRError


class MissingExtraError(HFRError, ImportError):
    """An optional dependency of the requested feature is not installed."""


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or say which extra installs it.

    Example:
        >>> require("json", "none").__name__
        'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(
            f"{module} is not installed; install it with: pip install 'hfr[{extra}]'"
        ) from error
