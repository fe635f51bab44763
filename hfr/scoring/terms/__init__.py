"""The terms added to the residual levels, one module each, named as the scoring settings name
them (``hfr.config.TERMS``; the module ``hfr.scoring.terms.<name>``). Each module's ``TERM`` is
a class that follows :class:`~hfr.scoring.terms.base.ScoringTerm`: adding a term is one new
module, its settings and its test.
"""

from __future__ import annotations

from importlib import import_module

from hfr.scoring.terms.base import ScoringTerm, TrainingEvidence

__all__ = ["ScoringTerm", "TrainingEvidence", "term_type"]


def term_type(name: str) -> type[ScoringTerm]:
    """The class of the term ``name`` (imported on first use)."""
    return import_module(f"{__name__}.{name}").TERM
