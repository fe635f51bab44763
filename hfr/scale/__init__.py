"""Scale-out on Ray (the ``ray`` extra): joining or starting a Ray (``runtime``), training many
categories as one task each with failures isolated and finished ones skipped (``fleet``), and
scoring a large image set with Ray Data and a pool of predictor actors (``predict``)."""
