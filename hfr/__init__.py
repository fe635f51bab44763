"""HFR: hierarchically feature reconstructed autoencoder for unsupervised anomaly detection.

The public names are imported on first use, so ``import hfr`` (and ``hfr --help``) stays fast and
torch loads only when a model is needed.

Example:
    >>> import hfr
    >>> hfr.HFRConfig.build(encoder="resnet18").sigma
    2.0
"""

from __future__ import annotations

import sys
from importlib import import_module
from typing import TYPE_CHECKING, Any

from hfr._moved import MovedModules

__version__ = "0.24.0"
sys.meta_path.append(MovedModules())

_EXPORTS = {
    "HFR": "hfr.model",
    "HFRConfig": "hfr.config",
    "Preprocessing": "hfr.config",
    "TrainConfig": "hfr.config",
    "Calibration": "hfr.scoring.calibration",
    "Prediction": "hfr.scoring.postprocess",
    "AnomalyOutput": "hfr.scoring.maps",
    "HFRError": "hfr.errors",
}
__all__ = [
    "HFR",
    "AnomalyOutput",
    "Calibration",
    "HFRConfig",
    "HFRError",
    "Prediction",
    "Preprocessing",
    "TrainConfig",
    "__version__",
]

if TYPE_CHECKING:
    from hfr.config import HFRConfig, Preprocessing, TrainConfig
    from hfr.errors import HFRError
    from hfr.model import HFR
    from hfr.scoring.calibration import Calibration
    from hfr.scoring.maps import AnomalyOutput
    from hfr.scoring.postprocess import Prediction


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hfr' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
