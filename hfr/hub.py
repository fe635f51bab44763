"""Hub helpers: repo names, model cards from ``hub_cards/``, and idempotent pushes."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import timm
from huggingface_hub import HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError
from huggingface_hub.repocard_data import EvalResult

if TYPE_CHECKING:
    from hfr.model import HFR

CARDS_DIR = Path(__file__).resolve().parent.parent / "hub_cards"
MODEL_CARD_TEMPLATE = CARDS_DIR / "model_card.md"
REPO_FILES = ("config.json", "model.safetensors", "README.md")
_DATASET_LABELS = {"mvtec_ad": "MVTec AD", "mvtec_3d": "MVTec 3D-AD (RGB)", "visa": "VisA"}
_DATASET_SLUGS = {"mvtec_ad": "mvtec", "mvtec_3d": "mvtec3d"}
_NON_COMMERCIAL = ("mvtec_ad", "mvtec_3d")


def repo_name(dataset: str, category: str) -> str:
    """Hub repo name of a category, e.g. ``hfr-mvtec-bottle``."""
    slug = _DATASET_SLUGS.get(dataset, dataset.replace("_", "-"))
    return f"hfr-{slug}-{category.replace('_', '-')}"


def card_license(dataset: str | None) -> str:
    """MVTec-derived models inherit CC BY-NC-SA 4.0; others are marked ``other``."""
    return "cc-by-nc-sa-4.0" if dataset in _NON_COMMERCIAL else "other"


def model_card(model: HFR, *, repo_id: str | None = None) -> ModelCard:
    """Render ``hub_cards/model_card.md`` for a trained (and ideally evaluated) model."""
    config = model.config()
    dataset, category = config["dataset"] or "custom", config["category"] or "custom"
    repo_id = repo_id or f"<org>/{repo_name(dataset, category)}"
    evaluation = config["evaluation"] or {}
    license_ = card_license(config["dataset"])
    card_data = ModelCardData(
        library_name="hfr",
        license=license_,
        tags=["anomaly-detection", "hfr", "image-segmentation", dataset, category],
        pipeline_tag="image-segmentation",
        base_model=_base_model(config["encoder"], config["encoder_weights"]),
        model_name=repo_id.split("/")[-1],
        eval_results=_eval_results(evaluation, dataset, category) or None,
    )
    weights_note = None
    if config["encoder_weights"] not in (None, "random"):
        weights_note = (
            f"The encoder weights file `{config['encoder_weights']}` is found automatically when "
            "known (installed package, torch hub cache, public URL); otherwise pass "
            "`encoder_weights=PATH` or set `HFR_ENCODER_WEIGHTS` to the file or its folder."
        )
    return ModelCard.from_template(
        card_data,
        template_str=MODEL_CARD_TEMPLATE.read_text(),
        title=f"HFR {_DATASET_LABELS.get(dataset, dataset)} {category}",
        dataset_label=_DATASET_LABELS.get(dataset, dataset),
        decoder_parameters=f"{sum(p.numel() for p in model.decoder.parameters()):,}",
        repo_id=repo_id,
        weights_note=weights_note,
        **config,
    )


def _base_model(encoder: str, weights: str | None) -> str | None:
    """The encoder's Hub id when its weights come from the Hub through timm."""
    if weights is not None:
        return None
    cfg = timm.models.get_pretrained_cfg(encoder)
    return getattr(cfg, "hf_hub_id", None) if cfg is not None else None


def _eval_results(evaluation: dict, dataset: str, category: str) -> list[EvalResult]:
    names = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "aupro": "AUPRO@0.3"}
    return [
        EvalResult(
            task_type="image-segmentation",
            task_name="anomaly detection",
            dataset_type=dataset,
            dataset_name=f"{_DATASET_LABELS.get(dataset, dataset)} {category}",
            dataset_config=category,
            metric_type=key,
            metric_name=label,
            metric_value=round(float(evaluation[key]), 4),
        )
        for key, label in names.items()
        if key in evaluation
    ]


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
        url = f"{api.endpoint}/{repo_id}/resolve/main/model.safetensors"
        from huggingface_hub import get_hf_file_metadata

        remote = get_hf_file_metadata(url, token=api.token)
    except (RepositoryNotFoundError, EntryNotFoundError):
        return False
    return remote.etag == sha256_of(model_dir / "model.safetensors")


def push_folder(
    api: HfApi, model_dir: Path, repo_id: str, *, private: bool = False, message: str | None = None
) -> str:
    """Create ``repo_id`` if needed, upload the files of ``model_dir``; return the commit URL."""
    missing = [name for name in REPO_FILES if not (model_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{model_dir} lacks {missing}; save the model with save_pretrained")
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id,
        folder_path=model_dir,
        allow_patterns=list(REPO_FILES),
        commit_message=message or f"Upload {repo_id.split('/')[-1]}",
    )
    return str(info)
