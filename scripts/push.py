"""Publish HFR categories to the Hub as ``<org>/hfr-<dataset>-<category>``.

Push a trained folder:
    python scripts/push.py --model models/hfr-mvtec-bottle --org ORG
Train, evaluate, write the card and push one category, or every category under a root:
    python scripts/push.py --data DIR --org ORG --category bottle --encoder NAME --epochs 50
    python scripts/push.py --data DIR --org ORG --all --encoder ... --dry-run

The token comes from `hf auth login` or HF_TOKEN. A failing category does not stop the others;
categories whose weights are already on the Hub are skipped unless --force.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

from huggingface_hub import HfApi
from train import add_training_arguments, train_from_args

from hfr import HFR
from hfr.data import categories, load_mvtec
from hfr.hub import is_pushed, push_folder, repo_name


def publish(
    api: HfApi, folder: Path, repo_id: str, *, dry_run: bool, force: bool, private: bool
) -> str:
    """Push one saved model folder unless it is already there; returns what happened."""
    if dry_run:
        return f"dry run: {folder} ready for {repo_id}"
    if not force and is_pushed(api, repo_id, folder):
        return f"skipped: {repo_id} already holds these weights"
    HFR.from_pretrained(folder)  # never publish a folder that does not load
    return f"pushed: {push_folder(api, folder, repo_id, private=private)}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a saved model folder to push as it is")
    source.add_argument("--data", help="dataset root in MVTec AD layout")
    parser.add_argument("--org", required=True, help="Hub user or organisation")
    parser.add_argument(
        "--category", action="append", help="category to train and push (repeatable)"
    )
    parser.add_argument("--all", action="store_true", help="every category found under --data")
    parser.add_argument("--dataset-name", default="mvtec_ad")
    parser.add_argument("--work-dir", default="models", help="where trained folders are kept")
    parser.add_argument("--dry-run", action="store_true", help="write the folders, push nothing")
    parser.add_argument(
        "--force", action="store_true", help="push even if the Hub has these weights"
    )
    parser.add_argument("--private", action="store_true")
    add_training_arguments(parser)
    args = parser.parse_args()
    api = HfApi()

    if args.model:
        model = HFR.from_pretrained(args.model)
        repo_id = f"{args.org}/{repo_name(model.dataset or 'custom', model.category or 'custom')}"
        model.generate_model_card(repo_id=repo_id).save(Path(args.model) / "README.md")
        print(
            publish(
                api,
                Path(args.model),
                repo_id,
                dry_run=args.dry_run,
                force=args.force,
                private=args.private,
            )
        )
        return

    names = categories(args.data) if args.all else (args.category or [])
    if not names:
        parser.error("name --category or --all")
    outcomes: dict[str, str] = {}
    for category in names:
        repo_id = f"{args.org}/{repo_name(args.dataset_name, category)}"
        folder = Path(args.work_dir) / repo_id.split("/")[1]
        try:
            if not (folder / "model.safetensors").is_file() or args.force:
                dataset = load_mvtec(args.data, category, name=args.dataset_name)
                train_from_args(dataset, folder, args, repo_id=repo_id)
            outcomes[category] = publish(
                api, folder, repo_id, dry_run=args.dry_run, force=args.force, private=args.private
            )
        except Exception as error:  # one category's failure must not lose the others
            traceback.print_exc()
            outcomes[category] = f"failed: {type(error).__name__}: {error}"
        print(f"{category}: {outcomes[category]}", flush=True)
    print(json.dumps(outcomes, indent=2))
    sys.exit(1 if any(o.startswith("failed") for o in outcomes.values()) else 0)


if __name__ == "__main__":
    main()
