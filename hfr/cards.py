"""Model cards: ``hfr/templates/model_card.md`` (package data) rendered from a model's config."""

from __future__ import annotations

from importlib.resources import files

from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard_data import EvalResult

from hfr.config import AUTO, PAPER_LEVEL_WEIGHTS, RANDOM_WEIGHTS, TERMS, HFRConfig, Scoring
from hfr.hub import repo_name
from hfr.scoring.terms import term_type

_DATASET_LABELS = {"mvtec_ad": "MVTec AD", "mvtec_3d": "MVTec 3D-AD (RGB)", "visa": "VisA"}
_NON_COMMERCIAL = ("mvtec_ad", "mvtec_3d")
_METRIC_NAMES = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "aupro": "AUPRO@0.3"}


def template_text(name: str = "model_card.md") -> str:
    """A card template shipped inside the package."""
    return files("hfr").joinpath("templates", name).read_text(encoding="utf-8")


def card_license(dataset: str | None) -> str:
    """MVTec-derived models inherit CC BY-NC-SA 4.0; others are marked ``other``."""
    return "cc-by-nc-sa-4.0" if dataset in _NON_COMMERCIAL else "other"


def model_card(
    config: HFRConfig, *, decoder_parameters: int, repo_id: str | None = None
) -> ModelCard:
    """Render the model card of a trained (and ideally evaluated) model."""
    dataset, category = config.dataset or "custom", config.category or "custom"
    repo_id = repo_id or f"<org>/{repo_name(dataset, category)}"
    evaluation = config.evaluation or {}
    card_data = ModelCardData(
        library_name="hfr",
        license=card_license(config.dataset),
        tags=["anomaly-detection", "hfr", "image-segmentation", dataset, category],
        pipeline_tag="image-segmentation",
        base_model=_base_model(config.encoder, config.encoder_weights),
        model_name=repo_id.split("/")[-1],
        eval_results=_eval_results(evaluation, dataset, category) or None,
    )
    weights_note = None
    if config.encoder_weights not in (None, RANDOM_WEIGHTS):
        weights_note = (
            f"The encoder weights file `{config.encoder_weights}` is found automatically when "
            "known (installed package, torch hub cache, public URL); otherwise pass "
            "`encoder_weights=PATH` or set `HFR_ENCODER_WEIGHTS` to the file or its folder."
        )
    return ModelCard.from_template(
        card_data,
        template_str=template_text(),
        title=f"HFR {_DATASET_LABELS.get(dataset, dataset)} {category}",
        dataset_label=_DATASET_LABELS.get(dataset, dataset),
        decoder_parameters=f"{decoder_parameters:,}",
        repo_id=repo_id,
        weights_note=weights_note,
        scoring_text=scoring_text(config.scoring),
        guarantee=config.calibration and config.calibration.guarantee(),
        tail_warning=config.calibration and config.calibration.tail_warning(),
        **config.to_dict(),
    )


def scoring_text(scoring: Scoring) -> str:
    """One sentence on how the map and the image score are computed.

    Example:
        >>> print(scoring_text(Scoring.preset("hfr")))  # doctest: +NORMALIZE_WHITESPACE
        Each level is first divided by its mean on held-out normal images, weighted 0.5, 0.5, 1
        (strides 4, 8, 16), and the image score is the mean of the highest 1 % of the map's
        pixels.
    """
    if scoring.level_scaling == "normal_mean":
        levels = "Each level is first divided by its mean on held-out normal images"
        if scoring.level_scales is not None:
            levels += " (" + ", ".join(f"{v:.4f}" for v in scoring.level_scales) + ")"
    elif scoring.level_weights == PAPER_LEVEL_WEIGHTS:
        levels = "Each level enters the sum as it is (the paper)"
    else:
        levels = "Each level enters the sum unscaled"
    if scoring.level_weights != PAPER_LEVEL_WEIGHTS:
        weights = ", ".join(f"{w:g}" for w in scoring.level_weights)
        levels += f", weighted {weights} (strides 4, 8, 16)"
    for name in TERMS:
        weight = getattr(scoring, f"{name}_weight")
        if weight in (0, AUTO):
            continue
        scale = getattr(scoring, f"{name}_scale")
        scale = "" if scale is None else f" ({scale:.4f})"
        described = term_type(name).describe(scoring)
        levels += f", plus {weight:g} x {described}, divided by its normal mean{scale}"
    undecided = [n.removesuffix("_weight") for n in scoring.unresolved if n.endswith("_weight")]
    if undecided:
        levels += f", plus the {' and '.join(undecided)} term where training turns it on"
    if scoring.combination == "product":
        levels += (
            "; the stride-4 and stride-8 evidence and the rest are then multiplied, "
            "(fine + 1) x (coarse + 1) - 1"
        )
    if scoring.image_score == "top_k_mean":
        score = f"the mean of the highest {100 * scoring.top_k_fraction:g} % of the map's pixels"
    else:
        score = "the maximum of the map (the paper)"
    return f"{levels}, and the image score is {score}."


def _base_model(encoder: str, weights: str | None) -> str | None:
    """The encoder's Hub id when its weights come from the Hub through timm."""
    if weights is not None:
        return None
    import timm

    cfg = timm.models.get_pretrained_cfg(encoder)
    return getattr(cfg, "hf_hub_id", None) if cfg is not None else None


def _eval_results(evaluation: dict, dataset: str, category: str) -> list[EvalResult]:
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
        for key, label in _METRIC_NAMES.items()
        if key in evaluation
    ]
