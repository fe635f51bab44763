"""The Gradio demo, launched for real on localhost and driven through gradio_client and Chromium."""

from __future__ import annotations

import csv
import functools
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import calibrate, synthetic_images, tiny_model, write_pngs
from gradio_client import Client, handle_file
from PIL import Image

from hfr.serving.catalog import ModelCache, folder_models

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def _load_app_module():
    """app.py as a module, by its path: the tests import the installed hfr, not the checkout."""
    spec = importlib.util.spec_from_file_location("hfr_demo_app", ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


class _DemoApp:
    """app.py's names, loaded at the first use: collecting this module costs no Gradio import
    in a test worker that runs none of its tests."""

    def __getattr__(self, name: str):
        return getattr(_load_app_module(), name)


demo_app = _DemoApp()
BUNDLED = "hfr-mvtec-bottle-mobilenetv2 (bundled)"
SCREW = "hfr-mvtec-screw-mobilenetv2 (bundled)"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _calibrated_tiny(seed: int):
    model = tiny_model(seed=seed, dataset="mvtec_ad", category="widget")
    return calibrate(model, synthetic_images(4, seed=seed))


@pytest.fixture(scope="module")
def app(hub, tmp_path_factory):
    """app.py in its own process, listing the Hub org 'hfr-app' of the test Hub."""
    _calibrated_tiny(1).push_to_hub("hfr-app/hfr-mvtec-widget", token="test-token")
    broken = tmp_path_factory.mktemp("broken")
    _calibrated_tiny(2).save_pretrained(broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    from huggingface_hub import HfApi

    api = HfApi(token="test-token")
    api.create_repo("hfr-app/hfr-mvtec-broken")
    api.upload_folder(repo_id="hfr-app/hfr-mvtec-broken", folder_path=broken)
    port = _free_port()
    env = {
        **os.environ,
        "GRADIO_SERVER_PORT": str(port),
        "HFR_HUB_ORG": "hfr-app",
        "HFR_MAX_SIDE": "1600",
        "HFR_CONCURRENCY": "2",
    }
    env["GRADIO_ANALYTICS_ENABLED"] = "False"
    log = tmp_path_factory.mktemp("app") / "app.log"
    with open(log, "w") as handle:
        process = subprocess.Popen(
            [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=handle, stderr=handle
        )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(log.read_text()) from None
            time.sleep(0.5)
    else:
        process.kill()
        raise RuntimeError(f"app did not start:\n{log.read_text()}")
    yield SimpleNamespace(url=url, process=process)
    process.terminate()
    process.wait(timeout=20)


@pytest.fixture(scope="module")
def app_url(app) -> str:
    return app.url


@pytest.fixture(scope="module")
def client(app_url: str) -> Client:
    return Client(app_url, verbose=False)


def analyze(
    client: Client, paths: list[Path], model: str = BUNDLED, *, threshold=0.5, levels=False
):
    files = [handle_file(str(p)) for p in paths]
    return client.predict(files, model, threshold, 0.5, levels, api_name="/analyze")


@pytest.mark.slow
def test_defective_bottle_gets_score_verdict_and_overlay(client: Client, bottle: Path) -> None:
    broken = bottle / "test" / "broken_large" / "000.png"
    good = bottle / "test" / "good" / "000.png"
    gallery, table, csv_path, levels, status = analyze(client, [good, broken], levels=True)
    assert [row[0] for row in table["data"]] == ["000.png", "000.png"]
    top, second = table["data"]
    assert top[3] == "ANOMALOUS" and top[1] > 0.5
    assert second[3] == "normal" and second[1] < 0.5
    assert "ANOMALOUS" in gallery[0]["caption"]
    with Image.open(gallery[0]["image"]) as picture:
        assert picture.size == (900, 900)
        assert np.asarray(picture.convert("RGB")).std() > 10
    assert Path(csv_path).read_text().startswith("image,normalized_score,raw_score,verdict")
    assert len(levels["value"]) == 3
    assert "2 image(s) analysed" in status


def _dimmed(source: Path, destination: Path, factor: float = 0.95) -> Path:
    """A good part photographed in 5 % dimmer light: normal to its user, flagged by the model
    (the bundled bottle model scores good/001.png 43.2 so, its threshold is 22.8)."""
    with Image.open(source) as picture:
        pixels = np.asarray(picture.convert("RGB"), dtype=np.float32)
    Image.fromarray((pixels * factor).astype(np.uint8)).save(destination)
    return destination


@pytest.mark.slow
def test_an_image_marked_normal_recalibrates_this_tab_only(
    app_url: str, bottle: Path, tmp_path: Path
) -> None:
    """A good bottle in dim light is flagged; marked normal, it joins the 21 held-out normal
    scores of the bundled model in this tab: the threshold becomes its score (the largest of
    22), the rate guaranteed goes from 1/22 to 1/23, and the recalibrated model downloads.
    Another tab still has the model as it was."""
    import zipfile

    from hfr import HFR

    dim = _dimmed(bottle / "test" / "good" / "000.png", tmp_path / "dim.png")
    tab = Client(app_url, verbose=False)
    _, table, _, _, status = analyze(tab, [dim])
    assert table["data"][0][3] == "ANOMALOUS"
    assert f"False alarms of {BUNDLED}: at most 4.5 % of new normal images flagged" in status
    gallery, table, _, _, message, download = tab.predict(
        "dim.png", 0.5, 0.5, False, api_name="/mark_normal"
    )
    (name, normalized, raw, verdict), = table["data"]  # fmt: skip
    assert (name, normalized, verdict) == ("dim.png", 0.5, "normal")
    assert "(normal)" in gallery[0]["caption"]
    assert "guaranteed by 22 normal images" in message and "at most 4.3 %" in message
    assert "threshold moved from 22.78 to" in message and "1 of the 1 images" in message
    with zipfile.ZipFile(download["value"] if isinstance(download, dict) else download) as bundle:
        bundle.extractall(tmp_path / "unzipped")
    calibration = HFR.from_pretrained(
        tmp_path / "unzipped" / BUNDLED.split(" ")[0]
    ).config.calibration
    assert calibration.num_images == 22 and calibration.threshold == pytest.approx(raw, abs=1e-4)
    assert calibration.guaranteed_fpr == pytest.approx(1 / 23)
    _, again, _, _, status = analyze(tab, [dim])  # this tab keeps its calibration
    assert again["data"][0][3] == "normal" and "(recalibrated in this tab)" in status
    with pytest.raises(Exception, match="already among the normal images"):
        tab.predict("dim.png", 0.5, 0.5, False, api_name="/mark_normal")
    _, other, _, _, _ = analyze(Client(app_url, verbose=False), [dim])
    assert other["data"][0][3] == "ANOMALOUS"


def test_odd_images_are_converted(client: Client, tmp_path: Path) -> None:
    paths = []
    array = synthetic_images(1, size=64)[0]
    for name, image in {
        "gray.png": Image.fromarray(array[..., 0]),
        "rgba.png": Image.fromarray(np.dstack([array, np.full(array.shape[:2], 128, np.uint8)])),
        "deep.png": Image.fromarray(array[..., 0].astype(np.uint16) * 257),
        "tiny.png": Image.fromarray(array[:3, :3]),
    }.items():
        image.save(tmp_path / name)
        paths.append(tmp_path / name)
    _, table, _, _, status = analyze(client, paths)
    assert sorted(row[0] for row in table["data"]) == [
        "deep.png",
        "gray.png",
        "rgba.png",
        "tiny.png",
    ]
    assert "4 image(s) analysed" in status
    assert "`tiny.png`: enlarged 85.3x from 3x3 to the model's 256x256 input." in status


def test_huge_image_is_downscaled_with_a_notice(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    Image.new("RGB", (4000, 2000), (90, 90, 90)).save(path)
    gallery, _, _, _, status = analyze(client, [path])
    assert "downscaled from 4000x2000 to 1600x800" in status
    with Image.open(gallery[0]["image"]) as picture:
        assert picture.size == (1600, 800)


def test_bad_files_get_clear_messages(client: Client, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(Exception, match="None of the files is a readable image") as failure:
        analyze(client, [text, corrupt])
    assert "notes.txt" in str(failure.value) and "Traceback" not in str(failure.value)
    good = tmp_path / "ok.png"
    Image.fromarray(synthetic_images(1)[0]).save(good)
    _, table, _, _, status = analyze(client, [good, corrupt])
    assert len(table["data"]) == 1
    assert "`corrupt.png` skipped: cannot read image" in status


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n{ } loop\nshowpage\n"


def test_postscript_uploads_are_refused_at_once_and_delay_no_one(
    app_url: str, tmp_path: Path
) -> None:
    """Two disguised PostScript uploads beside a good one: before the decoding gate, each held
    a worker forever (Ghostscript looping) and the good request waited behind them."""
    disguised = tmp_path / "part.png"
    disguised.write_bytes(EPS)
    good = tmp_path / "good.png"
    Image.fromarray(synthetic_images(1, size=300)[0]).save(good)
    clients = [Client(app_url, verbose=False) for _ in range(3)]

    def submit(client: Client, path: Path):
        return client.submit(
            [handle_file(str(path))], BUNDLED, 0.5, 0.5, False, api_name="/analyze"
        )

    submit(clients[2], good).result(timeout=60)  # warm: the model is loaded
    began = time.perf_counter()
    submit(clients[2], good).result(timeout=60)
    alone = time.perf_counter() - began
    began = time.perf_counter()
    hostile = [submit(clients[i], disguised) for i in range(2)]
    beside = submit(clients[2], good)
    beside.result(timeout=60)
    together = time.perf_counter() - began
    for job in hostile:
        with pytest.raises(Exception, match="not one of the accepted formats"):
            job.result(timeout=1)
    assert together < alone + 1.0, (alone, together)


def _peak_and_current_rss_mb(pid: int) -> tuple[float, float]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return tuple(int(fields[key].split()[0]) / 1024 for key in ("VmHWM", "VmRSS"))


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads /proc (Linux)")
def test_a_9999_pixel_square_upload_costs_the_app_under_500_mb(app, tmp_path: Path) -> None:
    png, jpeg = tmp_path / "huge.png", tmp_path / "huge.jpg"
    square = Image.new("RGB", (9999, 9999), (90, 100, 110))
    square.save(png)
    square.save(jpeg)
    del square
    client = Client(app.url, verbose=False)
    analyze(client, [tmp_path / "huge.jpg"])  # warm: model loaded, first request's buffers
    _, rss_before = _peak_and_current_rss_mb(app.process.pid)
    _, table, _, _, status = analyze(client, [png, jpeg])
    peak_after, _ = _peak_and_current_rss_mb(app.process.pid)
    assert peak_after - rss_before < 500, (rss_before, peak_after)
    assert "above the limit of 40,000,000 pixels" in status
    assert "`huge.jpg`: downscaled from 9999x9999 to 1600x1600" in status
    assert len(table["data"]) == 1


def test_upload_names_never_become_spreadsheet_formulas(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "=1+1.png"
    Image.fromarray(synthetic_images(1)[0]).save(path)
    _, table, csv_path, _, _ = analyze(client, [path])
    with open(csv_path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[1][0] == "'" + table["data"][0][0] and rows[1][0].startswith("'=")


def test_temp_files_are_bounded(tmp_path: Path) -> None:
    for index in range(demo_app.CSV_FILES_KEPT + 8):
        demo_app.write_csv([[f"{index}.png", 0.1, 0.2, "normal"]], tmp_path)
    assert len(list(tmp_path.glob("hfr-scores-*.csv"))) == demo_app.CSV_FILES_KEPT
    settings = demo_app.AppSettings.load({"HFR_TEMP_MAX_AGE": "120"}, space_file=tmp_path / "no")
    assert demo_app.build_demo(settings).delete_cache == (60, 120)  # Gradio's upload copies


def test_hub_models_are_listed_and_pulled_on_demand(client: Client, tmp_path: Path) -> None:
    good = tmp_path / "ok.png"
    Image.fromarray(synthetic_images(1)[0]).save(good)
    _, table, _, _, status = analyze(client, [good], model="hfr-app/hfr-mvtec-widget (Hub)")
    assert len(table["data"]) == 1 and "analysed" in status
    with pytest.raises(Exception, match="Could not load hfr-app/hfr-mvtec-broken") as failure:
        analyze(client, [good], model="hfr-app/hfr-mvtec-broken (Hub)")
    assert "not a readable safetensors" in str(failure.value)


def test_concurrent_users_are_queued(client: Client, app_url: str, tmp_path: Path) -> None:
    """Six simultaneous requests against a concurrency limit of 2: some must wait in the queue."""
    from gradio_client.utils import Status

    image = tmp_path / "big.png"
    pixels = np.random.default_rng(0).integers(0, 256, (900, 900, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(image)
    clients = [Client(app_url, verbose=False) for _ in range(6)]  # connected before submitting
    jobs = [
        client.submit([handle_file(str(image))], BUNDLED, 0.5, 0.5, False, api_name="/analyze")
        for client in clients
    ]
    waited = set()
    deadline = time.time() + 120
    while not all(job.done() for job in jobs) and time.time() < deadline:
        for index, job in enumerate(jobs):
            update = job.status()
            if update.code == Status.IN_QUEUE and (update.rank or 0) >= 1:
                waited.add(index)
        time.sleep(0.01)
    results = [job.result(timeout=120) for job in jobs]
    assert all(len(result[1]["data"]) == 1 for result in results)
    assert waited, "no request ever waited behind two running ones: the queue limit is not set"


def test_unreachable_hub_leaves_local_models() -> None:
    from huggingface_hub import HfApi

    from hfr.serving.catalog import discover_models

    dead = HfApi(endpoint="http://127.0.0.1:9")  # a closed port: a real connection failure
    entries, note = discover_models([], "some-org", api=dead)
    assert [e.label for e in entries] == [BUNDLED, SCREW]
    assert "could not be listed" in note


def test_model_cache_is_a_bounded_lru(tmp_path: Path) -> None:
    for seed in range(3):
        _calibrated_tiny(seed).save_pretrained(tmp_path / f"m{seed}")
    sources = [e.source for e in folder_models(tmp_path, "local")]
    cache = ModelCache(capacity=2)
    first = cache.get(sources[0])
    cache.get(sources[1])
    assert cache.get(sources[0]) is first  # a hit refreshes it
    cache.get(sources[2])  # evicts sources[1], the least recently used
    assert len(cache) == 2 and sources[1] not in cache and sources[0] in cache


def test_the_onnxruntime_backend_scores_as_pytorch_once_exported(tmp_path: Path) -> None:
    """With the ONNX Runtime backend the app's scoring call answers with PyTorch until the
    background export is ready, then with the export: the same scores, maps, level maps and
    verdicts, under the model's calibration or a browser tab's own."""
    from hfr.onnx_runtime import OnnxModel
    from hfr.serving.catalog import ModelEntry
    from hfr.serving.runtime import CACHES, run_model

    model = _calibrated_tiny(3)
    model.save_pretrained(tmp_path / "model")
    entry = ModelEntry("widget (local)", str(tmp_path / "model"), "local")
    cache = ModelCache(capacity=2, device="cpu", backend="onnxruntime")
    CACHES["onnx-test"] = cache
    images = synthetic_images(3, seed=6)
    run_model("onnx-test", entry, images)  # starts the export
    assert isinstance(cache.scorer(entry.source, wait=True), OnnxModel)
    strict = model.config.calibration.with_scores([model.predict(images[0])[0].score * 0.5])
    for calibration, reference in ((None, model), (strict, model.with_calibration(strict))):
        predictions, used, runs_on = run_model("onnx-test", entry, images, calibration)
        assert runs_on == "cpu (ONNX Runtime), 64x64 input" and used == reference.config.calibration
        expected = reference.predict(images, return_level_maps=True)
        assert [p.is_anomalous for p in predictions] == [p.is_anomalous for p in expected]
        for ours, theirs in zip(predictions, expected, strict=True):
            assert ours.normalized_score == pytest.approx(
                theirs.normalized_score, rel=1e-5, abs=1e-5
            )
            np.testing.assert_allclose(ours.anomaly_map, theirs.anomaly_map, rtol=1e-4, atol=1e-5)
            for level, expected_level in zip(ours.level_maps, theirs.level_maps, strict=True):
                np.testing.assert_allclose(level, expected_level, rtol=1e-4, atol=1e-5)
    del CACHES["onnx-test"]


def test_a_model_that_cannot_be_exported_is_scored_by_pytorch(tmp_path: Path) -> None:
    """The export reloads the model from its source; when that fails (here the folder is gone
    after the first load), PyTorch keeps scoring it."""
    _calibrated_tiny(4).save_pretrained(tmp_path / "model")
    cache = ModelCache(capacity=2, device="cpu", backend="onnxruntime")
    loaded = cache.get(str(tmp_path / "model"))
    shutil.rmtree(tmp_path / "model")
    assert cache.scorer(str(tmp_path / "model"), wait=True) is loaded


def test_the_backend_setting() -> None:
    """HFR_BACKEND picks the backend (PyTorch unless it says otherwise); an unknown one is
    refused when the app starts."""
    from hfr.errors import HFRError
    from hfr.serving.runtime import serving_backend

    assert serving_backend("onnxruntime") == "onnxruntime"  # hfr[export] is installed here
    assert serving_backend("torch") == "torch"
    with pytest.raises(HFRError, match="backend must be one of"):
        serving_backend("auto")
    with pytest.raises(HFRError, match="backend must be one of"):
        ModelCache(backend="tensorrt")
    settings = demo_app.AppSettings.load({"HFR_BACKEND": "onnxruntime"}, space_file=Path("none"))
    assert settings.backend == "onnxruntime" and demo_app.AppSettings().backend == "torch"


def _chromium(tmp_path: Path):
    """Headless Chromium through chromedriver (the Debian packages), or a skip."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("Debian packages chromium and chromium-driver are not installed (see .ci/run)")
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    flags = [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--no-first-run",
        "--disable-sync", "--window-size=1400,1300", f"--user-data-dir={tmp_path / 'profile'}",
    ]  # fmt: skip
    for flag in flags:
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    return webdriver.Chrome(options=options, service=service)


@pytest.mark.slow
@pytest.mark.browser
def test_page_in_headless_chromium(app_url: str, bottle: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _chromium(tmp_path)
    try:
        driver.get(app_url)
        wait = WebDriverWait(driver, 90)
        upload = wait.until(
            ready.presence_of_element_located((By.CSS_SELECTOR, "input[type=file]"))
        )
        upload.send_keys(str(bottle / "test" / "broken_large" / "000.png"))
        wait.until(lambda d: "000.png" in d.page_source)
        button = next(b for b in driver.find_elements(By.TAG_NAME, "button") if b.text == "Analyse")
        button.click()
        wait.until(lambda d: "ANOMALOUS" in d.find_element(By.ID, "scores").text)
        overlay = wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#overlays img")))
        assert overlay.get_attribute("naturalWidth") not in (None, "0")
        assert "image(s) analysed" in driver.find_element(By.ID, "status").text
        shot = tmp_path / "page.png"
        driver.save_screenshot(str(shot))
        if os.environ.get("HFR_SCREENSHOT"):
            shutil.copy(shot, os.environ["HFR_SCREENSHOT"])
    finally:
        driver.quit()
    with Image.open(shot) as picture:
        pixels = np.asarray(picture.convert("RGB"))
    assert pixels.std() > 20  # not blank
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1000  # a rendered page with a heat map


def test_space_folder_and_card(tmp_path: Path) -> None:
    """The deploy script's --dry-run output (the test Hub serves model repos only, not Spaces)."""
    out = tmp_path / "space"
    command = [sys.executable, "scripts/deploy_space.py", "--space-id", "acme/hfr-demo"]
    command += ["--org", "acme", "--dry-run", "--output", str(out)]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    from huggingface_hub import SpaceCard

    card = SpaceCard.load(out / "README.md").data
    assert card.sdk == "gradio" and card.app_file == "app.py"
    import gradio

    assert card.sdk_version == gradio.__version__
    assert card.license == "cc-by-nc-sa-4.0" and card.suggested_hardware == "zero-a10g"
    assert card.hf_oauth is True and card.hf_oauth_scopes == ["write-repos"]  # push from the app
    assert card.models == ["acme/hfr-mvtec-bottle", "acme/hfr-mvtec-screw"]
    assert card.python_version == "3.11"
    bundled = out / "hfr" / "bundled" / "hfr-mvtec-bottle-mobilenetv2" / "model.safetensors"
    assert bundled.is_file()
    assert (out / "app.py").read_bytes() == (ROOT / "app.py").read_bytes()  # settings are data
    assert json.loads((out / "space_settings.json").read_text()) == {"hub_org": "acme"}
    assert (out / "examples" / "README.md").is_file()  # the examples travel with their licence
    assert (out / "requirements.txt").read_text().strip().endswith(".[app]")


def test_a_cpu_space_runs_on_onnx_runtime(tmp_path: Path) -> None:
    """``--backend onnxruntime`` ships a Space for CPU hardware: the export extra installed,
    the backend in its settings, CPU hardware suggested on its card."""
    out = tmp_path / "space"
    command = [sys.executable, "scripts/deploy_space.py", "--space-id", "acme/hfr-demo"]
    command += ["--org", "acme", "--backend", "onnxruntime", "--dry-run", "--output", str(out)]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    from huggingface_hub import SpaceCard

    assert SpaceCard.load(out / "README.md").data.suggested_hardware == "cpu-basic"
    settings = json.loads((out / "space_settings.json").read_text())
    assert settings == {"hub_org": "acme", "backend": "onnxruntime"}
    assert demo_app.AppSettings.load({}, space_file=out / "space_settings.json").backend == (
        "onnxruntime"
    )
    assert (out / "requirements.txt").read_text().strip().endswith(".[app,export]")


def test_examples_are_clickable_per_category(app_url: str, client: Client) -> None:
    """Each bundled category has examples; a click (its row) scores with that category's model."""
    rows = demo_app.example_rows(ROOT / "examples", [BUNDLED, SCREW])
    assert {row[1] for row in rows} == {BUNDLED, SCREW} and len(rows) == 6
    for paths, label in rows:
        _, table, _, _, _ = analyze(client, [Path(paths[0])], model=label)
        verdict = table["data"][0][3]
        assert verdict == ("normal" if "good" in Path(paths[0]).name else "ANOMALOUS"), paths
    assert (ROOT / "examples" / "README.md").read_text().count("CC BY-NC-SA 4.0") >= 1


@pytest.mark.slow
@pytest.mark.browser
def test_an_example_is_one_click_from_a_verdict(app_url: str, tmp_path: Path) -> None:
    """Click the defective screw example: its model is selected with it, Analyse flags it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _chromium(tmp_path)
    try:
        driver.get(app_url)
        wait = WebDriverWait(driver, 90)
        visible_text = "//*[not(self::script)][contains(text(), 'screw_scratch_head.png')]"
        wait.until(lambda d: d.find_elements(By.XPATH, visible_text))
        thumbnails = [
            Path(image.get_attribute("src")).name
            for image in driver.find_elements(By.CSS_SELECTOR, "img")
            if image.is_displayed() and image.size["height"] > 10
        ]
        assert {Path(name).stem for name in thumbnails} >= {
            Path(paths[0]).stem
            for paths, _ in demo_app.example_rows(ROOT / "examples", [BUNDLED, SCREW])
        }, thumbnails  # each example shows the image itself, not only its file name
        driver.find_elements(By.XPATH, visible_text)[0].click()
        wait.until(lambda d: "screw_scratch_head" in d.find_element(By.ID, "files").text)
        button = next(b for b in driver.find_elements(By.TAG_NAME, "button") if b.text == "Analyse")
        button.click()
        wait.until(lambda d: "ANOMALOUS" in d.find_element(By.ID, "scores").text)
        assert "screw_scratch_head.png" in driver.find_element(By.ID, "scores").text
        assert "image(s) analysed" in driver.find_element(By.ID, "status").text
        if os.environ.get("HFR_SCREENSHOT_EXAMPLE"):
            driver.save_screenshot(os.environ["HFR_SCREENSHOT_EXAMPLE"])
    finally:
        driver.quit()


MOBILENET = "MobileNetV2 (ImageNet, torchvision)"


def _normal_pngs(folder: Path, count: int, seed: int = 0) -> list[Path]:
    return write_pngs(folder, count, size=96, seed=seed)


def _train(
    client: Client,
    paths: list[Path],
    name: str,
    epochs: int,
    *,
    position: str = "off",
    input_size: str = "256",
    **tests,
):
    files = [handle_file(str(p)) for p in paths]
    good = [handle_file(str(p)) for p in tests.get("good", [])]
    defective = [handle_file(str(p)) for p in tests.get("defective", [])]
    return client.submit(
        files, name, MOBILENET, epochs, position, input_size, good, defective, api_name="/train"
    )


@pytest.mark.slow
def test_training_takes_the_input_size_from_the_images(
    client: Client, tmp_path: Path, mobilenet_weights: str
) -> None:
    """ "From the images": 96x192 uploads train at their 1:2 aspect with a 256x256's pixels,
    and the summary says so; a choice the radio does not offer is refused before it runs."""
    images = synthetic_images(10, size=192, seed=5)
    paths = []
    for index, image in enumerate(images):
        paths.append(tmp_path / f"wide_{index}.png")
        Image.fromarray(image[:96]).save(paths[-1])
    _, summary, _, _ = _train(client, paths, "wide", 1, input_size="auto").result(timeout=300)
    assert "Trained at 352x176 from 192x96 images (enlarged 1.8x)" in summary
    with pytest.raises(Exception, match="400 Bad Request"):  # Gradio checks the radio's value
        _train(client, paths, "wide", 1, input_size="huge").result(timeout=60)


@pytest.mark.slow
def test_training_endpoint_gives_a_model_its_zip_and_a_push(
    app_url: str, hub, tmp_path: Path, mobilenet_weights: str
) -> None:
    """Train through the API, watch the progress, download the zip: it loads with
    from_pretrained and scores as the app does. Then push it to the test Hub."""
    from hfr import HFR

    client = Client(app_url, verbose=False)
    normal = _normal_pngs(tmp_path / "normal", 20)
    odd = tmp_path / "odd.png"
    odd_pixels = synthetic_images(1, size=96, seed=7)[0]
    odd_pixels[30:60, 30:60] = (250, 20, 250)
    Image.fromarray(odd_pixels).save(odd)
    job = _train(
        client, normal, "Synthetic Part", 20, position="on", good=normal[:3], defective=[odd]
    )
    descriptions = _progress_until_done(job)
    choice, summary, histogram, download = job.result(timeout=10)  # states stay on the server
    stages = [d.split(" (")[0].split(" ")[0] for d in dict.fromkeys(descriptions)]
    assert stages[0] == "Extracting" and stages[-1] == "Scoring" and "Epoch" in stages
    assert choice["value"] == "hfr-synthetic-part (trained here)"
    assert "15 normal images (5 more held out" in summary
    assert {row[2] for row in histogram["value"]["data"]} == {"good", "defective"}
    archive = Path(download["value"] if isinstance(download, dict) else download)
    import zipfile

    with zipfile.ZipFile(archive) as bundle:
        bundle.extractall(tmp_path / "unzipped")
    model = HFR.from_pretrained(tmp_path / "unzipped" / "hfr-synthetic-part")
    assert (
        model.config.scoring.position_weight == 1.0 and model.term("position") is not None
    )  # "on"
    _, table, _, _, _ = analyze(client, [odd], model=choice["value"])
    assert table["data"][0][2] == pytest.approx(model.predict(odd)[0].score, abs=1e-4)

    pushed = client.predict("test-token", api_name="/push")
    assert "hfr-tester/hfr-synthetic-part" in pushed
    assert HFR.from_pretrained("hfr-tester/hfr-synthetic-part").predict(odd)[0].score == (
        pytest.approx(model.predict(odd)[0].score, abs=1e-6)
    )
    with pytest.raises(Exception, match="Push failed: Invalid user token"):
        client.predict("wrong-token", api_name="/push")
    with pytest.raises(Exception, match="Train a model first"):
        Client(app_url, verbose=False).predict("test-token", api_name="/push")  # new session


@pytest.mark.slow
def test_a_training_can_be_cancelled(app_url: str, tmp_path: Path, mobilenet_weights: str) -> None:
    from gradio_client.utils import Status

    client = Client(app_url, verbose=False)
    job = _train(client, _normal_pngs(tmp_path / "normal", 20, seed=1), "long", 100)
    deadline = time.time() + 60
    while time.time() < deadline:
        update = job.status()
        if update.code == Status.PROGRESS and "Epoch 2/" in update.progress_data[0].desc:
            break
        time.sleep(0.02)
    assert client.predict(api_name="/cancel") == "Cancelling after the current step ..."
    _, summary, _, _ = job.result(timeout=30)
    assert summary.startswith("**Training cancelled after") and "epoch(s)" in summary
    done = int(summary.split("after ")[1].split(" ")[0])
    assert 2 <= done < 100
    assert client.predict(api_name="/cancel") == "No training of yours is queued or running."


@pytest.mark.slow
def test_cancel_pressed_while_queued_stops_that_training_before_it_starts(
    app_url: str, tmp_path: Path, mobilenet_weights: str
) -> None:
    """Before, Cancel pressed while a training waited in the queue answered "No training of
    yours is running." and the training then ran to its end."""
    from gradio_client.utils import Status

    images = _normal_pngs(tmp_path / "normal", 20, seed=3)
    first, second = Client(app_url, verbose=False), Client(app_url, verbose=False)
    running = _train(first, images, "runs", 100)
    _wait_for(running, lambda update: update.code == Status.PROGRESS)
    queued = _train(second, images, "waits", 100)
    _wait_for(queued, lambda update: update.code == Status.IN_QUEUE)
    assert second.predict(api_name="/cancel") == "Cancelled: your training will not start."
    assert running.status().code == Status.PROGRESS  # the other visitor's run goes on
    assert first.predict(api_name="/cancel") == "Cancelling after the current step ..."
    descriptions = _progress_until_done(queued)
    _, summary, _, _ = queued.result(timeout=60)
    assert summary == "**Training cancelled before it started.**"
    assert not any("Epoch" in text for text in descriptions), descriptions
    assert running.result(timeout=60)[1].startswith("**Training cancelled after")
    assert second.predict(api_name="/cancel") == "No training of yours is queued or running."


def _progress_until_done(job) -> list[str]:
    """The progress texts ``job`` sends until it is done."""
    from gradio_client.utils import Status

    descriptions = []
    while not job.done():
        update = job.status()
        if update.code == Status.PROGRESS and update.progress_data:
            descriptions.append(update.progress_data[0].desc)
        time.sleep(0.02)
    return descriptions


def _wait_for(job, reached, timeout: float = 60) -> None:
    """Poll ``job``'s status until ``reached(status)`` holds."""
    deadline = time.time() + timeout
    while not reached(job.status()):
        assert time.time() < deadline, job.status()
        time.sleep(0.02)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="reads /proc (Linux)")
def test_a_zip_member_that_lies_about_its_size_costs_the_app_little(app, tmp_path: Path) -> None:
    """One member declares 10 MB and inflates to 1 GiB: read whole, it cost the app about 2 GB
    on /analyze and on /train."""
    from test_uploads import _lying_zip

    liar = _lying_zip(tmp_path / "liar.zip", "part.png", declared=10 * 2**20, inflated=2**30)
    client = Client(app.url, verbose=False)
    status = Path(f"/proc/{app.process.pid}/status")
    for endpoint in ("/analyze", "/train"):
        Path(f"/proc/{app.process.pid}/clear_refs").write_text("5")  # peak RSS := current RSS
        rss_before = _peak_and_current_rss_mb(app.process.pid)[1]
        if endpoint == "/analyze":
            with pytest.raises(Exception, match="None of the files is a readable image") as error:
                analyze(client, [liar])
        else:
            with pytest.raises(Exception, match="upload at least 10 normal images") as error:
                _train(client, [liar], "liar", 1).result(timeout=60)
        peak = _peak_and_current_rss_mb(app.process.pid)[0]
        assert peak - rss_before < 300, (endpoint, rss_before, peak, status.read_text())
        if endpoint == "/analyze":
            assert "`liar.zip/part.png` skipped: cannot read image liar.zip/part.png" in str(
                error.value
            )


def test_the_name_box_takes_what_a_name_may_hold(client: Client, tmp_path: Path) -> None:
    """Before, the box took 60 characters and names were cut to 40 without a word."""
    from hfr.serving.studio import MAX_NAME_LENGTH

    (box,) = (c for c in client.config["components"] if c["props"].get("elem_id") == "train-name")
    assert box["props"]["max_length"] == MAX_NAME_LENGTH
    with pytest.raises(Exception, match="ASCII letter .* '名前' has none"):
        _train(client, _normal_pngs(tmp_path, 1), "名前", 1).result(timeout=60)


def test_training_refuses_too_few_images_with_a_clear_message(client: Client, tmp_path) -> None:
    with pytest.raises(Exception, match="upload at least 10 normal images"):
        _train(client, _normal_pngs(tmp_path, 6), "few", 1).result(timeout=60)


@pytest.mark.slow
@pytest.mark.browser
def test_train_tab_in_headless_chromium(app_url: str, bottle: Path, tmp_path: Path) -> None:
    """Upload 20 bottle images, train, watch the progress bar move through the epochs, then
    score a defective bottle with the new model in the first tab."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _chromium(tmp_path)
    try:
        driver.get(app_url)
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: _tab(d, "Train your own")).click()
        upload = wait.until(
            lambda d: d.find_element(By.CSS_SELECTOR, "#train-files input[type=file]")
        )
        normal = sorted((bottle / "train" / "good").glob("*.png"))[:20]
        upload.send_keys("\n".join(str(p) for p in normal))
        wait.until(lambda d: d.find_element(By.ID, "train-files").text.count(".png") == 20)
        driver.find_element(By.CSS_SELECTOR, "#train-name textarea, #train-name input").send_keys(
            "Browser Bottle"
        )
        driver.find_element(By.CSS_SELECTOR, "#test-images button.label-wrap").click()
        tests = bottle / "test"
        for folder, element in (("good", "test-good"), ("broken_large", "test-defective")):
            chooser = wait.until(
                lambda d, e=element: d.find_element(By.CSS_SELECTOR, f"#{e} input[type=file]")
            )
            chooser.send_keys("\n".join(str(p) for p in sorted((tests / folder).glob("*.png"))[:5]))
            wait.until(lambda d, e=element: d.find_element(By.ID, e).text.count(".png") == 5)
        driver.execute_script(
            "arguments[0].click()",
            driver.find_element(By.CSS_SELECTOR, "#train-position input[value='auto']"),
        )
        epochs = driver.find_element(By.CSS_SELECTOR, "#train-epochs input[type=number]")
        epochs.clear()
        epochs.send_keys("30")
        driver.execute_script(  # every progress text the page shows, as it changes
            "window.seen = new Set(); new MutationObserver(() => {"
            "  const m = document.body.innerText.match(/Epoch \\d+\\/\\d+/g);"
            "  (m || []).forEach(t => window.seen.add(t)); })"
            ".observe(document.body, {subtree: true, childList: true, characterData: true});"
        )
        _button(driver, "Train").click()
        wait.until(lambda d: "Trained" in d.find_element(By.ID, "train-status").text)
        # 20 images: 5 held out, so the lowest rate the threshold can guarantee is 1/6
        assert (
            "False alarms: at most 17 % of new normal images flagged, guaranteed by 5 normal "
            "images" in _text(driver, "train-status")
        )
        assert "add 94 more normal images for 1 %" in _text(driver, "train-status")
        seen = driver.execute_script("return Array.from(window.seen)")
        epochs_seen = {int(text.split()[1].split("/")[0]) for text in seen}
        assert len(epochs_seen) >= 3 and max(epochs_seen) > min(epochs_seen), seen
        assert "Image AUROC on your test images" in _text(driver, "train-status")
        status = _text(driver, "train-status")  # bottles from above, but only 15 to train on
        assert "Per-position statistics off" in status and "too noisy" in status
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#histogram canvas, #histogram svg"))
        if os.environ.get("HFR_SCREENSHOT_TRAIN"):
            driver.set_window_size(1400, 1500)
            driver.execute_script("window.scrollTo(0, 0)")
            time.sleep(0.5)
            driver.save_screenshot(os.environ["HFR_SCREENSHOT_TRAIN"])
        driver.execute_script("arguments[0].click()", _tab(driver, "Try a model"))
        chosen = driver.find_element(By.CSS_SELECTOR, "#model input")
        wait.until(lambda d: chosen.get_attribute("value") == "hfr-browser-bottle (trained here)")
        files = driver.find_element(By.CSS_SELECTOR, "#files input[type=file]")
        files.send_keys(str(bottle / "test" / "broken_large" / "000.png"))
        wait.until(lambda d: ".png" in d.find_element(By.ID, "files").text)
        _button(driver, "Analyse").click()
        wait.until(lambda d: "analysed" in d.find_element(By.ID, "status").text)
        assert "ANOMALOUS" in driver.find_element(By.ID, "scores").text
        _mark_dimmed_good_bottle_normal(driver, wait, bottle, tmp_path)
    finally:
        driver.quit()


def _mark_dimmed_good_bottle_normal(driver, wait, bottle: Path, tmp_path: Path) -> None:
    """In the first tab with the model trained on 20 bottles: a good bottle in dim light is
    flagged; "This is normal" adds it to the 5 held-out images, and the page shows it normal
    and the guaranteed rate going from 1/6 to 1/7."""
    from selenium.webdriver.common.by import By

    dim = _dimmed(bottle / "test" / "good" / "001.png", tmp_path / "dim.png", factor=0.5)

    def row() -> str:  # the score table's cells of dim.png: name, normalised, raw, verdict
        cells = _text(driver, "scores").split("\n")
        return " ".join(cells[cells.index("dim.png") :][:4]) if "dim.png" in cells else ""

    driver.find_element(By.CSS_SELECTOR, "#files button[aria-label='Clear']").click()
    wait.until(lambda d: ".png" not in d.find_element(By.ID, "files").text)
    driver.find_element(By.CSS_SELECTOR, "#files input[type=file]").send_keys(str(dim))
    wait.until(lambda d: "dim\n.png" in d.find_element(By.ID, "files").text)
    _button(driver, "Analyse").click()
    wait.until(lambda d: row())
    assert row().endswith("ANOMALOUS")
    assert "at most 17 % of new normal images flagged" in _text(driver, "status")
    driver.find_element(By.CSS_SELECTOR, "#normal-choice input").click()
    option = wait.until(
        lambda d: next((o for o in d.find_elements(By.CSS_SELECTOR, "[role=option]")
                        if o.text.strip() == "dim.png"), None)
    )  # fmt: skip
    option.click()
    _button(driver, "This is normal").click()
    wait.until(lambda d: "Added" in d.find_element(By.ID, "calibration-status").text)
    message = _text(driver, "calibration-status")
    assert "guaranteed by 6 normal images" in message and "at most 14 %" in message
    assert row().startswith("dim.png 0.5 ") and row().endswith(" normal")
    assert driver.find_element(By.ID, "recalibrated").is_displayed()


def _button(driver, text: str, selector: str = "button:not([role=tab])"):
    """The visible button whose text is ``text``, or None."""
    from selenium.webdriver.common.by import By

    found = [b for b in driver.find_elements(By.CSS_SELECTOR, selector) if b.text.strip() == text]
    return next((b for b in found if b.is_displayed()), None)


def _text(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).text


def _tab(driver, text: str):
    """The tab whose title is ``text`` (Gradio also renders hidden copies of tab buttons)."""
    return _button(driver, text, "button[role=tab]")


def test_the_training_reporter_survives_pickling_for_zerogpu() -> None:
    """ZeroGPU pickles a GPU function's arguments into its worker: the reporter must travel."""
    import pickle

    import gradio as gr

    calls = []
    ticket = demo_app._TRAINING_RUNS.start("session-1")
    reporter = pickle.loads(pickle.dumps(demo_app.TrainingReporter(gr.Progress(), ticket)))
    reporter.progress = lambda fraction, desc: calls.append((round(fraction, 3), desc))
    reporter(demo_app.TrainingProgress("epochs", 2, 4, 0.5))
    assert calls == [(0.525, "Epoch 2/4, loss 0.5000")]
    assert demo_app._TRAINING_RUNS.cancel("session-1") == "running"
    with pytest.raises(demo_app.TrainingCancelled, match="after 2 epoch"):
        reporter(demo_app.TrainingProgress("epochs", 3, 4, 0.4))
    demo_app._TRAINING_RUNS.close(reporter.ticket)


@pytest.mark.slow
def test_one_training_at_a_time_the_next_waits_in_the_queue(
    app_url: str, tmp_path: Path, mobilenet_weights: str
) -> None:
    """Two visitors press Train together: the second waits in the queue (its position is sent)
    and starts only when the first has finished."""
    from gradio_client.utils import Status

    images = _normal_pngs(tmp_path / "normal", 20, seed=2)
    clients = [Client(app_url, verbose=False) for _ in range(2)]
    jobs = [_train(client, images, f"queued-{i}", 15) for i, client in enumerate(clients)]
    started: dict[int, float] = {}
    finished: dict[int, float] = {}
    queued_ranks = set()
    while len(finished) < 2:
        for index, job in enumerate(jobs):
            update = job.status()
            if update.code == Status.IN_QUEUE and update.rank is not None:
                queued_ranks.add((index, update.rank))
            if update.code in (Status.PROCESSING, Status.PROGRESS):
                started.setdefault(index, time.perf_counter())
            if update.code == Status.FINISHED or job.done():  # completed, or its files fetched
                finished.setdefault(index, time.perf_counter())
        time.sleep(0.01)
    assert all("Trained **hfr-queued-" in job.result()[1] for job in jobs)
    first, second = sorted(started, key=started.get)
    # the two jobs' messages arrive on their own streams: a loaded machine delivers one a few
    # tenths of a second after the other; a training that overlapped would start seconds early
    assert started[second] >= finished[first] - 0.5, (started, finished)
    assert any(index == second for index, _ in queued_ranks)


def test_the_training_summary_states_the_guarantee_the_resolution_and_a_heavy_tail(
    tmp_path: Path,
) -> None:
    from hfr.config import TrainConfig
    from hfr.scoring.calibration import Calibration
    from hfr.serving.studio import TrainedModel
    from hfr.train import fit

    model = tiny_model()
    fit(model, synthetic_images(12), TrainConfig(epochs=1, batch_size=4), progress=False)
    heavy = np.r_[np.linspace(0.9, 1.1, 19), 2.0, 2.1]  # two of 21 far above the rest

    def summary(scores: np.ndarray) -> str:
        calibration = Calibration.from_normal_scores(scores, target_fpr=0.01, fit="lognormal")
        training = {**model.config.training, "device": "cpu"}  # as the pipeline adds
        config = model.config.replace(calibration=calibration, training=training)
        no_scores = np.zeros(0)
        trained = TrainedModel("tail", tmp_path, tmp_path, config, 1.0, no_scores, no_scores)
        return demo_app.training_summary(trained, [])

    fitted = Calibration.from_normal_scores(heavy, target_fpr=0.01, fit="lognormal")
    warning = fitted.tail_warning()
    assert f"Warning: {warning[0].upper()}{warning[1:]}." in summary(heavy)
    assert f"False alarms: {fitted.guarantee()}." in summary(heavy)
    assert "Warning" not in summary(heavy[:19])
    precision = model.config.training["precision"]
    assert f"1 epochs, in 1.0 s on cpu ({precision}): final loss" in summary(heavy[:19])
    assert "Trained at 64x64 from 48x48 images (enlarged 1.3x)." in summary(heavy[:19])
