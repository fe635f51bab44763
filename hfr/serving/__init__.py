"""Serving people: the demo's handlers, results, training runs and runtime (``handlers``,
``results``, ``training``, ``runtime``: the only modules of ``hfr`` that import gradio), the
model list and cache (``catalog``), training a category from uploads (``studio``), heat-map
overlays (``viz``) and ``hfr predict``'s results folder (``outputs``)."""
