"""``hfr info``: what a model is (encoder, preprocessing, calibration, metrics), as JSON."""

from __future__ import annotations

import argparse
import json

from hfr.config import CONFIG_FILE, read_config
from hfr.hub import download


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    config = read_config(download(args.model, CONFIG_FILE))
    print(json.dumps(config.to_dict(), indent=2))
    return 0
