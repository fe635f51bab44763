"""The installed package: wheel contents, the `hfr` command, fast help, no path tricks."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

import hfr

ROOT = Path(__file__).resolve().parents[1]


def _editable() -> bool:
    from importlib.metadata import distribution

    direct_url = distribution("hfr").read_text("direct_url.json") or "{}"
    return json.loads(direct_url).get("dir_info", {}).get("editable", False)


def test_tests_run_against_the_installed_package() -> None:
    if _editable():
        pytest.skip("an editable install serves the checkout by design")
    assert ROOT not in Path(hfr.__file__).resolve().parents, hfr.__file__


@pytest.mark.slow
def test_wheel_holds_the_code_and_everything_the_library_reads(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("hfr-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "hfr = hfr.cli:main" in archive.read(entry_points).decode()
    bundled = [f"hfr/bundled/hfr-mvtec-{c}-mobilenetv2/{f}" for c in ("bottle", "screw")
               for f in ("config.json", "model.safetensors", "README.md")]  # fmt: skip
    for name in (
        "hfr/templates/model_card.md",
        *bundled,
        "hfr/cli.py",
        "hfr/commands/train.py",
        "hfr/__main__.py",
    ):
        assert name in names, name
    assert not any(n.startswith(("tests/", "scripts/", "app.py")) for n in names)


def test_help_answers_without_loading_torch() -> None:
    code = (
        "import sys, time; began = time.perf_counter();"
        "from hfr.cli import build_parser; parser = build_parser();"
        "parser.format_help(); [parser.parse_args([c, '--help']) for c in ['train']]"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "--epochs" in run.stdout and "(default: 50, more for small sets" in run.stdout
    probe = "import sys; import hfr.cli; print(sorted({'torch', 'timm'} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert loaded.stdout.strip() == "[]"
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "hfr", "train", "--help"], check=True, capture_output=True
    )
    assert time.perf_counter() - began < 5  # about 0.15 s here; generous for a loaded CI machine


def test_version_info_and_clear_errors(tmp_path: Path) -> None:
    version = subprocess.run(
        [sys.executable, "-m", "hfr", "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.strip() == f"hfr {hfr.__version__}"
    from hfr.serving.catalog import bundled_dir

    info = subprocess.run(
        [sys.executable, "-m", "hfr", "info", str(bundled_dir() / "hfr-mvtec-bottle-mobilenetv2")],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    )  # fmt: skip
    assert json.loads(info.stdout)["category"] == "bottle"
    missing = subprocess.run(
        [sys.executable, "-m", "hfr", "info", str(tmp_path / "nothing")],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert missing.returncode == 2
    assert "hfr info: error:" in missing.stderr and "Traceback" not in missing.stderr


def test_no_path_tricks_and_no_script_imports() -> None:
    sources = [*ROOT.joinpath("hfr").rglob("*.py"), *ROOT.joinpath("scripts").glob("*.py")]
    for path in [*sources, ROOT / "app.py"]:
        text = path.read_text()
        assert "sys.path" not in text, path
        assert "from scripts" not in text and "import _common" not in text, path
