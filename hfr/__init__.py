"""HFR: hierarchically feature reconstructed autoencoder for unsupervised anomaly detection."""

from hfr.calibration import Calibration
from hfr.model import HFR, AnomalyOutput, Prediction
from hfr.preprocessing import Preprocessing

__all__ = ["HFR", "AnomalyOutput", "Calibration", "Prediction", "Preprocessing"]
__version__ = "0.1.0"
