"""Exceptions raised by HFR, each carrying a message a user can act on.

Every failure a user can cause (a bad image, file, folder, config, setting or repo id) raises a
subclass of :class:`HFRError`, so callers can tell them apart by type, never by message text.
"""


class HFRError(Exception):
    """Base class of every error HFR raises on purpose."""


class ImageLoadError(HFRError, ValueError):
    """An input could not be read or converted into an RGB image."""


class DatasetLayoutError(HFRError, ValueError):
    """A dataset folder does not have the expected layout."""


class EncoderWeightsError(HFRError):
    """Encoder weights could not be found, read or matched to the encoder."""


class UnknownEncoderError(EncoderWeightsError, ValueError):
    """The encoder name is not a timm model, or it lacks the requested features."""


class ModelFormatError(HFRError, ValueError):
    """A saved model (config or weights) is corrupt or does not match."""


class ConfigError(ModelFormatError):
    """A model config value has the wrong type or lies outside its range."""


class ModelNotFoundError(HFRError, FileNotFoundError):
    """A model folder, Hub repo, revision or file does not exist or cannot be reached."""


class TrainingError(HFRError, ValueError):
    """Training cannot start or go on: bad settings, too few images, a mismatched checkpoint."""


class TrainingDivergedError(TrainingError, RuntimeError):
    """The training loss became NaN or infinite."""


class TrainingCancelled(TrainingError):
    """A training run was stopped on request (its progress callback raised this)."""
