"""``hfr push``: publish a saved model folder, or train and publish categories of a dataset.

A saved folder is staged in a temporary folder with a freshly rendered card, so the user's
folder is never changed.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import HfApi

from hfr.commands.common import model_settings, run_options
from hfr.config import CONFIG_FILE, WEIGHTS_FILE
from hfr.data import categories, load_mvtec
from hfr.hub import CARD_FILE, is_pushed, push_folder, repo_name
from hfr.model import HFR
from hfr.pipeline import train_category

logger = logging.getLogger(__name__)


def publish(
    api: HfApi, folder: Path, repo_id: str, *, dry_run: bool, force: bool, private: bool
) -> str:
    """Push one saved model folder unless it is already there; returns what happened."""
    HFR.from_pretrained(folder)  # never publish a folder that does not load
    if dry_run:
        return f"dry run: {folder} ready for {repo_id}"
    if not force and is_pushed(api, repo_id, folder):
        return f"skipped: {repo_id} already holds these weights"
    return f"pushed: {push_folder(api, folder, repo_id, private=private)}"


def _push_saved_folder(args: argparse.Namespace, api: HfApi) -> int:
    source = Path(args.model)
    model = HFR.from_pretrained(source)
    config = model.config
    repo_id = f"{args.org}/{repo_name(config.dataset or 'custom', config.category or 'custom')}"
    with tempfile.TemporaryDirectory(prefix="hfr-push-") as staging:
        stage = Path(staging)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            shutil.copy2(source / name, stage / name)
        model.generate_model_card(repo_id=repo_id).save(stage / CARD_FILE)
        opts = {"dry_run": args.dry_run, "force": args.force, "private": args.private}
        print(publish(api, stage, repo_id, **opts))
    return 0


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    api = HfApi()
    if args.model:
        return _push_saved_folder(args, api)
    names = categories(args.data) if args.all else (args.category or [])
    if not names:
        parser.error("name --category or --all")
    outcomes: dict[str, str] = {}
    for category in names:
        repo_id = f"{args.org}/{repo_name(args.dataset_name, category)}"
        folder = Path(args.work_dir) / repo_id.split("/")[1]
        try:
            if not (folder / WEIGHTS_FILE).is_file() or args.force:
                dataset = load_mvtec(args.data, category, name=args.dataset_name)
                train_category(
                    dataset,
                    folder,
                    settings=model_settings(args),
                    options=run_options(args),
                    repo_id=repo_id,
                )
            outcomes[category] = publish(
                api, folder, repo_id, dry_run=args.dry_run, force=args.force, private=args.private
            )
        except Exception as error:  # one category's failure must not lose the others
            logger.exception("category %s failed", category)
            outcomes[category] = f"failed: {type(error).__name__}: {error}"
        print(f"{category}: {outcomes[category]}", flush=True)
    print(json.dumps(outcomes, indent=2))
    return 1 if any(o.startswith("failed") for o in outcomes.values()) else 0
