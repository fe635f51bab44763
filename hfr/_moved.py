"""Modules that moved, still importable under their old names with a deprecation warning."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import warnings
from importlib.machinery import ModuleSpec
from types import ModuleType

# old name -> new name (0.20: the modules went into the folders of the package's parts)
MOVED = {
    "hfr.position": "hfr.scoring.terms.position",
    "hfr.memory": "hfr.scoring.terms.memory",
    "hfr.colour": "hfr.scoring.terms.colour",
    "hfr.encoder": "hfr.network.encoder",
    "hfr.decoder": "hfr.network.decoder",
    "hfr.anomaly": "hfr.scoring.maps",
    "hfr.calibration": "hfr.scoring.calibration",
    "hfr.postprocess": "hfr.scoring.postprocess",
    "hfr.ray_predict": "hfr.scale.predict",
    "hfr.fleet": "hfr.scale.fleet",
    "hfr.ray_runtime": "hfr.scale.runtime",
    "hfr.studio": "hfr.serving.studio",
    "hfr.catalog": "hfr.serving.catalog",
    "hfr.viz": "hfr.serving.viz",
    "hfr.outputs": "hfr.serving.outputs",
}


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers an import of an old name with the module at its new one, and warns."""

    def find_spec(self, name: str, path: object, target: object = None) -> ModuleSpec | None:
        return importlib.util.spec_from_loader(name, self) if name in MOVED else None

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        warnings.warn(f"{spec.name} moved to {MOVED[spec.name]}", DeprecationWarning, stacklevel=2)
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """The module ran at its new name already."""
