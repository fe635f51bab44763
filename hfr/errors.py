"""Exceptions raised by HFR, each carrying a message a user can act on."""


class HFRError(Exception):
    """Base class of every error HFR raises on purpose."""


class ImageLoadError(HFRError, ValueError):
    """An input could not be read or converted into an RGB image."""


class DatasetLayoutError(HFRError, ValueError):
    """A dataset folder does not have the expected layout."""


class EncoderWeightsError(HFRError):
    """Encoder weights could not be found, read or matched to the encoder."""


class ModelFormatError(HFRError, ValueError):
    """A saved model (config or weights) is missing, corrupt or does not match."""


class TrainingDivergedError(HFRError, RuntimeError):
    """The training loss became NaN or infinite."""
