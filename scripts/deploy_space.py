"""Deploy the Gradio demo as a Hugging Face Space (ZeroGPU-ready through ``spaces.GPU``).

python scripts/deploy_space.py --space-id ORG/hfr-demo --org ORG
python scripts/deploy_space.py --space-id ORG/hfr-demo --org ORG --dry-run --output space/
python scripts/deploy_space.py --space-id ORG/hfr-cpu --org ORG --backend onnxruntime

The Space gets app.py, the hfr package (with its bundled models), pyproject.toml and
requirements.txt (which installs the package with its app extra), the Space card rendered from
hub_cards/space_card.md, and space_settings.json, the app's settings as data: it lists the
hfr-* models of --org. ``--backend onnxruntime`` makes a Space for CPU hardware: the models are
scored by ONNX Runtime (the export extra is installed, the backend set in its settings).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

import jinja2
from huggingface_hub import HfApi

from hfr.config.settings import BACKENDS
from hfr.hub import bundled_dir, repo_name

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ("app.py", "examples", "hfr", "pyproject.toml", "requirements.txt")
SETTINGS_FILE = "space_settings.json"


def build_space(target: Path, *, org: str, backend: str = "torch") -> Path:
    """Write the Space's files into ``target``: a ZeroGPU Space, or with ``backend``
    ``"onnxruntime"`` a CPU one."""
    target.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED:
        source = ROOT / name
        if source.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(source, target / name, dirs_exist_ok=True, ignore=ignore)
        else:
            shutil.copy2(source, target / name)
    configs = [json.loads(p.read_text()) for p in bundled_dir().glob("*/config.json")]
    models = sorted(f"{org}/{repo_name(c['dataset'], c['category'])}" for c in configs)
    template = jinja2.Template((ROOT / "hub_cards" / "space_card.md").read_text())
    hardware = "cpu-basic" if backend == "onnxruntime" else "zero-a10g"
    card = template.render(
        gradio_version=version("gradio"), models=models, org=org, hardware=hardware
    )
    (target / "README.md").write_text(card)
    settings = {"hub_org": org}
    if backend == "onnxruntime":
        settings["backend"] = backend
        requirements = (target / "requirements.txt").read_text()
        (target / "requirements.txt").write_text(requirements.replace(".[app]", ".[app,export]"))
    (target / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--space-id", required=True, help="ORG/NAME of the Space")
    parser.add_argument("--org", required=True, help="Hub organisation whose hfr-* models it lists")
    parser.add_argument("--dry-run", action="store_true", help="write the folder, upload nothing")
    parser.add_argument("--output", help="folder to write (default: a temporary one)")
    parser.add_argument("--private", action="store_true")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="torch",
        help="torch: a ZeroGPU Space; onnxruntime: a CPU Space scoring with ONNX Runtime",
    )
    args = parser.parse_args()
    target = Path(args.output or tempfile.mkdtemp(prefix="hfr-space-"))
    build_space(target, org=args.org, backend=args.backend)
    if args.dry_run:
        print(f"Space files written to {target} (dry run: {shlex.join(['python', *sys.argv])})")
        return
    api = HfApi()
    api.create_repo(
        args.space_id, repo_type="space", space_sdk="gradio", private=args.private, exist_ok=True
    )
    info = api.upload_folder(repo_id=args.space_id, repo_type="space", folder_path=target)
    print(f"deployed: {info}")


if __name__ == "__main__":
    main()
