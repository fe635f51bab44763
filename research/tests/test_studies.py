"""The studies of research/: each runs on a tiny trained model and a tiny MVTec-layout set, and
its row for the model's own setting reproduces what `hfr evaluate` and training give."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_png, run_repo_script
from PIL import Image

from hfr import HFR

ROOT = Path(__file__).resolve().parents[2]


def run_script(name: str, *args: object, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``research/<name>.py`` with ``args``; raise if it fails."""
    return run_repo_script(f"research/{name}.py", *args, timeout=timeout)


def _load_script(name: str):
    """A study of research/ as a module, by its path (research/ is not a package)."""
    sys.path.insert(0, str(ROOT / "research"))  # the studies import each other by name
    spec = importlib.util.spec_from_file_location(f"hfr_study_{name}", ROOT / f"research/{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_synthetic_defects_are_seeded_large_and_smooth() -> None:
    module = _load_script("synthetic_defects")
    image = np.full((120, 160, 3), 100, np.uint8)
    first, mask, change = module.with_defect(image, seed=3)
    again, mask_again, _ = module.with_defect(image, seed=3)
    assert np.array_equal(first, again) and np.array_equal(mask, mask_again)
    for seed in range(30):
        _, mask, _ = module.with_defect(image, seed=seed)
        assert 0.09 <= mask.mean() <= 0.31  # 10-30 % of the image (pixelated ellipse)
    changed, mask, change = module.with_defect(image, seed=1)  # seed 1: "darker"
    assert change == "darker" and changed[mask].mean() < 80 and changed[~mask].mean() > 95


@pytest.fixture(scope="module")
def widget(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny MVTec-layout data set ("widget": 12 normal training images, 3 good and 3 dented
    test images with masks) and a tiny model trained on its training images, with the position,
    memory and colour terms so that every study can rescore them: (data root, model folder)."""
    from conftest import synthetic_images, tiny_model

    from hfr.train import TrainConfig, fit

    tmp_path = tmp_path_factory.mktemp("widget")
    root = tmp_path / "data"
    for folder, images in (
        ("widget/train/good", synthetic_images(12)),
        ("widget/test/good", synthetic_images(3, seed=4)),
        ("widget/test/dent", synthetic_images(3, seed=5)),
    ):
        (root / folder).mkdir(parents=True)
        for index, image in enumerate(images):
            Image.fromarray(image).save(root / folder / f"{index:03d}.png")
    (root / "widget/ground_truth/dent").mkdir(parents=True)
    for index in range(3):
        mask = np.zeros((48, 48), np.uint8)
        mask[10:20, 10:20] = 255
        Image.fromarray(mask).save(root / f"widget/ground_truth/dent/{index:03d}_mask.png")
    model = tiny_model(position_weight=1.0, memory_weight=1.0, colour_weight=1.0)
    fit(model, synthetic_images(12), TrainConfig(epochs=1, batch_size=4), progress=False)
    model.save_pretrained(tmp_path / "model")
    return root, tmp_path / "model"


@pytest.fixture(scope="module")
def evaluation(widget: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``hfr evaluate`` of the widget model: what a study's row for the model's own setting
    must reproduce."""
    root, model = widget
    output = tmp_path_factory.mktemp("evaluation") / "evaluation.json"
    command = [sys.executable, "-m", "hfr", "evaluate", "--model", str(model), "--data",
               str(root), "--category", "widget", "--output", str(output)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    return json.loads(output.read_text())


def assert_reproduces(row: dict, evaluation: dict, keys: tuple[str, ...]) -> None:
    """``row`` holds ``hfr evaluate``'s figures for ``keys`` (a rescoring of the model's own
    setting)."""
    assert {key: row[key] for key in keys} == pytest.approx(
        {key: evaluation[key] for key in keys}, abs=1e-6
    )


def assert_shares_of(count: int, *shares: float) -> None:
    """Each of ``shares`` is a share of ``count`` images: k / count for a whole k."""
    for share in shares:
        assert share * count == pytest.approx(round(share * count), abs=1e-9), (share, count)


AUCS = ("image_auroc", "pixel_auroc", "aupro")
RATES = ("threshold_tpr", "threshold_fpr")


def test_scoring_study_and_synthetic_check_run_on_a_tiny_model(
    widget: tuple[Path, Path], evaluation: dict, tmp_path: Path
) -> None:
    root, model = widget
    own = json.loads((model / "config.json").read_text())
    study, synthetic = tmp_path / "study.json", tmp_path / "synthetic.json"
    run_script(
        "score_study", "--model", model, "--data", root, "--category", "widget", "--output", study
    )
    run_script(
        "synthetic_defects", "--model", model, "--images", root / "widget/test/good", "--output",
        synthetic
    )  # fmt: skip
    sigmas = tmp_path / "sigmas.json"
    own_weights = ",".join(map(str, own["scoring"]["level_weights"]))
    run_script(
        "sigma_study", "--model", model, "--data", root, "--category", "widget", "--sigmas",
        f"0,{own['sigma']}", "--level-weights", f"{own_weights};0,0,1", "--position-weights",
        "0,1", "--memory-weights", "0,1", "--output", sigmas
    )  # fmt: skip
    rows = json.loads(sigmas.read_text())["results"]
    keys = ("sigma", "level_weights", "position_weight", "memory_weight")
    settings = [tuple(row[key] for key in keys) for row in rows]
    assert settings == [
        (s, w, p, m)
        for s in (0.0, own["sigma"])
        for w in (own["scoring"]["level_weights"], [0.0, 0.0, 1.0])
        for p in (0, 1)
        for m in (0, 1)
    ]
    assert (own["scoring"]["position_weight"], own["scoring"]["memory_weight"]) == (1.0, 1.0)
    assert_reproduces(rows[8 + 3], evaluation, ("pixel_auroc", "aupro"))  # the model's own
    assert rows[0]["pixel_auroc"] != rows[8]["pixel_auroc"]  # rescored at another sigma
    assert rows[0]["pixel_auroc"] != rows[4]["pixel_auroc"]  # ... with other level weights
    assert rows[0]["pixel_auroc"] != rows[2]["pixel_auroc"]  # ... with the position term
    assert rows[0]["pixel_auroc"] != rows[1]["pixel_auroc"]  # ... and with the patch memory
    variants = json.loads(study.read_text())["variants"]
    assert {(v["map"], v["score"]) for v in variants} >= {
        ("sum", "max"),
        ("mean_scaled_sum", "top1"),
    }
    for variant in variants:
        assert_shares_of(3, variant["tpr_at_calibrated"], variant["fpr_at_calibrated"])
    sum_map = {v["pixel_auroc"] for v in variants if v["map"] == "sum"}
    scaled = {v["pixel_auroc"] for v in variants if v["map"] == "mean_scaled_sum"}
    assert len(sum_map) == len(scaled) == 1  # a map's pixel figures do not depend on the score
    assert sum_map != scaled
    record = json.loads(synthetic.read_text())
    assert record["num_images"] == 3 and record["pixel_auroc"] > 0.5
    assert 0.09 <= record["mean_mask_fraction"] <= 0.31


def test_sigma_study_with_verdicts_recalibrates_each_setting(
    widget: tuple[Path, Path], evaluation: dict, tmp_path: Path
) -> None:
    trained = json.loads((widget[1] / "config.json").read_text())
    own_weights = ",".join(map(str, trained["scoring"]["level_weights"]))
    record, config = widget_study(
        "sigma_study", widget, tmp_path / "verdicts.json", "--sigmas", trained["sigma"],
        "--level-weights", f"{own_weights};0,0,1", "--verdict",
    )  # fmt: skip
    own, other = record["results"]
    # the model's own setting, recalibrated on the same held-out images: its own threshold
    assert own["threshold"] == pytest.approx(config["calibration"]["threshold"], rel=1e-5)
    assert own["held_out_above_threshold"] == config["calibration"]["num_above"]
    assert other["threshold"] != pytest.approx(own["threshold"], rel=1e-3)
    assert_reproduces(own, evaluation, ("pixel_auroc", "aupro", *RATES))
    assert_shares_of(3, other["threshold_tpr"], other["threshold_fpr"])
    for row in (own, other):
        assert set(row["synthetic_pixel_auroc_per_change"]) == {"brighter", "darker", "blurred"}
    assert own["synthetic_pixel_auroc"] != other["synthetic_pixel_auroc"]


def widget_study(
    name: str, widget: tuple[Path, Path], output: Path, *options: str
) -> tuple[dict, dict]:
    """Run the study ``research/<name>.py`` on the widget set and model: (its record, the
    model's config)."""
    root, model = widget
    run_script(name, "--model", model, "--data", root, "--category", "widget", *options,
               "--output", output)  # fmt: skip
    return json.loads(output.read_text()), json.loads((model / "config.json").read_text())


def test_verdict_study_reproduces_the_models_threshold(
    widget: tuple[Path, Path], evaluation: dict, tmp_path: Path
) -> None:
    record, config = widget_study("verdict_study", widget, tmp_path / "verdict.json")
    assert record["parts"] == ["stride4", "stride8", "stride16", "position", "memory", "colour"]
    rules = record["rules"]
    assert set(rules) == {"model", "standardised_terms", "standardised_max", "features_plus_colour"}
    # the same held-out split and scores as training: the model's own threshold, to float32
    own = rules["model"]["targets"]["0.01"]["threshold"]
    assert own == pytest.approx(config["calibration"]["threshold"], rel=1e-5)
    above = rules["model"]["targets"]["0.01"]["held_out_above"]
    assert above == config["calibration"]["num_above"]
    window = record["bar_window"]
    assert window is None or (
        window["from_z"] < window["to_z"]
        and window["held_out_above_from"] >= window["held_out_above_to"]
    )
    assert len(record["robust_z_held_out"]) == record["num_held_out_normal"] == 2
    assert len(record["robust_z_good_test"]) == record["num_good_test"] == 3
    flagged = rules["model"]["targets"]["0.01"]
    assert (flagged["defective_flagged"], flagged["good_flagged"]) == pytest.approx(
        (evaluation["threshold_tpr"], evaluation["threshold_fpr"])
    )
    for rule in rules.values():
        for rates in rule["targets"].values():
            assert_shares_of(3, rates["defective_flagged"], rates["good_flagged"])


def test_colour_study_rescores_each_distance_and_reproduces_the_model(
    widget: tuple[Path, Path], evaluation: dict, tmp_path: Path
) -> None:
    record, config = widget_study(
        "colour_study", widget, tmp_path / "colour.json",
        "--distances", "squared,mahalanobis", "--weights", "0.5,1",
    )  # fmt: skip
    rows = record["results"]
    settings = [(row["colour_distance"], row["colour_weight"]) for row in rows]
    assert settings == [(d, w) for d in ("squared", "mahalanobis") for w in (0.5, 1.0)]
    # the model's own setting, rescaled and recalibrated on the same held-out images: its threshold
    own = rows[settings.index((config["scoring"]["colour_distance"], 1.0))]
    assert own["threshold"] == pytest.approx(config["calibration"]["threshold"], rel=1e-5)
    assert own["held_out_above_threshold"] == config["calibration"]["num_above"]
    assert rows[1]["threshold"] != pytest.approx(rows[3]["threshold"], rel=1e-3)
    assert_reproduces(own, evaluation, (*AUCS, *RATES))
    for row in rows:
        assert_shares_of(3, row["threshold_tpr"], row["threshold_fpr"])


def test_memory_study_reproduces_the_model_with_its_own_memory(
    widget: tuple[Path, Path], evaluation: dict, tmp_path: Path
) -> None:
    from hfr.config import DEFAULT_MEMORY_FRACTION

    record, config = widget_study(
        "memory_study", widget, tmp_path / "memory.json",
        "--fractions", f"{DEFAULT_MEMORY_FRACTION},0.5", "--shares", "0,0.5",
        "--threshold-fits", "conformal,lognormal", "--poolings", "1,3",
    )  # fmt: skip
    assert config["training"]["memory_fraction"] == DEFAULT_MEMORY_FRACTION
    assert config["scoring"]["memory_pooling"] == 1
    rows = record["results"]
    settings = [(row["pooling"], row["fraction"], row["share"]) for row in rows]
    fractions, shares = (DEFAULT_MEMORY_FRACTION, 0.5), (0.0, 0.5)
    assert settings == [(p, f, s) for p in (1, 3) for f in fractions for s in shares]
    own, coloured, larger, pooled = rows[0], rows[1], rows[2], rows[4]
    assert own["factor"] == 0.0 and coloured["factor"] > 0
    # the model's own fraction without colour: its own memory, rebuilt, and its own threshold
    assert own["threshold"] == pytest.approx(config["calibration"]["threshold"], rel=1e-5)
    assert own["held_out_above_threshold"] == config["calibration"]["num_above"]
    assert coloured["threshold"] != own["threshold"]
    assert pooled["threshold"] != pytest.approx(own["threshold"], rel=1e-3)  # other vectors
    assert pooled["memory_size"] == own["memory_size"]  # as many cells, the same share kept
    assert own["per_defect_aupro"].keys() == own["per_defect_pixel_auroc"].keys() != set()
    # the model's own fit gives its own threshold; the other fit sets another from the same scores
    assert config["calibration"]["fit"] == "conformal"
    by_fit = own["verdict_by_fit"]
    assert by_fit["conformal"]["threshold"] == pytest.approx(own["threshold"], rel=1e-9)
    assert by_fit["conformal"]["threshold_tpr"] == own["threshold_tpr"]
    assert by_fit["lognormal"]["threshold"] != pytest.approx(own["threshold"], rel=1e-3)
    cells = record["num_training_cells"]
    assert larger["memory_size"] == round(0.5 * cells) > own["memory_size"]
    assert record["num_training_images"] + record["num_held_out_normal"] == 12
    assert_reproduces(own, evaluation, (*AUCS, *RATES))
    for row in rows:
        assert_shares_of(3, row["threshold_tpr"], row["threshold_fpr"])
        assert row["coreset_seconds"] > 0
        assert set(row["synthetic_pixel_auroc_per_change"]) == {"brighter", "darker", "blurred"}


def test_the_bar_window_is_the_range_of_thresholds_that_meets_the_bar() -> None:
    bar_window = _load_script("verdict_study").bar_window
    good = np.arange(20.0)  # 10 % of 20: two may be flagged, so from the third highest, 17
    defective = np.array([1.0, 18, 30, 40, 50])  # 80 % of 5: four, so below the fourth, 18
    assert bar_window(good, defective) == (17.0, 18.0)
    assert bar_window(good, defective - 1) is None  # the fourth defect at 17: no room left
    scores = np.r_[good, defective]
    for threshold in (16.5, 17.0, 17.5, 18.0):
        flagged = scores > threshold
        met = flagged[:20].mean() <= 0.1 and flagged[20:].mean() >= 0.8
        assert met == (17.0 <= threshold < 18.0)


def test_aspect_crop_keeps_defects_and_drops_images_that_lose_them(tmp_path: Path) -> None:
    from hfr.data import load_mvtec

    root = tmp_path / "data"
    for folder, count in (
        ("widget/train/good", 4),
        ("widget/test/good", 2),
        ("widget/test/dent", 2),
    ):
        (root / folder).mkdir(parents=True)
        for index in range(count):
            random_png(root / folder / f"{index:03d}.png", (48, 48, 3), seed=index)
    (root / "widget/ground_truth/dent").mkdir(parents=True)
    for index, rows in enumerate((slice(20, 30), slice(0, 5))):  # centred; along the top edge
        mask = np.zeros((48, 48), np.uint8)
        mask[rows, 10:20] = 255
        Image.fromarray(mask).save(root / f"widget/ground_truth/dent/{index:03d}_mask.png")
    for aspect in ("0.75", "mixed"):
        out = tmp_path / aspect
        result = run_script(
            "aspect_crop", "--data", root, "--category", "widget", "--aspect", aspect, "--output",
            out, timeout=120
        )  # fmt: skip
        counts = json.loads(result.stdout)
        dataset = load_mvtec(out, "widget")
        sizes = {Image.open(path).size for path in dataset.train}
        if aspect == "0.75":
            assert counts["test_defective"] == 1 and counts["dropped_defective"] == 1
            assert sizes == {(48, 36)}
            assert dataset.test[0].mask((36, 48)).any()
        else:
            assert len(sizes) > 1  # each image its own aspect


def test_the_five_seed_summary_holds_each_mean_to_its_bar() -> None:
    """Five-seed means per category and backbone, and the bar of every default: a drop of more
    than 0.005 image AUROC or 0.002 pixel AUROC / AUPRO fails; the costs are averaged."""
    study = _load_script("five_seed_study")

    def row(seed: int, candidate_aupro: float) -> dict:
        reference = {"image_auroc": 0.99, "pixel_auroc": 0.99, "aupro": 0.95}
        reference |= {"ms_per_image": 30.0 + seed, "train_seconds": 60.0}
        candidate = {**reference, "aupro": candidate_aupro, "ms_per_image": 120.0}
        return {"category": "screw", "backbone": "b", "seed": seed} | {
            "reference": reference,
            "candidate": candidate,
        }

    within = study.summary_rows([row(0, 0.949), row(1, 0.950)])[0]  # mean drop 0.0005
    assert within["seeds"] == 2 and within["aupro"]["change"] == pytest.approx(-0.0005)
    assert within["aupro"]["within_bar"] and within["image_auroc"]["within_bar"]
    assert within["ms_per_image"] == [30.5, 120.0]
    beyond = study.summary_rows([row(0, 0.945), row(1, 0.946)])[0]  # mean drop 0.0045
    assert not beyond["aupro"]["within_bar"]
    table = study.table([beyond], "256", "512")
    assert "| screw | b | 2 | 0.9900 -> 0.9900 (+0.0000) |" in table
    assert "| 30 -> 120 | no |" in table


def test_the_five_seed_study_takes_recorded_references_and_names_a_missing_one(
    tmp_path: Path,
) -> None:
    study = _load_script("five_seed_study")
    candidate = tmp_path / "models" / "mobilenetv2" / "seed0" / "screw"
    candidate.mkdir(parents=True)
    (candidate / "config.json").write_text("{}")  # trained, as --trained-only sees it
    records = tmp_path / "records"
    common = ["--data", "d", "--models-dir", str(tmp_path / "models"), "--output", "o"]
    common += ["--candidate=--image-size auto", "--backbones", "mobilenetv2", "--seeds", "0"]
    common += ["--categories", "screw", "--trained-only"]
    with pytest.raises(SystemExit, match=r"no reference record .*mobilenetv2/seed0/screw\.json"):
        study.main([*common, "--reference-records", str(records)])
    with pytest.raises(SystemExit):  # one kind of reference, not both
        study.main([*common, "--reference-records", str(records), "--reference-dir", "r"])


def test_the_memory_search_study_gives_the_model_training_with_fewer_directions_gives() -> None:
    """A model rescored by ``searched_in`` (its memory's projection set, its memory scale and
    threshold measured afresh) scores as the model trained with ``--memory-search-dims``."""
    from conftest import synthetic_images, tiny_model

    from hfr.train import TrainConfig, fit, training_split

    study = _load_script("memory_search_study")
    images = synthetic_images(12)
    models = {}
    for dims in ("all", 16):
        models[dims] = tiny_model(memory_weight=1.0)
        training = TrainConfig(epochs=1, batch_size=4, memory_fraction=1.0, memory_search_dims=dims)
        fit(models[dims], images, training, progress=False)
    rescored, trained = models["all"], models[16]
    assert rescored.term("memory").projection is None
    _, held_out = training_split(rescored, images)
    study.searched_in(rescored, 16, held_out)
    assert torch.equal(rescored.term("memory").projection, trained.term("memory").projection)
    _assert_scores_as_trained(rescored, trained)


def test_the_memory_context_study_gives_the_model_training_with_a_context_gives() -> None:
    """A model rescored by ``with_context`` (its memory fitted again with the context, its memory
    scale and threshold measured afresh) scores as the model trained with ``--memory-context``."""
    from conftest import synthetic_images, tiny_model

    from hfr.train import TrainConfig, fit, training_split

    study = _load_script("memory_context_study")
    images = synthetic_images(12)
    models = {}
    for context in (0.0, 2.0):
        models[context] = tiny_model(memory_weight=1.0, memory_context=context)
        training = TrainConfig(epochs=1, batch_size=4, memory_fraction=1.0)
        fit(models[context], images, training, progress=False)
    rescored, trained = models[0.0], models[2.0]
    training_images, held_out = training_split(rescored, images)
    study.with_context(rescored, 2.0, training_images, held_out)
    assert rescored.config.scoring.memory_context == 2.0
    torch.testing.assert_close(rescored.term("memory").bank, trained.term("memory").bank)
    _assert_scores_as_trained(rescored, trained)


def test_the_memory_weight_study_gives_the_model_training_with_that_weight_gives() -> None:
    """A model rescored by ``weighed`` (its memory weighed otherwise, its threshold measured
    afresh) scores as the model trained with ``--memory-weight``."""
    from conftest import synthetic_images, tiny_model

    from hfr.train import TrainConfig, fit, training_split

    study = _load_script("memory_weight_study")
    images = synthetic_images(12)
    models = {}
    for weight in (1.0, 2.0):
        models[weight] = tiny_model(memory_weight=weight)
        fit(models[weight], images, TrainConfig(epochs=1, batch_size=4), progress=False)
    rescored, trained = models[1.0], models[2.0]
    _, held_out = training_split(rescored, images)
    study.weighed(rescored, 2.0, held_out)
    assert rescored.config.scoring.memory_weight == 2.0
    _assert_scores_as_trained(rescored, trained)


def test_the_memory_layout_study_reproduces_the_model_with_its_own_layout(
    widget: tuple[Path, Path], evaluation: dict, tmp_path: Path
) -> None:
    record, config = widget_study(
        "memory_layout_study", widget, tmp_path / "layout.json",
        "--layouts", "16,32,8", "--poolings", "1,3", "--limits", "4096,0", "--sigmas", "2,4",
    )  # fmt: skip
    rows = record["results"]
    settings = [(r["layout"], r["pooling"], r["limit"], r["sigma"]) for r in rows]
    assert settings == [
        (s, p, lim, sg) for s in (16, 32, 8) for p in (1, 3) for lim in (4096, 0) for sg in (2, 4)
    ]
    own = rows[0]  # layout 16, pooling 1, the model's fraction, limit, weight and sigma 2
    assert config["sigma"] == 2 and config["scoring"]["memory_weight"] == own["weight"]
    assert own["threshold"] == pytest.approx(config["calibration"]["threshold"], rel=1e-5)
    assert_reproduces(own, evaluation, (*AUCS, *RATES))
    assert own["per_defect_aupro"].keys() == {"dent"}
    # the widget's 12 images hold fewer cells than any limit: the limit changes nothing here
    assert rows[2]["memory_size"] == own["memory_size"] and rows[2]["aupro"] == own["aupro"]
    sizes = {r["layout"]: r["memory_size"] for r in rows if r["pooling"] == 1}
    assert sizes[32] <= sizes[16] < sizes[8]  # a quarter of the cells (at least MIN_MEMORY), 4x
    assert rows[1]["alone"] != own["alone"]  # sigma 4 smooths the memory's own map too
    assert rows[4]["threshold"] != pytest.approx(own["threshold"], rel=1e-3)  # pooled vectors


def _assert_scores_as_trained(rescored: HFR, trained: HFR) -> None:
    """The rescored model's memory scale, threshold and a new image's score are the trained
    model's (to float32 rounding: the memories were fitted in separate feature passes)."""
    from conftest import synthetic_images

    assert rescored.config.scoring.memory_scale == pytest.approx(
        trained.config.scoring.memory_scale, rel=1e-5
    )
    assert rescored.config.calibration.threshold == pytest.approx(
        trained.config.calibration.threshold, rel=1e-5
    )
    image = synthetic_images(1, seed=9)[0]
    assert rescored.predict(image)[0].score == pytest.approx(
        trained.predict(image)[0].score, rel=1e-5
    )


def _part_on_background(seed: int) -> np.ndarray:
    """A 96x96 light background with a dark, striped part (a structure to break)."""
    rng = np.random.default_rng(seed)
    image = np.full((96, 96, 3), 200, np.uint8) + rng.integers(0, 6, (96, 96, 1), dtype=np.uint8)
    rows, cols = np.mgrid[:96, :96]
    part = (np.abs(rows - 48) < 30) & (np.abs(cols - 48) < 30)
    stripes = (40 + 60 * ((rows // 4 + cols // 6) % 2)).astype(np.uint8)
    image[part] = stripes[part][:, None]
    return image


def test_structural_defects_change_their_mask_only_and_are_seeded(tmp_path: Path) -> None:
    """Each kind changes the image inside its mask by at least MIN_CHANGE on average and
    nowhere else; the mask lies on the part; the same seed gives the same defect; the written
    copy is an MVTec-layout category that hfr reads, with every kind's masks."""
    module = _load_script("structural_defects")
    image, donor = _part_on_background(0), _part_on_background(1)
    part = module.part_mask(image)
    assert 0.3 < part.mean() < 0.5  # the 60x60 square of 96x96, found from the border colour
    for number, kind in enumerate(module.KINDS):
        changed, mask = module.with_defect(image, kind, donor, np.random.default_rng(number))
        again, mask_again = module.with_defect(image, kind, donor, np.random.default_rng(number))
        assert np.array_equal(changed, again) and np.array_equal(mask, mask_again), kind
        difference = np.abs(changed.astype(float) - image.astype(float)).mean(axis=2)
        assert difference[mask].mean() >= module.MIN_CHANGE, kind
        assert not difference[~mask].any(), kind
        assert 0.005 < mask.mean() < 0.15 and part[mask].mean() > 0.3, kind
    root = tmp_path / "data" / "widget"
    for split, seed in (("train/good", 2), ("test/good", 3)):
        (root / split).mkdir(parents=True)
        for index in range(2):
            picture = Image.fromarray(_part_on_background(seed + 10 * index))
            picture.save(root / split / f"{index}.png")
    counts = module.write_category(tmp_path / "data", "widget", tmp_path / "check", seed=0)
    assert counts == dict.fromkeys(module.KINDS, 2)
    from hfr.data import load_mvtec

    dataset = load_mvtec(tmp_path / "check", "widget")
    assert len(dataset.train) == 2 and len(dataset.test) == 2 + 2 * len(module.KINDS)
    assert {s.defect for s in dataset.test if s.label} == set(module.KINDS)
    assert all(s.mask((96, 96)).any() for s in dataset.test if s.label)


def test_the_structural_table_gathers_each_kind_per_method(tmp_path: Path) -> None:
    """One column per method and backbone, hfr first; each kind's pixel AUROC / AUPRO as
    compute_metrics gives them, and the pooled figures in the "all" row."""
    from hfr.evaluate import EvaluationMaps, compute_metrics

    module = _load_script("structural_defects")
    kinds = list(module.KINDS)
    masks = np.zeros((1 + len(kinds), 4, 4), bool)
    masks[1:, 0, 0] = True
    maps = np.zeros(masks.shape)
    maps[1:, 0, 0] = 1.0  # every defect outlined
    maps[1, 3, 3] = 2.0  # but the first kind's map peaks beside it
    values = compute_metrics(
        EvaluationMaps(
            maps, masks, np.r_[0, np.ones(len(kinds))], maps.max((1, 2)), ["good", *kinds]
        )
    )
    for name in ("hfr_mobilenetv2_bottle", "patchcore_efficientnet_lite0_bottle"):
        (tmp_path / f"{name}.json").write_text(json.dumps(values))
    (tmp_path / "patchcore_mobilenetv2_bottle_real.json").write_text("{}")  # not a check's run
    older = json.loads(json.dumps(values))  # a record made before the last kind existed
    for per_kind in (older["per_defect_pixel_auroc"], older["per_defect_aupro"]):
        del per_kind[kinds[-1]]
    (tmp_path / "padim_mobilenetv2_bottle.json").write_text(json.dumps(older))
    lines = module.summary_table(tmp_path).splitlines()
    assert lines[0] == (
        "| category | kind | hfr mobilenetv2 | padim mobilenetv2 | patchcore efficientnet_lite0 |"
    )
    assert lines[-2] == f"| bottle | {kinds[-1]} | 1.000 / 1.000 | - | 1.000 / 1.000 |"
    pixel, pro = values["per_defect_pixel_auroc"][kinds[0]], values["per_defect_aupro"][kinds[0]]
    cell = f"{pixel:.3f} / {pro:.3f}"
    assert pixel < 1.0 and lines[2] == f"| bottle | {kinds[0]} | {cell} | {cell} | {cell} |"
    perfect = "1.000 / 1.000"
    assert lines[3] == f"| bottle | {kinds[1]} | {perfect} | {perfect} | {perfect} |"
    pooled = f"{values['pixel_auroc']:.3f} / {values['aupro']:.3f}"
    assert lines[-1] == f"| bottle | all | {pooled} | {pooled} | {pooled} |"


def test_highres_mosaics_carry_each_real_defect_once_at_its_place(tmp_path: Path) -> None:
    """grid x grid mosaics of distinct images; each defective test image's defect pasted once,
    into one cell at its own place, its grown mask the ground truth and nothing else changed."""
    module = _load_script("highres_defects")
    root = tmp_path / "data" / "widget"
    for split, count, seed in (("train/good", 5, 2), ("test/good", 4, 3)):
        (root / split).mkdir(parents=True)
        for index in range(count):
            Image.fromarray(_part_on_background(seed + 10 * index)).save(
                root / split / f"{index}.png"
            )
    (root / "test" / "dent").mkdir(parents=True)
    (root / "ground_truth" / "dent").mkdir(parents=True)
    broken = _part_on_background(7)
    broken[40:50, 40:50] = 255
    Image.fromarray(broken).save(root / "test" / "dent" / "000.png")
    mask = np.zeros((96, 96), np.uint8)
    mask[40:50, 40:50] = 255
    Image.fromarray(mask).save(root / "ground_truth" / "dent" / "000_mask.png")

    counts = module.write_category(
        tmp_path / "data", "widget", tmp_path / "check", grid=2, train_mosaics=3, seed=0
    )
    assert counts == {"train/good": 3, "test/good": 4, "test/dent": 1}
    from hfr.data import load_mvtec

    dataset = load_mvtec(tmp_path / "check", "widget")
    defective = next(s for s in dataset.test if s.label)
    pixels = np.asarray(Image.open(defective.image))
    assert pixels.shape[:2] == (192, 192)
    truth = defective.mask((192, 192))
    rows, cols = np.nonzero(truth)
    assert len({(r // 96, c // 96) for r, c in zip(rows, cols, strict=True)}) == 1  # one cell
    margin = module.MARGIN
    assert (rows.min() % 96, rows.max() % 96) == (40 - margin, 49 + margin)
    assert (cols.min() % 96, cols.max() % 96) == (40 - margin, 49 + margin)
    cell_rows, cell_cols = rows.min() // 96 * 96, cols.min() // 96 * 96
    cell = pixels[cell_rows : cell_rows + 96, cell_cols : cell_cols + 96]
    inside = truth[cell_rows : cell_rows + 96, cell_cols : cell_cols + 96]
    assert np.array_equal(cell[inside], broken[inside])  # the defect and its grown margin
    goods = [np.asarray(Image.open(p)) for p in sorted((root / "test" / "good").glob("*.png"))]
    assert any(np.array_equal(cell[~inside], good[~inside]) for good in goods)
    train = [np.asarray(Image.open(p)) for p in dataset.train]
    cells = {train[0][r : r + 96, c : c + 96].tobytes() for r in (0, 96) for c in (0, 96)}
    assert len(cells) == 4  # every cell of a mosaic a different image
