"""The examples in the docstrings of every module of the installed package run and hold."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import hfr

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(hfr.__path__, "hfr.") if m.name != "hfr.__main__"
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_the_package_has_examples() -> None:
    attempted = sum(
        doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS).attempted
        for name in MODULES
    )
    assert attempted >= 15
