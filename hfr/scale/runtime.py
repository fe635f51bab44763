"""Connecting to Ray (the ``ray`` extra): a cluster's address, ``auto``, or a local Ray started
on this machine, with a clear message when Ray is not installed."""

from __future__ import annotations

import logging
from types import ModuleType

from hfr.extras import require

logger = logging.getLogger(__name__)
LOCAL = "local"


def connect(address: str = LOCAL, *, num_cpus: int | None = None) -> ModuleType:
    """Import Ray and join a cluster: ``address`` (``ray://host:10001``, ``host:6379`` or
    ``auto`` for the one this machine belongs to) or, with ``"local"``, a Ray started here with
    ``num_cpus`` CPUs (default: all). Returns the ``ray`` module; already connected, it is
    returned as it is.

    Raises :class:`~hfr.extras.MissingExtraError` naming ``pip install 'hfr[ray]'``.
    """
    ray = require("ray", "ray")
    if ray.is_initialized():
        return ray
    options = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if address == LOCAL:
        ray.init(num_cpus=num_cpus, **options)
    else:
        ray.init(address=address, **options)
    resources = ray.cluster_resources()
    logger.info(
        "Ray at %s: %g CPUs, %g GPUs",
        address,
        resources.get("CPU", 0),
        resources.get("GPU", 0),
    )
    return ray
