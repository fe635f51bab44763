"""The scoring: how the residual levels and the added terms become the anomaly map and the
image score.

``terms`` holds the terms added to the residual levels, one module each (the per-position
statistics, the patch memory, the colour term), behind the one protocol of
:mod:`hfr.scoring.terms.base`.
"""
