"""The scoring: how the network's features and reconstructions become the anomaly map, the
image score and the verdict.

``maps`` computes the per-level residuals, their scaling and weights, the combined and smoothed
map and the image score; ``terms`` holds the terms added to the residual levels, one module each
(the per-position statistics, the patch memory, the colour term), behind the one protocol of
:mod:`hfr.scoring.terms.base`; ``calibration`` turns normal scores into a threshold and a
normalisation; ``postprocess`` turns a batch's output into per-image predictions.
"""
