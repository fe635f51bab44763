"""Which HFR models the demo offers (bundled, local folders, a Hub organisation) and a bounded
LRU cache of loaded models, so memory stays bounded however many categories are opened."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi

from hfr.config import CONFIG_FILE, WEIGHTS_FILE
from hfr.errors import HFRError
from hfr.hub import bundled_dir, hub_reachable
from hfr.model import HFR

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelEntry:
    """A model the user can pick: a label and where it loads from (folder or repo id)."""

    label: str
    source: str
    origin: str  # "bundled", "local" or "hub"


def folder_models(root: Path, origin: str) -> list[ModelEntry]:
    """Model folders at ``root`` or directly below it."""
    if not root.is_dir():
        return []
    folders = [root] if (root / CONFIG_FILE).is_file() else sorted(root.iterdir())
    return [
        ModelEntry(f"{folder.name} ({origin})", str(folder), origin)
        for folder in folders
        if (folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()
    ]


def hub_models(org: str, *, api: HfApi | None = None) -> list[ModelEntry]:
    """The ``hfr-*`` model repos of a Hub user or organisation.

    Raises ``ConnectionError`` when the Hub cannot be reached and HTTP errors as the client does.
    """
    api = api or HfApi()
    if not hub_reachable(api.endpoint):
        raise ConnectionError(f"{api.endpoint} cannot be reached")
    return [
        ModelEntry(f"{model.id} (Hub)", model.id, "hub")
        for model in api.list_models(author=org, search="hfr-")
    ]


def discover_models(
    model_dirs: Sequence[Path] = (), hub_org: str = "", *, api: HfApi | None = None
) -> tuple[list[ModelEntry], str]:
    """Bundled, local and Hub models, and a note on what could not be listed.

    An unreachable Hub leaves the bundled and local models and says so in the note.
    """
    entries = folder_models(bundled_dir(), "bundled")
    for folder in model_dirs:
        entries += folder_models(Path(folder), "local")
    note = ""
    if hub_org:
        try:
            entries += hub_models(hub_org, api=api)
        except Exception as error:  # offline, DNS, HTTP errors: the local models still work
            logger.warning("Hub models of %s could not be listed: %s", hub_org, error)
            reason = type(error).__name__
            note = f"Hub models of `{hub_org}` could not be listed ({reason}); local models only."
    return entries, note


class ModelCache:
    """Thread-safe LRU cache of loaded models; loading one evicts the least recently used."""

    def __init__(self, capacity: int = 3, device: str | None = None) -> None:
        if capacity < 1:
            raise HFRError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.device = device
        self._models: OrderedDict[str, HFR] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._models)

    def __contains__(self, source: str) -> bool:
        return source in self._models

    def get(self, source: str) -> HFR:
        """The model at ``source``, loaded on first use."""
        with self._lock:
            if source in self._models:
                self._models.move_to_end(source)
                return self._models[source]
        model = HFR.from_pretrained(source)
        if self.device:
            model = model.to(self.device)
        with self._lock:
            self._models[source] = model
            self._models.move_to_end(source)
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
        return model
