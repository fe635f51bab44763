"""The settings and the saved config, apart from torch.

``settings`` declares every setting a new model is built and trained from, once
(:class:`ModelSettings`, :class:`TrainConfig`), in the form ``options`` defines, from which the
``hfr`` command's options are made: the Python API, the command line and the app read them
there. ``schema`` is what a model's ``config.json`` holds today (:class:`HFRConfig` with its
:class:`Preprocessing` and the :class:`Scoring` of ``scoring``), checked field by field with the
checks of ``checks``; ``compat`` reads the configs of earlier versions as today's schema.
Nothing here imports torch, so ``hfr --help`` answers at once.
"""

from hfr.config.compat import FORMAT_VERSION
from hfr.config.schema import (
    CONFIG_FILE,
    INTERPOLATIONS,
    RANDOM_WEIGHTS,
    WEIGHTS_FILE,
    HFRConfig,
    Preprocessing,
    read_config,
    write_config,
)
from hfr.config.scoring import PAPER_LEVEL_WEIGHTS, Scoring
from hfr.config.settings import (
    ALIGNED_COLOUR_WEIGHTS,
    AUTO,
    COLOUR_DISTANCES,
    COMBINATIONS,
    CONTEXT_MIN_INPUT,
    CONTEXT_SIGMA,
    DECODERS,
    DEFAULT_COLOUR_DISTANCE,
    DEFAULT_DECODER_WIDTH,
    DEFAULT_ENCODER,
    DEFAULT_EPOCHS,
    DEFAULT_HARD_FRACTION,
    DEFAULT_INPUT_SIZE,
    DEFAULT_MEMORY_FRACTION,
    DEFAULT_MEMORY_LIMIT,
    DEFAULT_MEMORY_POOLING,
    DEFAULT_MEMORY_WEIGHT,
    DEFAULT_SIGMA,
    DEFAULT_TARGET_FPR,
    FEATURE_LOCATIONS,
    HFR_LEVEL_WEIGHTS,
    MEMORY_POOLINGS,
    MIN_MEMORY,
    MIN_STEPS,
    RESIZE_MODES,
    SCORING_PRESETS,
    TERMS,
    TILE_OVERLAP,
    TRAINING_PRECISIONS,
    ModelSettings,
    TrainConfig,
    default_epochs,
)

__all__ = [
    "ALIGNED_COLOUR_WEIGHTS",
    "AUTO",
    "COLOUR_DISTANCES",
    "COMBINATIONS",
    "CONFIG_FILE",
    "CONTEXT_MIN_INPUT",
    "CONTEXT_SIGMA",
    "DECODERS",
    "DEFAULT_COLOUR_DISTANCE",
    "DEFAULT_DECODER_WIDTH",
    "DEFAULT_ENCODER",
    "DEFAULT_EPOCHS",
    "DEFAULT_HARD_FRACTION",
    "DEFAULT_INPUT_SIZE",
    "DEFAULT_MEMORY_FRACTION",
    "DEFAULT_MEMORY_LIMIT",
    "DEFAULT_MEMORY_POOLING",
    "DEFAULT_MEMORY_WEIGHT",
    "DEFAULT_SIGMA",
    "DEFAULT_TARGET_FPR",
    "FEATURE_LOCATIONS",
    "FORMAT_VERSION",
    "HFR_LEVEL_WEIGHTS",
    "INTERPOLATIONS",
    "MEMORY_POOLINGS",
    "MIN_MEMORY",
    "MIN_STEPS",
    "PAPER_LEVEL_WEIGHTS",
    "RANDOM_WEIGHTS",
    "RESIZE_MODES",
    "SCORING_PRESETS",
    "TERMS",
    "TILE_OVERLAP",
    "TRAINING_PRECISIONS",
    "WEIGHTS_FILE",
    "HFRConfig",
    "ModelSettings",
    "Preprocessing",
    "Scoring",
    "TrainConfig",
    "default_epochs",
    "read_config",
    "write_config",
]
