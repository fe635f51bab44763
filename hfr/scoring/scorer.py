"""The scorer: from features and reconstructions to anomaly maps and image scores.

It holds the fitted scoring terms by name (:mod:`hfr.scoring.terms`) and applies a config's
scoring to a batch: the per-level residuals, their scales and weights, each term's map divided
by its scale and multiplied by its weight, the combined and smoothed map, the image score.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from hfr.config import AUTO, TERMS, HFRConfig
from hfr.errors import ConfigError, ModelFormatError
from hfr.scoring import maps as anomaly
from hfr.scoring.terms import ScoringTerm, term_type


class Scorer(nn.Module):
    """The scoring of one model: its fitted terms (``terms``, by name) and the map and score
    of a batch under an :class:`~hfr.config.HFRConfig`'s scoring.

    Example:
        >>> from hfr.config import HFRConfig
        >>> config = HFRConfig.build(encoder="resnet18", encoder_weights="random")
        >>> residuals = [torch.rand(1, 16, 16), torch.rand(1, 8, 8), torch.rand(1, 4, 4)]
        >>> maps, scores = Scorer().score_residuals(residuals, (64, 64), config)
        >>> tuple(maps.shape), tuple(scores.shape)
        ((1, 64, 64), (1,))
    """

    def __init__(self) -> None:
        super().__init__()
        self.terms = nn.ModuleDict()

    def term(self, name: str) -> ScoringTerm | None:
        """The fitted term ``name``, or None."""
        return self.terms[name] if name in self.terms else None  # noqa: SIM401 (no .get)

    def forward(
        self,
        features: list[torch.Tensor],
        reconstructions: list[torch.Tensor],
        images: torch.Tensor,
        config: HFRConfig,
    ) -> anomaly.AnomalyOutput:
        """Maps at the size of the normalised batch ``images`` and their scores, from its
        encoder ``features`` and their ``reconstructions``."""
        residuals = anomaly.residual_maps(features, reconstructions)
        size = tuple(images.shape[-2:])
        terms = self.term_maps(features, images, config)
        maps, scores = self.score_residuals(residuals, size, config, terms)
        return anomaly.AnomalyOutput(maps, scores, residuals)

    def term_maps(
        self, features: list[torch.Tensor], images: torch.Tensor, config: HFRConfig
    ) -> dict[str, torch.Tensor]:
        """The maps of the terms ``config``'s scoring weighs, by name, before scaling, from the
        ``features`` of the normalised batch ``images``. A model not trained yet has none."""
        scoring, maps = config.scoring, {}
        untrained = config.calibration is None
        for name in TERMS:
            weight = getattr(scoring, f"{name}_weight")
            term = self.term(name)
            if weight in (0, AUTO) or (term is None and untrained):
                continue
            if term is None:
                raise ConfigError(
                    f"scoring.{name}_weight is {weight:g} but this model has no "
                    f"{term_type(name).label}: train it with that weight (--{name}-weight), or "
                    "set it to 0"
                )
            maps[name] = term.term_map(features, images, scoring)
        return maps

    def score_residuals(
        self,
        residuals: list[torch.Tensor],
        size: tuple[int, int],
        config: HFRConfig,
        terms: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps at ``size`` and image scores from the three residual levels and the ``terms``
        of :meth:`term_maps`, as ``config.scoring`` says."""
        scoring = config.scoring
        levels = anomaly.weigh_levels(
            residuals, scales=scoring.level_scales, weights=scoring.level_weights
        )
        for term, values in (terms or {}).items():
            scale = getattr(scoring, f"{term}_scale")
            if scale is None:
                raise ConfigError(f"scoring.{term}_scale is not set: calibrate the model first")
            levels.append(values * (getattr(scoring, f"{term}_weight") / scale))
        maps = anomaly.combined_map(levels, size, config.map_sigma, scoring.combination)
        return maps, anomaly.image_scores(maps, scoring.image_score, scoring.top_k_fraction)

    def state(self) -> dict[str, torch.Tensor]:
        """The tensors of every fitted term, each under its ``<name>.`` prefix."""
        state: dict[str, torch.Tensor] = {}
        for term in self.terms.values():
            state.update(term.state())
        return state

    def load_terms(
        self,
        path: str | Path,
        state: dict[str, torch.Tensor],
        channels: list[int],
        config: HFRConfig,
    ) -> None:
        """Take every term's ``<name>.`` tensors out of ``state`` (read from ``path``) and
        rebuild the terms from them, checked; a term ``config`` weighs must be there."""
        terms = {name: _term_from_state(path, state, name, channels, config) for name in TERMS}
        self.terms = nn.ModuleDict({name: term for name, term in terms.items() if term is not None})


def _term_from_state(
    path: str | Path,
    state: dict[str, torch.Tensor],
    name: str,
    channels: list[int],
    config: HFRConfig,
) -> ScoringTerm | None:
    """Take the ``<name>.`` tensors out of ``state`` and rebuild the term from them, checked;
    ``None`` when there are none, which a weight above 0 refuses."""
    tensors = {k: state.pop(k) for k in list(state) if k.startswith(f"{name}.")}
    weight = getattr(config.scoring, f"{name}_weight")
    if not tensors:
        if weight not in (0, AUTO):
            raise ModelFormatError(
                f"{path} holds no {term_type(name).label}, but config.json weighs it "
                f"(scoring.{name}_weight {weight:g})"
            )
        return None
    try:
        return term_type(name).from_weights(tensors, tuple(channels), config.scoring)
    except ModelFormatError as error:
        raise ModelFormatError(f"{path}: {error}") from error
