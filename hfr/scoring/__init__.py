"""The scoring: how the network's features and reconstructions become the anomaly map, the
image score and the verdict.

``scorer`` holds a model's fitted terms and applies its scoring to a batch; ``maps`` computes the
per-level residuals, their scaling and weights, the combined and smoothed map and the image
score; ``terms`` holds the terms added to the residual levels, one module each (the
per-position statistics, the patch memory, the colour term), behind the one protocol of
:mod:`hfr.scoring.terms.base`; ``thresholds`` holds the threshold rules on normal scores and
what a threshold guarantees; ``calibration`` is what a model records of them (threshold,
guaranteed rate, normal scores, normalisation); ``postprocess`` turns a batch's output into
per-image predictions.
"""
