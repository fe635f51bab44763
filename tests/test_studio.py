"""Training from uploads (the demo's second tab without the page): the library's training, the
labelled check, the zip, and the push to the visitor's account on the test Hub."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_images

from hfr import HFR
from hfr.errors import HFRError, TrainingError
from hfr.hub import REPO_FILES
from hfr.pipeline import ModelSettings
from hfr.serving import studio

TINY = ModelSettings(encoder="resnet18", encoder_weights="random", input_size=64)


def _defective(images: list[np.ndarray]) -> list[np.ndarray]:
    broken = [image.copy() for image in images]
    for image in broken:
        image[10:30, 10:30] = (255, 0, 255)
    return broken


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> studio.TrainedModel:
    normal = synthetic_images(20, seed=3)
    return studio.train_uploaded(
        "Widget #1",
        normal,
        settings=TINY,
        epochs=3,
        output_root=tmp_path_factory.mktemp("runs"),
        test_good=synthetic_images(4, seed=4),
        test_defective=_defective(synthetic_images(4, seed=5)),
    )


def test_a_model_is_trained_checked_and_zipped(trained: studio.TrainedModel, tmp_path) -> None:
    assert trained.name == "widget-1" and trained.folder.name == "hfr-widget-1"
    assert trained.config.training["num_train_images"] == 15  # 5 of 20 held out
    assert trained.config.training["command"] == studio.COMMAND
    assert trained.config.evaluation["num_test_images"] == 8
    assert list(trained.labels) == [0] * 4 + [1] * 4
    scores = trained.normalized_scores  # normalised: in [0, 1] (float32 sigmoid reaches 1)
    # every defective upload ranks above every good one and is flagged; whether all four good
    # ones stay under 0.5 rests on the 5 held-out images of a random-init encoder
    assert ((scores >= 0) & (scores <= 1)).all() and scores[:4].max() < scores[4:].min()
    assert (scores[4:] > 0.5).all()
    assert not Path(f"{trained.folder}-checkpoints").exists()
    with zipfile.ZipFile(trained.archive) as archive:
        assert sorted(archive.namelist()) == sorted(f"hfr-widget-1/{n}" for n in REPO_FILES)
        archive.extractall(tmp_path)
    loaded = HFR.from_pretrained(tmp_path / "hfr-widget-1")
    image = _defective(synthetic_images(1, seed=9))[0]
    assert (
        loaded.predict(image)[0].score
        == HFR.from_pretrained(trained.folder).predict(image)[0].score
    )
    assert "<your-user>/hfr-widget-1" in (tmp_path / "hfr-widget-1" / "README.md").read_text()


def test_too_few_normal_images_or_no_name_are_refused(tmp_path) -> None:
    with pytest.raises(TrainingError, match="at least 10 normal images"):
        studio.train_uploaded(
            "x", synthetic_images(9), settings=TINY, epochs=1, output_root=tmp_path
        )
    with pytest.raises(HFRError, match=r"at least one ASCII letter \(a-z\) or digit \(0-9\)"):
        studio.model_name(" #! ")


def test_names_are_refused_by_the_rule_they_break() -> None:
    """Before, a Japanese name was told it had no letter, and a long name was cut silently."""
    with pytest.raises(HFRError, match="ASCII letter .* '名前' has none"):
        studio.model_name("名前")
    assert studio.model_name("x" * studio.MAX_NAME_LENGTH) == "x" * 40
    with pytest.raises(HFRError, match="at most 40 characters: 'x{41}' has 41"):
        studio.model_name("x" * 41)


def test_tiny_training_images_are_said_to_be_enlarged(tmp_path) -> None:
    """Before, 2x2 training images trained without a word (scoring them gave a note)."""
    tiny = [np.full((2, 2, 3), 100 + i, np.uint8) for i in range(10)]
    trained = studio.train_uploaded("tiny", tiny, settings=TINY, epochs=1, output_root=tmp_path)
    assert trained.notes == (
        "10 of the 10 normal images were enlarged more than 2x to the model's input (the "
        "smallest: enlarged 32x from 2x2 to the model's 64x64 input); the network sees "
        "interpolated pixels there, not detail of the part: upload larger images if you have "
        "them",
    )
    assert studio.enlargement_summary(synthetic_images(3), trained.config.preprocessing) == ()


def test_push_goes_to_the_token_owner_and_names_the_repo_in_the_card(
    hub, trained: studio.TrainedModel
) -> None:
    repo_id, url = studio.push_trained(trained.folder, "test-token")
    assert repo_id == "hfr-tester/hfr-widget-1" and "hfr-tester/hfr-widget-1" in url
    pulled = HFR.from_pretrained(repo_id)
    assert pulled.config.category == "widget-1"
    card = (trained.folder / "README.md").read_text()
    assert f'HFR.from_pretrained("{repo_id}")' in card
    from huggingface_hub.errors import HfHubHTTPError

    with pytest.raises(HfHubHTTPError, match="Invalid user token"):
        studio.push_trained(trained.folder, "not-a-token")


def test_old_runs_are_pruned(tmp_path) -> None:
    for index in range(5):
        (tmp_path / f"20261129-00000{index}").mkdir()
    studio.prune_runs(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["20261129-000003", "20261129-000004"]


def test_only_encoders_whose_weights_are_here_are_offered(monkeypatch) -> None:
    monkeypatch.setattr(
        studio,
        "ENCODERS",
        {"present": TINY, "absent": ModelSettings(encoder_weights="no-such-file.pth")},
    )
    monkeypatch.setattr(studio, "resolve_weights_file", _only_random)
    assert list(studio.available_encoders()) == ["present"]


def _only_random(weights: str) -> Path:
    from hfr.errors import EncoderWeightsError

    if weights != "random":
        raise EncoderWeightsError(f"{weights} not found")
    return Path(weights)


def test_unset_epochs_leave_the_choice_to_training(tmp_path, monkeypatch) -> None:
    # Smaller constants than the real ones (50 epochs, 600 steps), so the run stays short.
    monkeypatch.setattr("hfr.config.settings.DEFAULT_EPOCHS", 1)
    monkeypatch.setattr("hfr.config.settings.MIN_STEPS", 3)
    trained = studio.train_uploaded(
        "auto", synthetic_images(10, seed=6), settings=TINY, epochs=None, output_root=tmp_path
    )
    assert trained.config.training["epochs"] == 3  # 8 images at batch 16: one step an epoch


def test_training_tickets_reach_a_training_wherever_it_is() -> None:
    tickets = studio.TrainingTickets()
    assert tickets.cancel("a") is None  # nothing queued or running
    first, second = tickets.take("a"), tickets.take("a")
    other = tickets.take("b")
    assert tickets.start("a") == first  # a session's trainings start in queue order
    assert tickets.cancel("a") == "running"  # the running one and the one still queued
    assert tickets.cancelled(first) and tickets.cancelled(second) and not tickets.cancelled(other)
    tickets.close(first)
    assert tickets.start("a") == second and tickets.cancelled(second)
    tickets.close(second)
    assert tickets.cancel("a") is None and tickets.cancel("b") == "queued"
    unqueued = tickets.start("c")  # a training that skipped the queue still gets a ticket
    assert not tickets.cancelled(unqueued) and tickets.cancel("c") == "running"
