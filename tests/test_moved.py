"""Modules that moved into the package's folders still import under their old names."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch

from hfr._moved import MOVED
from hfr.scoring import maps as anomaly


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


def test_the_scoring_methods_moved_to_the_scorer_with_a_warning() -> None:
    from conftest import tiny_model

    model = tiny_model()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features, reconstructions = model.reconstruct(images)
        residuals = anomaly.residual_maps(features, reconstructions)
        with pytest.warns(DeprecationWarning, match="HFR.term_maps moved to HFR.scorer"):
            terms = model.term_maps(features, images)
        with pytest.warns(DeprecationWarning, match="HFR.score_residuals moved to HFR.scorer"):
            maps, _ = model.score_residuals(residuals, (64, 64), terms)
        torch.testing.assert_close(maps, model(images).maps, rtol=0, atol=0)
