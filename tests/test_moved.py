"""Modules that moved into the package's folders still import under their old names."""

from __future__ import annotations

import importlib
import sys

import pytest

from hfr._moved import MOVED


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()))
def test_an_old_module_name_gives_the_moved_module_with_a_warning(old: str, new: str) -> None:
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new}"):
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)


def test_the_old_cli_parsers_are_found_with_a_warning() -> None:
    import hfr.cli
    from hfr.config import options

    with pytest.warns(DeprecationWarning, match="hfr.config.options.level_weights"):
        assert hfr.cli.level_weights is options.level_weights
