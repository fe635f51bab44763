"""Push and pull through the real huggingface_hub client against the local test Hub."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import calibrate, synthetic_images, tiny_model
from huggingface_hub import HfApi
from PIL import Image

from hfr import HFR
from hfr.cli import main
from hfr.errors import EncoderWeightsError, ModelFormatError, ModelNotFoundError
from hfr.hub import is_pushed, push_folder, repo_name

IMAGES = synthetic_images(3, seed=21)


def trained_tiny(seed: int = 0) -> HFR:
    model = tiny_model(seed=seed, dataset="mvtec_ad", category="widget")
    return calibrate(model, synthetic_images(4, seed=seed + 1))


@pytest.fixture
def api(hub) -> HfApi:
    return HfApi(token="test-token")


def test_round_trip_through_the_hub(api: HfApi, hub, tmp_path: Path) -> None:
    model = trained_tiny()
    repo_id = f"hfr-test/{repo_name('mvtec_ad', 'widget')}"
    model.push_to_hub(repo_id, token="test-token")
    info = api.model_info(repo_id)
    assert sorted(s.rfilename for s in info.siblings) == [
        ".gitattributes", "README.md", "config.json", "model.safetensors"
    ]  # fmt: skip
    assert "hfr" in info.tags and "anomaly-detection" in info.tags
    assert [m.id for m in api.list_models(author="hfr-test")] == [repo_id]

    loaded = HFR.from_pretrained(repo_id, cache_dir=tmp_path / "empty-cache")
    for a, b in zip(model.predict(IMAGES), loaded.predict(IMAGES), strict=True):
        assert a.score == b.score and a.is_anomalous == b.is_anomalous
        np.testing.assert_array_equal(a.anomaly_map, b.anomaly_map)
    assert f"{repo_id}@{info.sha[:8]}/model.safetensors" in hub.downloads


def test_the_added_terms_travel_through_the_hub(api: HfApi, tmp_path: Path) -> None:
    from hfr.train import TrainConfig, fit

    model = tiny_model(
        position_weight=1.0,
        memory_weight=1.0,
        colour_weight=0.25,
        dataset="mvtec_ad",
        category="aligned",
    )
    fit(model, synthetic_images(12, seed=5), TrainConfig(epochs=1, batch_size=4), progress=False)
    repo_id = "hfr-test/hfr-mvtec-aligned"
    model.push_to_hub(repo_id, token="test-token")
    loaded = HFR.from_pretrained(repo_id, cache_dir=tmp_path / "cache")
    torch.testing.assert_close(
        loaded.term("position").variance, model.term("position").variance, rtol=0, atol=0
    )
    torch.testing.assert_close(
        loaded.term("memory").bank, model.term("memory").bank, rtol=0, atol=0
    )
    torch.testing.assert_close(
        loaded.term("colour").mean, model.term("colour").mean, rtol=0, atol=0
    )
    assert loaded.config.scoring == model.config.scoring
    assert [p.score for p in loaded.predict(IMAGES)] == [p.score for p in model.predict(IMAGES)]
    card = Path(api.hf_hub_download(repo_id, "README.md", cache_dir=tmp_path / "cache"))
    text = card.read_text()
    assert "(`position.mean`, `position.variance`), the\npatch memory" in text
    assert "(`memory.bank`), the\nmean and variance of the normal input colour" in text
    assert "(`colour.mean`, `colour.variance`), all in" in text


def test_pinned_revision_loads_that_commit(api: HfApi, tmp_path: Path) -> None:
    repo_id = "hfr-test/hfr-mvtec-revisions"
    first, second = trained_tiny(seed=1), trained_tiny(seed=2)
    first.push_to_hub(repo_id, token="test-token")
    first_sha = api.model_info(repo_id).sha
    second.push_to_hub(repo_id, token="test-token")
    assert api.model_info(repo_id).sha != first_sha
    old = HFR.from_pretrained(repo_id, revision=first_sha, cache_dir=tmp_path)
    new = HFR.from_pretrained(repo_id, cache_dir=tmp_path)
    assert old.predict(IMAGES[0])[0].score == first.predict(IMAGES[0])[0].score
    assert new.predict(IMAGES[0])[0].score == second.predict(IMAGES[0])[0].score
    with pytest.raises(ModelNotFoundError, match="no revision"):
        HFR.from_pretrained(repo_id, revision="0" * 40, cache_dir=tmp_path)


def test_missing_repo_is_a_clear_error(hub, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="not found on the Hub"):
        HFR.from_pretrained("hfr-test/does-not-exist", cache_dir=tmp_path)


def _upload(api: HfApi, repo_id: str, files: dict[str, bytes]) -> None:
    from huggingface_hub import CommitOperationAdd

    api.create_repo(repo_id, exist_ok=True)
    operations = [CommitOperationAdd(path, content) for path, content in files.items()]
    api.create_commit(repo_id, operations=operations, commit_message="test files")


def _saved_files(model: HFR, folder: Path) -> dict[str, bytes]:
    model.save_pretrained(folder)
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_corrupted_and_truncated_weights_on_the_hub(api: HfApi, tmp_path: Path) -> None:
    files = _saved_files(trained_tiny(), tmp_path / "model")
    _upload(
        api, "hfr-test/truncated", {**files, "model.safetensors": files["model.safetensors"][:100]}
    )
    with pytest.raises(ModelFormatError, match="not a readable safetensors"):
        HFR.from_pretrained("hfr-test/truncated", cache_dir=tmp_path / "c1")
    garbage = bytes(range(256)) * 8
    _upload(api, "hfr-test/garbage", {**files, "model.safetensors": garbage})
    with pytest.raises(ModelFormatError, match="not a readable safetensors"):
        HFR.from_pretrained("hfr-test/garbage", cache_dir=tmp_path / "c2")


def test_config_naming_other_encoder_weights(api: HfApi, tmp_path: Path) -> None:
    files = _saved_files(trained_tiny(), tmp_path / "model")
    config = json.loads(files["config.json"])
    config["encoder_fingerprint"] = "ffffffffffffffff"
    _upload(api, "hfr-test/other-encoder", {**files, "config.json": json.dumps(config).encode()})
    with pytest.raises(EncoderWeightsError, match="fingerprint ffffffffffffffff"):
        HFR.from_pretrained("hfr-test/other-encoder", cache_dir=tmp_path)


def test_repo_with_a_pickle_is_never_unpickled(api: HfApi, hub, tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    import io

    buffer = io.BytesIO()
    torch.save({"x": Payload()}, buffer)
    files = _saved_files(trained_tiny(), tmp_path / "model")
    _upload(api, "hfr-test/with-pickle", {**files, "pytorch_model.bin": buffer.getvalue()})
    HFR.from_pretrained("hfr-test/with-pickle", cache_dir=tmp_path / "c1")  # loads safetensors
    pickle_only = {k: v for k, v in files.items() if k != "model.safetensors"}
    _upload(api, "hfr-test/pickle-only", {**pickle_only, "pytorch_model.bin": buffer.getvalue()})
    with pytest.raises(ModelNotFoundError, match="never pickles"):
        HFR.from_pretrained("hfr-test/pickle-only", cache_dir=tmp_path / "c2")
    assert not any("pytorch_model.bin" in d for d in hub.downloads)
    assert not (tmp_path / "pwned").exists()


def test_repo_without_config(api: HfApi, tmp_path: Path) -> None:
    files = _saved_files(trained_tiny(), tmp_path / "model")
    _upload(api, "hfr-test/no-config", {"model.safetensors": files["model.safetensors"]})
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        HFR.from_pretrained("hfr-test/no-config", cache_dir=tmp_path / "c")


def test_offline_loading_from_the_cache(hub, tmp_path: Path) -> None:
    repo_id = "hfr-test/hfr-offline"
    model = trained_tiny(seed=5)
    model.push_to_hub(repo_id, token="test-token")
    cache = tmp_path / "cache"
    expected = HFR.from_pretrained(repo_id, cache_dir=cache).predict(IMAGES[0])[0].score
    # a new process, offline and pointed at a dead endpoint: only the cache can serve it
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    np.save(tmp_path / "image.npy", IMAGES[0])
    code = (
        "import numpy as np\nfrom hfr import HFR\n"
        f"m = HFR.from_pretrained({repo_id!r}, cache_dir={str(cache)!r})\n"
        f"print(m.predict(np.load({str(tmp_path / 'image.npy')!r}))[0].score)\n"
        "try:\n"
        f"    HFR.from_pretrained('hfr-test/never-cached', cache_dir={str(cache)!r})\n"
        "except Exception as error:\n"
        "    print(type(error).__name__)\n"
    )
    root = tmp_path  # outside the checkout: the installed package
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    score, missing = out.stdout.strip().splitlines()[-2:]
    assert float(score) == pytest.approx(expected, rel=1e-6)
    assert missing == "ModelNotFoundError"  # a repo never cached, offline


def test_push_folder_is_idempotent(api: HfApi, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    trained_tiny(seed=7).save_pretrained(folder)
    repo_id = "hfr-test/hfr-mvtec-idempotent"
    assert not is_pushed(api, repo_id, folder)
    push_folder(api, folder, repo_id)
    assert is_pushed(api, repo_id, folder)
    trained_tiny(seed=8).save_pretrained(folder)
    assert not is_pushed(api, repo_id, folder)


def test_push_command_pushes_then_skips(
    hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "model"
    trained_tiny(seed=9).save_pretrained(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    command = ["push", "--model", str(folder), "--org", "hfr-script"]
    monkeypatch.setenv("HF_TOKEN", "test-token")
    monkeypatch.chdir(tmp_path)
    assert main([*command, "--dry-run"]) == 0
    assert "dry run:" in capsys.readouterr().out
    assert main(command) == 0
    assert "pushed:" in capsys.readouterr().out
    main(command)
    again = capsys.readouterr().out
    assert "skipped: hfr-script/hfr-mvtec-widget already holds these weights" in again
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # the folder is untouched
    from huggingface_hub import hf_hub_download

    card_file = hf_hub_download("hfr-script/hfr-mvtec-widget", "README.md", cache_dir=tmp_path)
    assert 'HFR.from_pretrained("hfr-script/hfr-mvtec-widget")' in Path(card_file).read_text()
    loaded = HFR.from_pretrained("hfr-script/hfr-mvtec-widget", cache_dir=tmp_path / "cache")
    assert loaded.config.encoder_fingerprint == trained_tiny(seed=9).config.encoder_fingerprint


def test_push_all_categories_isolates_failures(
    hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from PIL import Image

    data = tmp_path / "data"
    for index, image in enumerate(synthetic_images(6, size=64)):
        (data / "good_cat" / "train" / "good").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(data / "good_cat" / "train" / "good" / f"{index}.png")
        (data / "broken_cat" / "train" / "good").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(data / "broken_cat" / "train" / "good" / f"{index}.png")
    (data / "good_cat" / "test" / "good").mkdir(parents=True)
    Image.fromarray(synthetic_images(1, size=64, seed=3)[0]).save(
        data / "good_cat" / "test" / "good" / "0.png"
    )
    # broken_cat has no test folder: its layout is wrong
    command = [
        "push", "--data", str(data), "--org", "hfr-all", "--all",
        "--encoder", "resnet18", "--encoder-weights", "random", "--image-size", "64",
        "--epochs", "1", "--batch-size", "2", "--work-dir", str(tmp_path / "work"),
    ]  # fmt: skip
    monkeypatch.setenv("HF_TOKEN", "test-token")
    monkeypatch.chdir(tmp_path)
    assert main(command) == 1  # one category failed
    out = capsys.readouterr().out
    assert "broken_cat: failed: DatasetLayoutError" in out
    assert "good_cat: pushed:" in out
    from huggingface_hub import hf_hub_download

    card = hf_hub_download("hfr-all/hfr-mvtec-good-cat", "README.md", cache_dir=tmp_path / "c")
    assert 'HFR.from_pretrained("hfr-all/hfr-mvtec-good-cat")' in Path(card).read_text()
    HFR.from_pretrained("hfr-all/hfr-mvtec-good-cat", cache_dir=tmp_path / "cache")
    main([*command, "--category", "good_cat"])
    assert "good_cat: skipped" in capsys.readouterr().out


BUNDLED_BOTTLE = "hfr-mvtec-bottle-mobilenetv2"


@pytest.mark.slow
def test_a_bare_bundled_name_loads_the_bundled_model_offline(hub, tmp_path: Path) -> None:
    """The name the app lists works in ``hfr predict`` and ``from_pretrained`` with no Hub:
    before, the bare name went to the Hub and failed offline."""
    from hfr.hub import bundled_dir

    image = tmp_path / "part.png"
    Image.fromarray(IMAGES[0]).save(image)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    command = [sys.executable, "-m", "hfr", "predict", "--model", BUNDLED_BOTTLE, str(image),
               "--output", str(tmp_path / "out")]  # fmt: skip
    run = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    (row,) = csv.DictReader((tmp_path / "out" / "scores.csv").open())
    bundled = HFR.from_pretrained(bundled_dir() / BUNDLED_BOTTLE)
    assert float(row["score"]) == pytest.approx(bundled.predict(image)[0].score, rel=1e-5)
    by_name = HFR.from_pretrained(BUNDLED_BOTTLE)
    assert by_name.config == bundled.config
    with pytest.raises(ModelNotFoundError, match="not found on the Hub"):
        HFR.from_pretrained(f"hfr-test/{BUNDLED_BOTTLE}")  # org/name: always the Hub
    with pytest.raises(ModelNotFoundError, match=f"the bundled models are {BUNDLED_BOTTLE}"):
        HFR.from_pretrained("hfr-mvtec-no-such-part", local_files_only=True)  # named: the bundled
