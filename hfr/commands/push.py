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
from hfr.data import categories
from hfr.hub import CARD_FILE, is_pushed, push_folder, repo_name
from hfr.model import HFR
from hfr.scale.fleet import FAILED, CategoryJob, train_all

logger = logging.getLogger(__name__)


def publish(
    api: HfApi,
    source: Path,
    repo_id: str,
    *,
    dry_run: bool = False,
    force: bool = False,
    private: bool = False,
) -> str:
    """Push one saved model folder, staged with a card naming ``repo_id`` (the folder itself is
    never changed), unless the Hub already holds its weights; returns what happened."""
    model = HFR.from_pretrained(source)  # never publish a folder that does not load
    with tempfile.TemporaryDirectory(prefix="hfr-push-") as staging:
        stage = Path(staging)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            shutil.copy2(source / name, stage / name)
        model.generate_model_card(repo_id=repo_id).save(stage / CARD_FILE)
        if dry_run:
            return f"dry run: {source} ready for {repo_id}"
        if not force and is_pushed(api, repo_id, stage):
            return f"skipped: {repo_id} already holds these weights"
        return f"pushed: {push_folder(api, stage, repo_id, private=private)}"


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    api = HfApi()
    opts = {"dry_run": args.dry_run, "force": args.force, "private": args.private}
    if args.model:
        config = HFR.from_pretrained(args.model).config
        name = repo_name(config.dataset or "custom", config.category or "custom")
        print(publish(api, Path(args.model), f"{args.org}/{name}", **opts))
        return 0
    names = categories(args.data) if args.all else (args.category or [])
    if not names:
        parser.error("name --category or --all")
    jobs = [CategoryJob.of(args.data, args.dataset_name, c, args.work_dir) for c in names]
    trained = train_all(
        jobs,
        model_settings(args),
        run_options(args),
        evaluate=True,
        ray_address=args.ray,
        gpus_per_task=args.gpus_per_task,
        cpus_per_task=args.cpus_per_task,
    )
    outcomes: dict[str, str] = {}
    for job, outcome in zip(jobs, trained, strict=True):
        if outcome.status == FAILED:
            outcomes[job.category] = f"failed: {outcome.detail}"
        else:
            repo_id = f"{args.org}/{Path(job.output).name}"
            try:
                outcomes[job.category] = publish(api, Path(job.output), repo_id, **opts)
            except Exception as error:  # one category's failure must not lose the others
                logger.exception("category %s failed", job.category)
                outcomes[job.category] = f"failed: {type(error).__name__}: {error}"
        print(f"{job.category}: {outcomes[job.category]}", flush=True)
    print(json.dumps(outcomes, indent=2))
    return 1 if any(o.startswith("failed") for o in outcomes.values()) else 0
