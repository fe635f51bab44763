"""Training: the loss falls, checkpoints resume exactly, divergence stops cleanly, calibration."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import synthetic_images, tiny_model, train_options

from hfr.config import TrainConfig, default_epochs
from hfr.errors import TrainingCancelled, TrainingDivergedError, TrainingError
from hfr.scoring.calibration import Calibration
from hfr.scoring.thresholds import conformal_rank
from hfr.train import (
    CHECKPOINT_FILE,
    TrainingProgress,
    fit,
    split_for_calibration,
    training_split,
)

IMAGES = synthetic_images(12, seed=2)


def test_loss_decreases_and_model_is_calibrated() -> None:
    model = tiny_model()
    result = fit(model, IMAGES, TrainConfig(epochs=6, batch_size=4, lr=0.1), progress=False)
    assert len(result.losses) == 6
    assert result.losses[-1] < result.losses[0]
    assert model.config.calibration is not None
    assert model.config.calibration.num_images == 2
    assert model.config.calibration.threshold >= model.config.calibration.normal_max
    assert model.config.training["epochs"] == 6
    assert not model.decoder.training and not model.encoder.training


def test_a_trained_model_is_contiguous_and_scores_as_its_saved_copy(tmp_path: Path) -> None:
    """Training runs in the channels-last layout and gives the decoder back contiguous, so the
    model just trained and the one read from its files score the same, to the bit."""
    model = tiny_model()
    fit(model, IMAGES, TrainConfig(epochs=2, batch_size=4, lr=0.1), progress=False)
    assert all(p.is_contiguous() for p in model.decoder.parameters())
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path)
    batch = model.preprocess(IMAGES[:3])
    with torch.inference_mode():
        assert torch.equal(model(batch).maps, loaded(batch).maps)


def test_cached_and_uncached_features_train_identically() -> None:
    config = TrainConfig(epochs=2, batch_size=4, lr=0.1)
    cached, fresh = tiny_model(), tiny_model()
    a = fit(cached, IMAGES, config, progress=False)
    b = fit(
        fresh, IMAGES, TrainConfig(**{**config.__dict__, "cache_features": False}), progress=False
    )
    assert a.losses == pytest.approx(b.losses, rel=1e-4)


def test_resume_continues_where_it_stopped(tmp_path: Path) -> None:
    config = dict(batch_size=4, lr=0.1)
    straight = tiny_model()
    fit(straight, IMAGES, TrainConfig(epochs=4, **config), progress=False)
    resumed = tiny_model()
    fit(resumed, IMAGES, TrainConfig(epochs=2, **config), checkpoint_dir=tmp_path, progress=False)
    result = fit(
        resumed, IMAGES, TrainConfig(epochs=4, **config), checkpoint_dir=tmp_path, progress=False
    )
    assert len(result.losses) == 4
    for a, b in zip(
        straight.decoder.state_dict().values(), resumed.decoder.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path: Path) -> None:
    fit(
        tiny_model(),
        IMAGES,
        TrainConfig(epochs=1, batch_size=4),
        checkpoint_dir=tmp_path,
        progress=False,
    )
    with pytest.raises(TrainingError, match=r"another run \(batch_size 4 \(now 6\) differ"):
        fit(
            tiny_model(),
            IMAGES,
            TrainConfig(epochs=2, batch_size=6),
            checkpoint_dir=tmp_path,
            progress=False,
        )
    other_images = synthetic_images(12, seed=3)
    config = TrainConfig(epochs=2, batch_size=4)
    with pytest.raises(TrainingError, match=r"another run \(training images differ"):
        fit(tiny_model(), other_images, config, checkpoint_dir=tmp_path)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"epochs": 0}, "epochs must be null or an integer >= 1, got 0"),
        ({"batch_size": 1}, "batch_size must be an integer >= 2, got 1"),
        ({"lr": float("nan")}, "lr must be a number > 0, got nan"),
        ({"calibration_fraction": 1.5}, r"calibration_fraction must be a number in \(0, 1\)"),
    ],
)
def test_bad_training_settings_are_named(settings: dict, message: str) -> None:
    with pytest.raises(TrainingError, match=message):
        TrainConfig(**settings)


def test_diverging_run_stops_and_keeps_last_good_checkpoint(tmp_path: Path, monkeypatch) -> None:
    # A real divergence at a chosen epoch cannot be provoked reliably, so the loss function is
    # wrapped to turn NaN from its 7th call (epoch 3 of 3 batches per epoch) on.
    from hfr.scoring import maps as anomaly

    real_loss, calls = anomaly.reconstruction_loss, []

    def loss_turning_nan(residuals, **options):
        calls.append(1)
        loss = real_loss(residuals, **options)
        return loss * math.nan if len(calls) >= 7 else loss

    monkeypatch.setattr(anomaly, "reconstruction_loss", loss_turning_nan)
    model = tiny_model()
    config = TrainConfig(epochs=5, batch_size=4, lr=0.1)
    with pytest.raises(TrainingDivergedError, match="diverged: loss nan in epoch 3.*keeps epoch 2"):
        fit(model, IMAGES, config, checkpoint_dir=tmp_path, progress=False)
    saved = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert saved["epochs_done"] == 2
    for key, value in model.decoder.state_dict().items():
        torch.testing.assert_close(value, saved["decoder"][key])  # model back at the good state


def test_huge_learning_rate_is_reported_as_divergence() -> None:
    with pytest.raises(TrainingDivergedError, match="lower the learning rate"):
        fit(tiny_model(), IMAGES, TrainConfig(epochs=5, batch_size=4, lr=1e12), progress=False)


def test_calibration_split_is_seeded_and_disjoint() -> None:
    items = list(range(20))
    train, held_out = split_for_calibration(items, 0.1, seed=0)
    assert (train, held_out) == split_for_calibration(items, 0.1, seed=0)
    assert not set(train) & set(held_out) and len(train) + len(held_out) == 20
    with pytest.raises(ValueError, match="at least 4 normal images"):
        split_for_calibration(items[:3], 0.1, seed=0)


@pytest.mark.parametrize(("count", "held_out"), [(4, 2), (12, 2), (20, 5), (49, 5), (80, 8)])
def test_small_sets_hold_out_at_least_five_images_from_twenty_on(count, held_out) -> None:
    assert len(split_for_calibration(list(range(count)), 0.1, seed=0)[1]) == held_out


def test_progress_is_reported_stage_by_stage() -> None:
    updates: list[TrainingProgress] = []
    config = TrainConfig(epochs=3, batch_size=4, lr=0.1)
    result = fit(tiny_model(), IMAGES, config, progress=False, on_progress=updates.append)
    stages = [u.stage for u in updates]
    assert stages == ["features"] * 4 + ["epochs"] * 4 + ["calibration"] * 2
    features = [(u.done, u.total) for u in updates if u.stage == "features"]
    assert features == [(0, 3), (1, 3), (2, 3), (3, 3)]  # 10 training images, batches of 4
    epochs = [u for u in updates if u.stage == "epochs"]
    assert [(u.done, u.total) for u in epochs] == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert [u.loss for u in epochs[1:]] == result.losses


def test_a_callback_that_raises_cancels_the_run_at_the_last_finished_epoch(tmp_path) -> None:
    def stop_after_two_epochs(update: TrainingProgress) -> None:
        if update.stage == "epochs" and update.done == 2:
            raise TrainingCancelled("cancelled after 2 epoch(s)")

    model = tiny_model()
    config = TrainConfig(epochs=5, batch_size=4, lr=0.1)
    with pytest.raises(TrainingCancelled):
        fit(model, IMAGES, config, checkpoint_dir=tmp_path, progress=False,
            on_progress=stop_after_two_epochs)  # fmt: skip
    assert model.config.calibration is None
    saved = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert saved["epochs_done"] == 2
    result = fit(model, IMAGES, config, checkpoint_dir=tmp_path, progress=False)
    assert result.resumed_epochs == 2 and len(result.losses) == 5  # a rerun goes on from there


def test_the_calibration_split_is_the_one_training_recorded() -> None:
    model = tiny_model()
    config = TrainConfig(epochs=1, batch_size=4, seed=3, calibration_fraction=0.25)
    fit(model, IMAGES, config, progress=False)
    held_out = training_split(model, IMAGES)[1]  # what calibration saw
    expected_training, expected = split_for_calibration(IMAGES, 0.25, 3)
    assert len(held_out) == model.config.calibration.num_images == 3
    assert all(a is b for a, b in zip(held_out, expected, strict=True))
    training, _ = training_split(model, IMAGES)  # in the order training used them
    assert len(training) == model.config.training["num_train_images"] == len(IMAGES) - 3
    assert all(a is b for a, b in zip(training, expected_training, strict=True))
    defaults = split_for_calibration(IMAGES, 0.1, 0)[1]  # no record: TrainConfig's defaults
    unrecorded = training_split(tiny_model(), IMAGES)[1]
    assert all(a is b for a, b in zip(unrecorded, defaults, strict=True))


def test_the_threshold_follows_the_target_false_alarm_rate() -> None:
    rng = np.random.default_rng(0)
    normal = np.r_[rng.normal(1.0, 0.1, 400), 9.0]  # one outlier among the held-out scores
    strict = Calibration.from_normal_scores(normal, target_fpr=0.01)
    loose = Calibration.from_normal_scores(normal, target_fpr=0.05)
    fresh = rng.normal(1.0, 0.1, 20_000)
    assert abs((fresh >= strict.threshold).mean() - 0.01) < 0.006
    assert abs((fresh >= loose.threshold).mean() - 0.05) < 0.015
    assert strict.fit == "conformal" and "score 398 of 401" in strict.method  # ceil(402 x .99)
    legacy = Calibration.from_normal_scores(normal)  # before 0.3: the outlier sets it
    assert legacy.threshold == 9.0 and (fresh >= legacy.threshold).mean() == 0
    model = tiny_model()
    fit(model, IMAGES, TrainConfig(epochs=1, batch_size=4, target_fpr=0.05), progress=False)
    calibration = model.config.calibration
    rank = conformal_rank(calibration.num_images, 0.05)
    assert calibration.target_fpr == 0.05
    assert calibration.method.startswith(f"score {rank} of {calibration.num_images} held-out")
    assert model.config.training["target_fpr"] == 0.05


def test_hard_term_is_the_loss_that_trains_and_is_recorded() -> None:
    losses = {}
    for hard_weight in (0.0, 0.5):
        model = tiny_model(seed=3)
        config = TrainConfig(epochs=2, batch_size=4, hard_weight=hard_weight)
        losses[hard_weight] = fit(model, IMAGES, config, progress=False).losses
        assert model.config.training["hard_weight"] == hard_weight
        card = str(model.generate_model_card())
        hard_line = (
            "loss: 0.5 x the mean residual + 0.5 x the mean of the hardest 1 % of each level's "
            "pixels in a batch"
        )
        assert (hard_line in card) == (hard_weight > 0)
    # the hardest 1 % of the pixels have a larger residual than the mean of all of them
    assert all(hard > full for hard, full in zip(losses[0.5], losses[0.0], strict=True))


def test_default_epochs_give_small_sets_enough_steps() -> None:
    assert default_epochs(188, 16) == 50  # bottle: 12 steps an epoch, 600 in 50 epochs
    assert default_epochs(10_000, 16) == 50
    assert default_epochs(19, 16) == 300  # 2 steps an epoch (16 + 3)
    assert default_epochs(17, 16) == 600  # the 17th image alone is skipped: 1 step an epoch


def test_unset_epochs_are_chosen_from_the_training_set_and_recorded(monkeypatch) -> None:
    # Smaller constants than the real ones (50 epochs, 600 steps), so the run stays short.
    monkeypatch.setattr("hfr.config.settings.DEFAULT_EPOCHS", 2)
    monkeypatch.setattr("hfr.config.settings.MIN_STEPS", 12)
    model = tiny_model()
    result = fit(model, IMAGES, TrainConfig(epochs=None, batch_size=4), progress=False)
    assert len(result.losses) == 4  # 10 training images: 3 steps an epoch, 4 epochs for 12
    assert model.config.training["epochs"] == 4
    result = fit(tiny_model(), IMAGES, TrainConfig(epochs=3, batch_size=4), progress=False)
    assert len(result.losses) == 3  # a number is kept as given


def test_the_held_out_share_is_a_setting_of_hfr_train() -> None:
    assert train_options().calibration_fraction == 0.1
    assert train_options("--calibration-fraction", "0.25").calibration_fraction == 0.25
    with pytest.raises(SystemExit):
        train_options("--calibration-fraction", "many")
    with pytest.raises(TrainingError, match="calibration_fraction"):
        TrainConfig(calibration_fraction=1.5)
