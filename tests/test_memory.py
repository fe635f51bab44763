"""The patch memory term (scoring.memory_weight): coreset, distances, training, save/load."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import (
    TERM_CONFIG,
    TERM_IMAGES,
    as_format_1,
    model_from_settings,
    older_scoring,
    synthetic_images,
    tiny_model,
    trained_tiny_model,
)
from safetensors.torch import load_file, save_file

from hfr import HFR
from hfr.cards import scoring_text
from hfr.config import DEFAULT_MEMORY_CONTEXT, Scoring, TrainConfig
from hfr.errors import ConfigError, ModelFormatError, TrainingError
from hfr.scoring import maps as anomaly
from hfr.scoring.terms.memory import (
    MIN_MEMORY,
    SEARCH_CHUNK,
    PatchMemory,
    greedy_coreset,
    kept_vectors,
    patch_vectors,
    search_dims,
    vector_width,
)
from hfr.train import fit, split_for_calibration

IMAGES, CONFIG = TERM_IMAGES, TERM_CONFIG


@pytest.fixture(scope="module")
def trained() -> HFR:
    return trained_tiny_model(memory_weight=2.0)


def test_the_coreset_puts_a_kept_vector_near_every_vector() -> None:
    generator = torch.Generator().manual_seed(0)
    clusters = torch.randn(5, 3, generator=generator) * 20
    vectors = (clusters[:, None] + torch.randn(5, 40, 3, generator=generator)).reshape(-1, 3)
    chosen = greedy_coreset(vectors, 5)
    assert len(set(chosen.tolist())) == 5
    covered = torch.cdist(vectors, vectors[chosen]).min(1).values.max()
    assert covered < 10  # one centre in each cluster, whose points lie within a few units
    assert greedy_coreset(vectors, 500).numel() == len(vectors)  # never more than there are
    reference = [0]  # the k-centre greedy written out with explicit distances
    for _ in range(9):
        nearest = torch.cdist(vectors, vectors[reference]).min(1).values
        reference.append(int(nearest.argmax()))
    assert greedy_coreset(vectors, 10).tolist() == reference


def test_distances_are_those_to_the_nearest_memory_vector() -> None:
    bank = torch.randn(30, 6)
    memory = PatchMemory(bank)
    vectors = torch.randn(2, 6, 3, 4)
    queries = vectors.permute(0, 2, 3, 1).reshape(-1, 6)
    expected = torch.cdist(queries, bank).min(1).values.view(2, 3, 4)
    torch.testing.assert_close(memory.distances(vectors), expected, atol=1e-4, rtol=1e-4)
    # its own vectors: 0 up to the rounding of |q|^2 - 2 q.b + |b|^2, whose root is ~1e-3
    assert memory.distances(bank.T.reshape(1, 6, 5, 6)).max() < 0.01
    with pytest.raises(ConfigError, match="another encoder"):
        memory.distances(torch.randn(1, 5, 3, 4))
    with pytest.raises(TrainingError, match="one image or more"):
        PatchMemory.from_features([])


def test_the_search_runs_in_blocks_and_finds_the_nearest_in_every_block() -> None:
    """A bank of several search blocks, its nearest rows placed in the last one."""
    bank = torch.randn(2 * SEARCH_CHUNK + 7, 5) + 50.0
    queries = torch.randn(4, 5, 2, 2)
    bank[-4:] = queries.permute(0, 2, 3, 1).reshape(-1, 5)[:4] + 0.5
    expected = torch.cdist(queries.permute(0, 2, 3, 1).reshape(-1, 5), bank).min(1).values
    torch.testing.assert_close(
        PatchMemory(bank).distances(queries), expected.view(4, 2, 2), atol=1e-3, rtol=1e-4
    )


def test_a_memory_beyond_its_limit_keeps_the_limit_from_a_sample_batch_by_batch() -> None:
    """Below the limit the coreset sees every vector (as before the limit existed); beyond it,
    the coreset of a seeded sample of limit / fraction vectors, the same in every run."""
    features = [[None, torch.randn(4, 2, 8, 8), torch.randn(4, 3, 4, 4)] for _ in range(5)]
    vectors = torch.cat([patch_vectors(f).permute(0, 2, 3, 1).flatten(0, 2) for f in features])
    small = PatchMemory.from_features(iter(features), fraction=0.25, limit=80, images=20)
    assert torch.equal(small.bank, kept_vectors(vectors, 0.25))  # 80 of 320: at the limit
    large = PatchMemory.from_features(iter(features), fraction=0.25, limit=40, images=20)
    assert 30 <= len(large.bank) <= 40  # a quarter of a ~160-vector sample, at most the limit
    again = PatchMemory.from_features(features, fraction=0.25, limit=40)
    assert torch.equal(large.bank, again.bank)
    rows = {tuple(row.tolist()) for row in vectors}
    assert all(tuple(row.tolist()) in rows for row in large.bank)
    with pytest.raises(TrainingError, match="memory_limit must be an integer >= 16"):
        TrainConfig(memory_limit=8)


def test_training_keeps_a_coreset_of_the_training_patches_and_the_map_adds_the_term(
    trained: HFR,
) -> None:
    scoring = trained.config.scoring
    assert scoring.memory_weight == 2.0 and scoring.memory_scale > 0
    train_images, _ = split_for_calibration(IMAGES, CONFIG.calibration_fraction, CONFIG.seed)
    with torch.inference_mode():
        vectors = patch_vectors(trained.encode(trained.preprocess(train_images)))
    assert len(trained.term("memory").bank) == MIN_MEMORY  # 5 % of 7 x 16 patches is fewer
    all_patches = vectors.permute(0, 2, 3, 1).reshape(-1, vectors.shape[1])
    nearest = (trained.term("memory").bank[:, None] - all_patches[None]).pow(2).sum(2).min(1).values
    assert nearest.max() < 1e-6  # every kept vector is a training patch
    images = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        out = trained(images)
        memory = trained.term("memory")(trained.encode(images))
    levels = anomaly.weigh_levels(
        out.level_maps, scales=scoring.level_scales, weights=scoring.level_weights
    )
    levels.append(memory * 2.0 / scoring.memory_scale)
    torch.testing.assert_close(out.maps, anomaly.anomaly_map(levels, (64, 64), 2.0))
    assert "plus 2 x the distance of each stride-16 patch" in scoring_text(scoring)


def test_the_memory_is_the_same_without_the_feature_cache(trained: HFR) -> None:
    model = tiny_model(memory_weight=2.0)
    fit(model, IMAGES, replace(CONFIG, cache_features=False), progress=False)
    torch.testing.assert_close(model.term("memory").bank, trained.term("memory").bank)


def test_the_memory_travels_with_the_weights_and_scores_the_same(
    trained: HFR, tmp_path: Path
) -> None:
    trained.save_pretrained(tmp_path)
    assert "memory.bank" in load_file(tmp_path / "model.safetensors")
    assert "`memory.bank`" in (tmp_path / "README.md").read_text()
    loaded = HFR.from_pretrained(tmp_path)
    assert loaded.config.scoring == trained.config.scoring
    image = synthetic_images(1, seed=8)[0]
    assert loaded.predict(image)[0].score == trained.predict(image)[0].score


@pytest.mark.parametrize(
    ("bank", "message"),
    [
        (None, "holds no patch memory"),
        (torch.full((16, 384), float("nan")), "NaN or infinite"),
        (torch.zeros(16, 7), r"expected float32 \(N, 384\)"),
        (torch.zeros(0, 384), "empty"),
        (torch.zeros(16, 384, dtype=torch.float64), r"expected float32 \(N, 384\)"),
    ],
)
def test_a_missing_or_corrupt_memory_is_refused(
    trained: HFR, tmp_path: Path, bank: torch.Tensor | None, message: str
) -> None:
    trained.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    if bank is None:
        del state["memory.bank"]
    else:
        state["memory.bank"] = bank
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ModelFormatError, match=message):
        HFR.from_pretrained(tmp_path)


def test_a_zero_weight_scores_without_the_term_and_a_weight_without_memory_names_the_fix(
    trained: HFR, tmp_path: Path
) -> None:
    trained.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["scoring"]["memory_weight"] = 0
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = HFR.from_pretrained(tmp_path)
    assert loaded.term("memory") is not None  # kept, but not weighed
    plain = tiny_model()
    plain.decoder.load_state_dict(loaded.decoder.state_dict())
    plain.config = loaded.config
    images = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(images).maps, plain(images).maps)
    scoring = replace(plain.config.scoring, memory_weight=1.0)
    plain.config = plain.config.replace(scoring=scoring)
    with pytest.raises(ConfigError, match="no patch memory.*--memory-weight"):
        plain(images)


def test_configs_without_the_memory_keys_load_without_the_term() -> None:
    values = Scoring.preset("hfr").to_dict()
    del values["memory_weight"], values["memory_scale"], values["memory_pooling"]
    assert older_scoring(values).memory_weight == 0.0
    for bad in (0, 2, 5, True, 1.0, "3"):
        with pytest.raises(ConfigError, match=r"scoring.memory_pooling must be one of \(1, 3\)"):
            Scoring.preset("hfr", memory_pooling=bad)


def test_pooling_3_averages_each_feature_over_its_neighbourhood_as_0_10_did() -> None:
    features = [None, torch.randn(2, 3, 8, 8), torch.randn(2, 5, 4, 4)]
    fine = torch.zeros(2, 3, 8, 8)
    coarse = torch.zeros(2, 5, 4, 4)
    for target, level in ((fine, features[1]), (coarse, features[2])):  # the 3x3 mean, by hand
        size = level.shape[-1]
        for y in range(size):
            for x in range(size):
                window = level[:, :, max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2]
                target[:, :, y, x] = window.mean((2, 3))
    expected = torch.cat([torch.nn.functional.avg_pool2d(fine, 2), coarse], 1)
    torch.testing.assert_close(patch_vectors(features, 3), expected)
    plain = torch.cat([torch.nn.functional.avg_pool2d(features[1], 2), features[2]], 1)
    torch.testing.assert_close(patch_vectors(features), plain)


def test_a_config_of_0_10_keeps_its_pooling_and_its_scores(tmp_path: Path) -> None:
    model = tiny_model(memory_weight=1.0, memory_pooling=3)
    fit(model, IMAGES, CONFIG, progress=False)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["scoring"]["memory_pooling"] == 3
    config = as_format_1(config)
    del config["scoring"]["memory_pooling"]  # as 0.10 wrote it
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = HFR.from_pretrained(tmp_path)
    assert loaded.config.scoring.memory_pooling == 3 and loaded.term("memory").pooling == 3
    image = synthetic_images(1, seed=9)[0]
    assert loaded.predict(image)[0].score == model.predict(image)[0].score
    repooled = HFR.from_pretrained(tmp_path)
    repooled.term("memory").pooling = 1
    assert repooled.predict(image)[0].score != model.predict(image)[0].score


def test_command_line_memory_weight_reaches_the_model() -> None:
    from hfr.cli import build_parser
    from hfr.commands.common import model_settings

    parser = build_parser()
    base = ["train", "--train-dir", "good", "--output", "m", "--encoder", "resnet18"]
    assert model_settings(parser.parse_args(base)).memory_weight == 3.0  # the default
    assert model_settings(parser.parse_args([*base, "--memory-weight", "0"])).memory_weight == 0
    arguments = [*base, "--memory-weight", "1", "--memory-pooling", "3"]
    settings = model_settings(parser.parse_args(arguments))
    scoring = model_from_settings(settings).config.scoring
    assert (scoring.memory_weight, scoring.memory_pooling) == (1.0, 3)
    for bad in (["--memory-weight", "-1"], ["--memory-weight", "inf"], ["--memory-pooling", "2"]):
        with pytest.raises(SystemExit):
            parser.parse_args([*base, *bad])


def test_the_memory_keeps_the_fraction_training_was_given_and_the_card_says_so(
    tmp_path: Path,
) -> None:
    from hfr.config import DEFAULT_MEMORY_FRACTION

    train_images, _ = split_for_calibration(IMAGES, CONFIG.calibration_fraction, CONFIG.seed)
    sizes = {}
    for fraction in (DEFAULT_MEMORY_FRACTION, 0.5):
        model = tiny_model(memory_weight=1.0)
        fit(model, IMAGES, replace(CONFIG, memory_fraction=fraction), progress=False)
        assert model.config.training["memory_fraction"] == fraction
        sizes[fraction] = len(model.term("memory").bank)
        model.save_pretrained(tmp_path / str(fraction))
        card = (tmp_path / str(fraction) / "README.md").read_text()
        assert f"The patch memory keeps {100 * fraction:g} % of the training images'" in card
    with torch.inference_mode():
        cells = patch_vectors(model.encode(model.preprocess(train_images)))[0, 0].numel()
    assert sizes[0.5] == max(MIN_MEMORY, round(0.5 * cells * len(train_images)))
    assert sizes[0.5] > sizes[DEFAULT_MEMORY_FRACTION] >= MIN_MEMORY
    for bad in (0, 1.5, float("nan"), True):
        with pytest.raises(TrainingError, match="memory_fraction"):
            replace(CONFIG, memory_fraction=bad)


def test_command_line_memory_fraction_reaches_training() -> None:
    from hfr.cli import build_parser
    from hfr.commands.common import run_options
    from hfr.config import DEFAULT_MEMORY_FRACTION

    parser = build_parser()
    base = ["train", "--train-dir", "good", "--output", "m", "--encoder", "resnet18"]
    for extra, expected in (([], DEFAULT_MEMORY_FRACTION), (["--memory-fraction", "0.02"], 0.02)):
        args = parser.parse_args([*base, *extra])
        args.command_line = None  # set by hfr.cli.main from sys.argv
        assert run_options(args).training.memory_fraction == expected


def test_wide_vectors_are_searched_in_their_principal_directions_and_measured_in_full() -> None:
    """The search compares the kept vectors' first principal directions; the distance to the
    vector it finds is that in all directions, so what lies outside them still counts."""
    assert [search_dims(width) for width in (128, 152, 384, 1536)] == ["all", "all", 128, 512]
    assert (search_dims(384, 64), search_dims(384, "all"), search_dims(96, 200)) == (
        64,
        "all",
        "all",
    )
    generator = torch.Generator().manual_seed(0)
    mixing = torch.randn(8, 384, generator=generator)  # normal patches vary in 8 directions
    bank = torch.randn(600, 8, generator=generator) @ mixing
    bank += 0.01 * torch.randn(600, 384, generator=generator)
    features = [
        None,
        bank[:, :128].T.reshape(1, 128, 600, 1),
        bank[:, 128:].T.reshape(1, 256, 600, 1),
    ]
    features = [None, torch.nn.functional.interpolate(features[1], scale_factor=2.0), features[2]]
    memory = PatchMemory.from_features([features], fraction=0.5, dims=16)
    assert memory.search_dims == 16 and tuple(memory.projection.shape) == (384, 16)
    torch.testing.assert_close(
        memory.projection.T @ memory.projection, torch.eye(16), atol=1e-5, rtol=0
    )
    full = PatchMemory(memory.bank)
    queries = (torch.randn(50, 8, generator=generator) @ mixing).T.reshape(1, 384, 5, 10)
    found, nearest = memory.distances(queries), full.distances(queries)
    assert (found >= nearest - 1e-3).all()  # never nearer than the nearest
    torch.testing.assert_close(found, nearest, atol=1e-3, rtol=1e-4)  # here the same vectors
    outside = torch.linalg.svd(memory.bank - memory.bank.mean(0)).Vh[-1]  # no normal variation
    shifted = (memory.bank[:4] + 5.0 * outside).T.reshape(1, 384, 2, 2)
    torch.testing.assert_close(
        memory.distances(shifted), torch.full((1, 2, 2), 5.0), atol=0.05, rtol=0
    )
    few = PatchMemory.from_features([features], fraction=0.01, dims=16)  # 16 vectors: too few
    assert few.projection is None and few.search_dims == 384


def test_training_records_the_reduced_search_and_it_travels_with_the_weights(
    tmp_path: Path,
) -> None:
    """ResNet18's 384-number vectors: searched in 128 directions by default (with enough kept
    vectors), in all of them with ``all``; the projection is saved, checked and reloaded."""
    image = synthetic_images(1, seed=8)[0]
    for setting, dims in (("auto", 128), ("all", 384)):
        model = tiny_model(memory_weight=1.0)
        fit(
            model,
            IMAGES,
            replace(CONFIG, memory_fraction=1.0, memory_search_dims=setting),
            progress=False,
        )
        recorded = model.config.training["memory_search_dims"]
        assert model.term("memory").search_dims == dims
        assert recorded == (dims if dims < 384 else "all")
        model.save_pretrained(tmp_path / setting)
        state = load_file(tmp_path / setting / "model.safetensors")
        assert ("memory.projection" in state) == (dims < 384)
        card = (tmp_path / setting / "README.md").read_text()
        assert ("searched in their first 128 principal directions" in card) == (dims < 384)
        loaded = HFR.from_pretrained(tmp_path / setting)
        assert loaded.term("memory").search_dims == dims
        assert loaded.predict(image)[0].score == model.predict(image)[0].score
    state["memory.projection"] = torch.zeros(384, 384)
    save_file(state, tmp_path / "auto" / "model.safetensors")
    state = load_file(tmp_path / "auto" / "model.safetensors")
    with pytest.raises(ModelFormatError, match=r"memory.projection is torch.float32 \(384, 384\)"):
        HFR.from_pretrained(tmp_path / "auto")


def test_command_line_memory_search_dims_reaches_training() -> None:
    from hfr.cli import build_parser
    from hfr.commands.common import run_options

    parser = build_parser()
    base = ["train", "--train-dir", "good", "--output", "m", "--encoder", "resnet18"]
    for extra, expected in (
        ([], "auto"),
        (["--memory-search-dims", "64"], 64),
        (["--memory-search-dims", "all"], "all"),
    ):
        args = parser.parse_args([*base, *extra])
        args.command_line = None  # set by hfr.cli.main from sys.argv
        assert run_options(args).training.memory_search_dims == expected
    for bad in ("0", "half", "-3"):
        with pytest.raises(SystemExit):
            parser.parse_args([*base, "--memory-search-dims", bad])
    for bad in (0, "half", 1.5, None):
        with pytest.raises(
            TrainingError, match="memory_search_dims must be 'auto', 'all' or an integer >= 1"
        ):
            TrainConfig(memory_search_dims=bad)


def test_the_context_appends_each_features_3x3_mean_weighted() -> None:
    features = [None, torch.randn(2, 3, 8, 8), torch.randn(2, 5, 4, 4)]
    expected = torch.cat([patch_vectors(features), 2.0 * patch_vectors(features, 3)], 1)
    torch.testing.assert_close(patch_vectors(features, 1, 2.0), expected)
    assert vector_width((16, 3, 5), 2.0) == 16 and vector_width((16, 3, 5), 0.0) == 8
    for bad in (-1, float("inf"), True, "2"):
        with pytest.raises(ConfigError, match="scoring.memory_context must be a number >= 0"):
            Scoring.preset("hfr", memory_context=bad)


def test_with_context_a_smooth_stretch_in_a_striped_part_finds_no_normal_match() -> None:
    """Normal parts are striped: cells A and B alternate. A stretch of A cells alone holds no
    cell the memory lacks, so without context it scores 0; with the neighbourhood's mean
    appended its cells match no normal cell."""
    a, b = torch.randn(6), torch.randn(6)
    stripes = torch.stack([a if column % 2 else b for column in range(8)], 1)  # (6, 8)
    normal = stripes[:, None, :].expand(6, 8, 8)[None]  # (1, 6, 8, 8): rows of stripes
    smooth = normal.clone()
    smooth[0, :, 2:6, 2:6] = a[:, None, None]  # the structure gone in the middle
    features = [None, normal[:, :2].repeat_interleave(2, 2).repeat_interleave(2, 3), normal[:, 2:]]
    gap = [None, smooth[:, :2].repeat_interleave(2, 2).repeat_interleave(2, 3), smooth[:, 2:]]
    for context, found in ((0.0, False), (2.0, True)):
        memory = PatchMemory.from_features([features], context=context, fraction=1.0)
        assert memory.distances(patch_vectors(features, 1, context)).max() < 1e-2
        distances = memory(gap)
        assert (distances[0, 3:5, 3:5].min() > 0.1) == found


def test_command_line_memory_context_reaches_the_model_and_older_models_keep_none(
    tmp_path: Path,
) -> None:
    from hfr.cli import build_parser
    from hfr.commands.common import model_settings

    parser = build_parser()
    base = ["train", "--train-dir", "good", "--output", "m", "--encoder", "resnet18"]
    for extra, expected in (([], DEFAULT_MEMORY_CONTEXT), (["--memory-context", "2"], 2.0)):
        settings = model_settings(parser.parse_args([*base, *extra]))
        assert model_from_settings(settings).config.scoring.memory_context == expected
    for bad in ("-1", "inf", "wide"):
        with pytest.raises(SystemExit):
            parser.parse_args([*base, "--memory-context", bad])
    model = trained_tiny_model(memory_weight=1.0)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["scoring"]["memory_context"]  # as 0.25's development versions wrote it
    (tmp_path / "config.json").write_text(json.dumps({**config, "format_version": 5}))
    loaded = HFR.from_pretrained(tmp_path)
    assert loaded.config.scoring.memory_context == 0.0 and loaded.term("memory").context == 0.0
    image = synthetic_images(1, seed=9)[0]
    assert loaded.predict(image)[0].score == model.predict(image)[0].score


def test_a_memory_with_context_travels_with_the_weights_and_the_card_says_so(
    tmp_path: Path,
) -> None:
    model = trained_tiny_model(memory_weight=1.0, memory_context=2.0)
    assert model.term("memory").bank.shape[1] == 768  # ResNet18's 384 numbers and their context
    model.save_pretrained(tmp_path)
    assert "described with its 3x3 neighbourhood (weight 2)" in (tmp_path / "README.md").read_text()
    loaded = HFR.from_pretrained(tmp_path)
    assert loaded.term("memory").context == 2.0
    image = synthetic_images(1, seed=9)[0]
    assert loaded.predict(image)[0].score == model.predict(image)[0].score
    state = load_file(tmp_path / "model.safetensors")
    state["memory.bank"] = state["memory.bank"][:, :384].contiguous()  # a bank without context
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ModelFormatError, match=r"expected float32 \(N, 768\)"):
        HFR.from_pretrained(tmp_path)


def test_a_coarser_stride_averages_the_stride_16_vectors_over_its_cells() -> None:
    """Stride 32 describes each 2 x 2 block of stride-16 cells by their mean vector; a partial
    block at the bottom or right edge (an odd number of cells) by the mean of those there."""
    features = [None, torch.randn(2, 3, 10, 14), torch.randn(2, 5, 5, 7)]  # 5 x 7 cells
    fine = patch_vectors(features)
    coarse = patch_vectors(features, stride=32)
    assert coarse.shape == (2, 8, 3, 4)
    torch.testing.assert_close(coarse[..., 0, 0], fine[..., :2, :2].mean((-2, -1)))
    torch.testing.assert_close(coarse[..., 2, 3], fine[..., 4, 6])  # the corner cell alone
    torch.testing.assert_close(coarse[..., 2, 1], fine[..., 4, 2:4].mean(-1))
    with_context = patch_vectors(features, 1, 2.0, 32)
    torch.testing.assert_close(with_context[:, :8], coarse)
    memory = PatchMemory.from_features([features], stride=32, fraction=1.0)
    assert memory(features).shape == (2, 3, 4) and float(memory(features).max()) < 1e-2
    for bad in (24, 16.0, "32"):
        with pytest.raises(ConfigError, match="scoring.memory_stride must be one of"):
            Scoring.preset("hfr", memory_stride=bad)


def test_a_trained_stride_travels_with_the_weights_and_the_card_says_so(tmp_path: Path) -> None:
    model = trained_tiny_model(memory_weight=1.0, memory_stride=32)
    memory = model.term("memory")
    # 9 training images (3 of 12 held out) of 2 x 2 cells at 64x64: 36 vectors, 5 % of them
    assert memory.stride == 32 and len(memory.bank) == MIN_MEMORY
    image = synthetic_images(1, seed=9)[0]
    assert (
        model.predict(image)[0].score
        != trained_tiny_model(memory_weight=1.0).predict(image)[0].score
    )
    model.save_pretrained(tmp_path)
    assert "stride-32 patch vectors" in (tmp_path / "README.md").read_text()
    loaded = HFR.from_pretrained(tmp_path)
    assert loaded.config.scoring.memory_stride == 32 and loaded.term("memory").stride == 32
    assert loaded.predict(image)[0].score == model.predict(image)[0].score


def test_command_line_memory_stride_reaches_the_model() -> None:
    from hfr.cli import build_parser
    from hfr.commands.common import model_settings

    parser = build_parser()
    base = ["train", "--train-dir", "good", "--output", "m", "--encoder", "resnet18"]
    for extra, expected in (([], 16), (["--memory-stride", "32"], 32)):
        settings = model_settings(parser.parse_args([*base, *extra]))
        assert model_from_settings(settings).config.scoring.memory_stride == expected
    for bad in ("24", "-16", "wide"):
        with pytest.raises(SystemExit):
            parser.parse_args([*base, "--memory-stride", bad])
