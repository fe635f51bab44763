"""Which HFR models the demo offers (bundled, local folders, a Hub organisation) and a bounded
LRU cache of loaded models (and their ONNX Runtime exports, on a CPU), so memory stays bounded
however many categories are opened."""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from huggingface_hub import HfApi

from hfr.config import CONFIG_FILE, WEIGHTS_FILE
from hfr.config.settings import BACKENDS
from hfr.errors import HFRError
from hfr.hub import bundled_dir, hub_reachable
from hfr.model import HFR

if TYPE_CHECKING:
    from hfr.onnx_runtime import OnnxModel

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
    """Thread-safe LRU cache of loaded models; loading one evicts the least recently used.

    With ``backend="onnxruntime"`` each model is also exported to ONNX, in the background from
    its first use on, and :meth:`scorer` then returns that export run by ONNX Runtime on the CPU
    (the same scores to float32 rounding, checked at export). PyTorch scores until the export is
    ready, and for good where it fails.
    """

    def __init__(
        self, capacity: int = 3, device: str | None = None, *, backend: str = "torch"
    ) -> None:
        if capacity < 1:
            raise HFRError(f"capacity must be at least 1, got {capacity}")
        if backend not in BACKENDS:
            raise HFRError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.capacity = capacity
        self.device = device
        self.backend = backend
        self._models: OrderedDict[str, HFR] = OrderedDict()
        self._exports: dict[str, HFR | OnnxModel] = {}
        self._exporting: dict[str, threading.Thread] = {}
        self._export_dir: Path | None = None
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
                evicted, _ = self._models.popitem(last=False)
                self._exports.pop(evicted, None)
        return model

    def scorer(self, source: str, *, wait: bool = False) -> HFR | OnnxModel:
        """What scores images of the model at ``source``: the model itself, or with the
        ``onnxruntime`` backend its ONNX export once that is ready (``wait``: wait for it)."""
        model = self.get(source)
        if self.backend == "torch":
            return model
        with self._lock:
            exported = self._exports.get(source)
            job = self._exporting.get(source)
            if exported is None and job is None:
                job = threading.Thread(
                    target=self._export, args=(source, model), name="hfr-export", daemon=True
                )
                self._exporting[source] = job
                job.start()
        if exported is not None:
            return exported
        if wait:
            job.join()
            with self._lock:
                return self._exports.get(source, model)
        return model

    def _export(self, source: str, model: HFR) -> None:
        """Load ``source`` afresh on the CPU (``model`` keeps scoring meanwhile), export it to
        ONNX, check it against PyTorch and keep what scores from now on: the export, or
        ``model`` where any of that failed."""
        from hfr.export import export_onnx, max_onnx_difference
        from hfr.onnx_runtime import OnnxModel

        began = time.perf_counter()
        result: HFR | OnnxModel = model
        try:
            with self._lock:
                if self._export_dir is None:
                    self._export_dir = Path(tempfile.mkdtemp(prefix="hfr-onnx-"))
            name = f"{hashlib.sha256(source.encode()).hexdigest()[:16]}.onnx"
            fresh = HFR.from_pretrained(source)
            path = export_onnx(fresh, self._export_dir / name)
            difference = max_onnx_difference(fresh, path)["scores"]
            result = OnnxModel(path)
            logger.info(
                "%s exported to ONNX in %.1f s; max |onnx - torch| of the scores: %.1e",
                source,
                time.perf_counter() - began,
                difference,
            )
        except Exception as error:  # the exporter's errors are untyped: PyTorch keeps scoring
            logger.warning(
                "%s could not be exported to ONNX (%s); PyTorch scores it", source, error
            )
        finally:
            with self._lock:
                if source in self._models:
                    self._exports[source] = result
                self._exporting.pop(source, None)
