"""The Hub side: repo names, downloads with one clear error per failure, and idempotent pushes.

Nothing here knows the model class: :mod:`hfr.model` calls :func:`download`, the command line
calls :func:`push_folder`.
"""

from __future__ import annotations

import hashlib
import socket
import zipfile
from importlib.resources import files
from pathlib import Path
from urllib.parse import urlparse

from huggingface_hub import (
    HfApi,
    constants,
    get_hf_file_metadata,
    hf_hub_download,
    try_to_load_from_cache,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from hfr.config import CONFIG_FILE, WEIGHTS_FILE
from hfr.errors import ModelFormatError, ModelNotFoundError

CARD_FILE = "README.md"
REPO_FILES = (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE)
_DATASET_SLUGS = {"mvtec_ad": "mvtec", "mvtec_3d": "mvtec3d"}


def repo_name(dataset: str, category: str) -> str:
    """Hub repo name of a category.

    Example:
        >>> repo_name("mvtec_ad", "metal_nut")
        'hfr-mvtec-metal-nut'
    """
    slug = _DATASET_SLUGS.get(dataset, dataset.replace("_", "-"))
    return f"hfr-{slug}-{category.replace('_', '-')}"


def download(
    model_id: str,
    filename: str,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> Path:
    """Path of ``filename`` in a local model folder, a bundled model (its bare name, no
    ``org/``: see :func:`bundled_dir`) or a Hub repo (``org/name``, downloaded or cached).

    Raises :class:`ModelNotFoundError` with one sentence saying what is missing and why.
    """
    local = Path(resolve_model_id(model_id))
    if local.is_dir():
        if not (local / filename).is_file():
            raise ModelNotFoundError(_missing_file_message(str(local), filename))
        return local / filename
    try:
        validate_repo_id(model_id)
    except HFValidationError as error:
        raise ModelNotFoundError(
            f"{model_id!r} is neither a model folder nor a Hub repo id ('org/name')"
        ) from error
    local_files_only = local_files_only or not hub_reachable()
    try:
        return Path(
            hf_hub_download(
                repo_id=model_id,
                filename=filename,
                revision=revision,
                cache_dir=cache_dir,
                force_download=force_download,
                local_files_only=local_files_only,
                token=token,
            )
        )
    except (HfHubHTTPError, OfflineModeIsEnabled, LocalEntryNotFoundError, OSError) as error:
        message = _hub_error_message(model_id, filename, revision, error)
        if "/" not in model_id:  # a bare name: perhaps a bundled one was meant
            names = ", ".join(sorted(p.name for p in bundled_dir().iterdir() if p.is_dir()))
            message += f"; the bundled models are {names}"
        raise ModelNotFoundError(message) from error


def resolve_model_id(model_id: str) -> str:
    """``model_id`` itself, or the folder of the bundled model it names (a bare name, no
    ``org/``, that is not a local folder)."""
    bundled = bundled_dir() / model_id
    if "/" not in model_id and not Path(model_id).is_dir() and bundled.is_dir():
        return str(bundled)
    return model_id


def bundled_dir() -> Path:
    """The folder of the models shipped inside the package (package data); each is found by
    its bare folder name, such as ``"hfr-mvtec-bottle-mobilenetv2"``."""
    return Path(str(files("hfr").joinpath("bundled")))


def _missing_file_message(model_id: str, filename: str) -> str:
    if filename == WEIGHTS_FILE:
        return (
            f"{model_id} has no {WEIGHTS_FILE}; HFR loads only safetensors weights, never pickles"
        )
    return f"{model_id} has no {filename}: not an HFR model (save one with save_pretrained)"


def _hub_error_message(model_id: str, filename: str, revision: str | None, error: Exception) -> str:
    """One clear sentence for each way a Hub download can fail."""
    if isinstance(error, RepositoryNotFoundError):
        return f"model repo {model_id!r} not found on the Hub (or private: log in or pass token=)"
    if isinstance(error, RevisionNotFoundError):
        return f"{model_id!r} has no revision {revision!r}"
    if isinstance(error, (LocalEntryNotFoundError, OfflineModeIsEnabled)):  # before its base
        return (
            f"{filename} of {model_id!r} is not in the cache and the Hub cannot be reached "
            "(offline mode or no network)"
        )
    if isinstance(error, EntryNotFoundError):
        return _missing_file_message(repr(model_id), filename)
    return f"cannot download {filename} of {model_id!r}: {error}"


def hub_reachable(endpoint: str | None = None, timeout: float = 3.0) -> bool:
    """Whether a download may be tried: not in offline mode, and a TCP connection to the Hub
    (``endpoint``, by default the configured one) opens within ``timeout`` seconds.

    Checked first so that an offline machine is told at once, not after the client's retries.
    """
    if constants.HF_HUB_OFFLINE:
        return False
    address = urlparse(endpoint or constants.ENDPOINT)
    port = address.port or (443 if address.scheme == "https" else 80)
    try:
        with socket.create_connection((address.hostname, port), timeout=timeout):
            return True
    except (OSError, UnicodeError):
        return False


def cached_file(repo_id: str, filenames: tuple[str, ...]) -> Path | None:
    """The first of ``filenames`` of ``repo_id`` (``"org/name"`` or ``"org/name@rev"``) in the
    local Hub cache, without any network access; ``None`` when none is cached."""
    repo_id, _, revision = repo_id.partition("@")
    for filename in filenames:
        path = try_to_load_from_cache(repo_id, filename, revision=revision or None)
        if isinstance(path, str):
            return Path(path)
    return None


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file (the LFS object id the Hub reports as its ETag)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_pushed(api: HfApi, repo_id: str, model_dir: Path) -> bool:
    """Whether ``repo_id`` already holds exactly the decoder weights of ``model_dir``."""
    try:
        url = f"{api.endpoint}/{repo_id}/resolve/main/{WEIGHTS_FILE}"
        remote = get_hf_file_metadata(url, token=api.token)
    except (RepositoryNotFoundError, EntryNotFoundError):
        return False
    return remote.etag == sha256_of(model_dir / WEIGHTS_FILE)


def push_folder(
    api: HfApi, model_dir: Path, repo_id: str, *, private: bool = False, message: str | None = None
) -> str:
    """Create ``repo_id`` if needed, upload the files of ``model_dir``; return the commit URL."""
    _require_repo_files(model_dir)
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id,
        folder_path=model_dir,
        allow_patterns=list(REPO_FILES),
        commit_message=message or f"Upload {repo_id.split('/')[-1]}",
    )
    return str(info)


def archive_model(model_dir: Path, destination: Path) -> Path:
    """The repo files of ``model_dir`` as a zip at ``destination``, inside a folder named after
    it, so that unzipping gives a folder :meth:`HFR.from_pretrained` loads."""
    _require_repo_files(model_dir)
    with zipfile.ZipFile(destination, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in REPO_FILES:
            archive.write(model_dir / name, f"{model_dir.name}/{name}")
    return destination


def _require_repo_files(model_dir: Path) -> None:
    missing = [name for name in REPO_FILES if not (model_dir / name).is_file()]
    if missing:
        raise ModelFormatError(f"{model_dir} lacks {missing}; save the model with save_pretrained")
