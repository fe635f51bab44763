"""Helpers shared by the command-line scripts: the recorded command and model loading."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hfr import HFR
from hfr.device import auto_device


def command_line() -> str:
    """The command that is running, for results files."""
    return shlex.join(["python", *sys.argv])


def load_model(name_or_path: str, device: str | None) -> HFR:
    """A model from a local folder or a Hub repo id, on the chosen device."""
    return HFR.from_pretrained(name_or_path).to(auto_device(device))
