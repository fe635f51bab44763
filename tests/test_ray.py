"""Scale-out on a local Ray (2 CPUs): categories trained as parallel Ray tasks, a run killed
halfway and resumed. Ray is the ``ray`` extra, installed with the test extra."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
import torch
from conftest import synthetic_images, write_pngs
from PIL import Image

from hfr import HFR
from hfr.cli import main
from hfr.config import TrainConfig
from hfr.pipeline import ModelSettings, RunOptions
from hfr.scale.fleet import FINISHED, TRAINED, CategoryJob, train_all

pytestmark = [pytest.mark.ray, pytest.mark.slow]
T = TypeVar("T")
TINY = ModelSettings(encoder="resnet18", encoder_weights="random", input_size=64)
TINY_ARGS = ["--encoder", "resnet18", "--encoder-weights", "random", "--image-size", "64"]


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray with 2 CPUs for this module, shut down after it."""
    ray = pytest.importorskip("ray")
    from hfr.scale.runtime import connect

    connect("local", num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_address(ray_local) -> str:
    """The address of this module's local Ray, which the commands run as subprocesses join
    (``--ray ADDRESS``) instead of starting a Ray of their own each."""
    return ray_local.get_runtime_context().gcs_address


def _category(root: Path, name: str, count: int = 12, seed: int = 0) -> None:
    write_pngs(root / name / "train" / "good", count, seed=seed)
    test = root / name / "test" / "good"
    test.mkdir(parents=True)
    Image.fromarray(synthetic_images(1, size=48, seed=seed + 50)[0]).save(test / "000.png")


def test_two_categories_train_in_parallel_as_ray_tasks(ray_local, tmp_path: Path) -> None:
    data = tmp_path / "data"
    for seed, name in enumerate(("alpha", "beta")):
        _category(data, name, seed=seed)
    jobs = [
        CategoryJob.of(data, "mvtec_ad", name, tmp_path / "models") for name in ("alpha", "beta")
    ]
    options = RunOptions(training=TrainConfig(epochs=40, batch_size=4), progress=False)
    heard = []
    outcomes = train_all(jobs, TINY, options, ray_address="auto", on_outcome=heard.append)
    assert [o.status for o in outcomes] == [TRAINED, TRAINED]
    assert sorted(o.category for o in heard) == ["alpha", "beta"]
    first, second = sorted(outcomes, key=lambda o: o.began)
    assert second.began < first.ended, "the two tasks did not overlap"
    assert first.process != second.process
    assert os.getpid() not in (first.process, second.process)
    for job in jobs:
        model = HFR.from_pretrained(job.output)
        assert model.config.calibration is not None and model.config.category == job.category
    again = train_all(jobs, TINY, options, ray_address="auto")
    assert [o.status for o in again] == [FINISHED, FINISHED]


def test_a_failed_category_is_reported_and_the_others_finish(ray_local, tmp_path: Path) -> None:
    data = tmp_path / "data"
    _category(data, "fine")
    (data / "empty" / "train" / "good").mkdir(parents=True)  # no images at all
    jobs = [CategoryJob.of(data, "mvtec_ad", name, tmp_path / "m") for name in ("empty", "fine")]
    options = RunOptions(training=TrainConfig(epochs=2, batch_size=4), progress=False)
    empty, fine = train_all(jobs, TINY, options, ray_address="auto")
    assert empty.status == "failed" and "DatasetLayoutError" in empty.detail
    assert fine.status == TRAINED


def test_mobilenetv2_trains_a_few_bottle_images_on_ray(
    ray_local, bottle: Path, mobilenet_weights: str, tmp_path: Path
) -> None:
    data = tmp_path / "data" / "bottle"
    for split, folder, count in (("train", "good", 12), ("test", "good", 2)):
        (data / split / folder).mkdir(parents=True)
        for source in sorted((bottle / split / folder).glob("*.png"))[:count]:
            (data / split / folder / source.name).symlink_to(source)
    settings = ModelSettings(encoder="mobilenetv2_100", encoder_weights=mobilenet_weights)
    job = CategoryJob.of(tmp_path / "data", "mvtec_ad", "bottle", tmp_path / "models")
    options = RunOptions(training=TrainConfig(epochs=3), progress=False)
    (outcome,) = train_all([job], settings, options, ray_address="auto", cpus_per_task=2)
    assert outcome.status == TRAINED, outcome.detail
    model = HFR.from_pretrained(job.output)
    assert model.config.encoder == "mobilenetv2_100"
    broken = bottle / "test" / "broken_large" / "000.png"
    assert model.predict(broken)[0].score > model.config.calibration.normal_max


def test_a_killed_run_resumes_with_only_the_missing_categories(
    ray_address: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The command in its own process group, killed (SIGKILL) once the first category is done;
    run again (in this process, on the same Ray), it skips that one, resumes the interrupted
    one from its checkpoint and trains the last. One category at a time (2 CPUs per task on 2
    CPUs) makes the order certain."""
    data = tmp_path / "data"
    for seed, name in enumerate(("c1", "c2", "c3")):
        _category(data, name, count=20, seed=seed)
    command = [
        sys.executable, "-m", "hfr", "train", "--data", str(data), "--all",
        "--output", str(tmp_path / "models"), "--ray", ray_address, "--cpus-per-task", "2",
        "--epochs", "10", "--batch-size", "4", *TINY_ARGS,
    ]  # fmt: skip
    first = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True,
    )  # fmt: skip
    lines = []
    for line in first.stdout:
        lines.append(line)
        if ": trained" in line:
            break
    (done,) = [line.split(":")[0] for line in lines if ": trained" in line]
    models = tmp_path / "models"
    deadline = time.time() + 300  # generous: a loaded 2-core machine starts Ray tasks slowly
    while time.time() < deadline:  # kill once the next category has saved an epoch
        saved = [p for p in models.glob("*-checkpoints/checkpoint.pt") if done not in str(p)]
        if saved:
            break
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    assert saved, "the next category saved no checkpoint within 300 s"
    first.wait(timeout=30)
    weights = tmp_path / "models" / f"hfr-mvtec-{done}" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    capsys.readouterr()
    assert main(command[3:]) == 0  # run again in this process, on the same Ray
    rerun = capsys.readouterr().out
    assert f"{done}: finished earlier" in rerun
    assert sum(": trained" in line for line in rerun.splitlines()) == 2
    assert weights.stat().st_mtime_ns == stamp  # not trained again
    assert "resumed at epoch" in rerun  # the interrupted one went on from its checkpoint
    for name in ("c1", "c2", "c3"):
        assert HFR.from_pretrained(tmp_path / "models" / f"hfr-mvtec-{name}").config.calibration


def test_ray_without_the_extra_says_how_to_install_it(tmp_path: Path) -> None:
    """Ray hidden from a child process (a module finder that refuses it): the message names
    the extra, at once (before the command imports torch)."""
    code = (
        "import sys, importlib.abc\n"
        "class NoRay(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'ray' or name.startswith('ray.'):\n"
        "            raise ImportError('hidden for the test')\n"
        "sys.meta_path.insert(0, NoRay())\n"
        "from hfr.cli import main\n"
        "status = main(sys.argv[1:])\n"
        "print('torch imported:', 'torch' in sys.modules)\n"
        "sys.exit(status)\n"
    )
    data = tmp_path / "data"
    _category(data, "x")
    run = subprocess.run(
        [sys.executable, "-c", code, "train", "--data", str(data), "--all", "--ray",
         "--output", str(tmp_path / "m"), *TINY_ARGS],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode != 0
    assert "pip install 'hfr[ray]'" in run.stderr + run.stdout
    assert "torch imported: False" in run.stdout  # said before the command's imports
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())  # nothing started


def _bundled_bottle() -> str:
    from hfr.serving.catalog import bundled_dir

    return str(bundled_dir() / "hfr-mvtec-bottle-mobilenetv2")


def test_ray_data_scores_30_bottle_images_exactly_as_hfr_predict(
    ray_local, bottle: Path, mobilenet_weights: str, tmp_path: Path
) -> None:
    import pyarrow.parquet as parquet

    from hfr.scale.predict import RayPredictOptions, predict_on_ray

    images = sorted((bottle / "test").glob("*/*.png"))[::2][:30]
    assert len(images) == 30
    options = RayPredictOptions(address="auto", workers=2, cpus_per_worker=0.5, batch_size=8)
    count = predict_on_ray(_bundled_bottle(), [str(p) for p in images], tmp_path, options)
    assert (count.scored, count.failed, count.skipped) == (30, 0, 0)
    table = parquet.read_table(tmp_path / "scores-parquet").to_pydict()
    ray_scores = dict(zip(table["image"], table["score"], strict=True))
    assert _single_process_scores(_bundled_bottle(), images, batch_size=8) == ray_scores
    assert len((tmp_path / "scores.csv").read_text().splitlines()) == 31
    assert len(list((tmp_path / "overlays").glob("*.overlay.png"))) == 30


def _one_thread(function: Callable[..., T], *args: object, **kwargs: object) -> T:
    """``function`` run in this process with one torch thread, as each actor has: on a CPU, a
    convolution's float32 result can depend on the thread count (by about one unit in the last
    place)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return function(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)


def _single_process_scores(model: str, images: list[Path], batch_size: int) -> dict[str, float]:
    """``HFR.predict`` with one thread in batches of ``batch_size``, as the actors score (a
    convolution's float32 result can also depend on the batch it runs in)."""
    predictions = _one_thread(HFR.from_pretrained(model).predict, images, batch_size=batch_size)
    return {str(path): p.score for path, p in zip(images, predictions, strict=True)}


def _image_set(folder: Path, count: int, size: int = 160) -> list[Path]:
    return write_pngs(folder, count, size=size, seed=11, digits=4)


def test_lists_of_paths_and_uris_are_scored_like_single_process_predict(
    ray_address: str, tmp_path: Path, mobilenet_weights: str, capsys: pytest.CaptureFixture
) -> None:
    import pyarrow as arrow
    import pyarrow.parquet as parquet

    images = _image_set(tmp_path / "images", 12)
    listing = tmp_path / "list.txt"
    tiny = tmp_path / "tiny.png"  # 20x20: scored with a note that it was enlarged
    Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(tiny)
    listing.write_text("# a comment\n" + "\n".join(str(p) for p in [*images[:6], tiny]) + "\n")
    table = arrow.table({"path": [f"file://{p}" for p in images[6:]]})
    parquet.write_table(table, tmp_path / "list.parquet")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    common = ["--model", _bundled_bottle(), str(listing), str(tmp_path / "list.parquet"),
              str(junk), "--no-overlays"]  # fmt: skip
    assert _one_thread(main, ["predict", *common, "--output", str(tmp_path / "one")]) == 0
    capsys.readouterr()
    on_ray = ["predict", *common, "--output", str(tmp_path / "ray"), "--ray", ray_address,
              "--workers", "2", "--cpus-per-worker", "0.75"]  # fmt: skip
    assert main(on_ray) == 0
    summary = capsys.readouterr().out
    assert "13 images scored" in summary and "1 unreadable" in summary
    rows = {}
    for run in ("one", "ray"):
        with open(tmp_path / run / "scores.csv", newline="") as handle:
            rows[run] = {
                r["image"]: (r["score"], r["error"][:30], r["notes"])
                for r in csv.DictReader(handle)
            }
    assert rows["one"] == rows["ray"] and len(rows["ray"]) == 14
    assert rows["ray"][str(tiny)][2] == "enlarged 12.8x from 20x20 to the model's 256x256 input"


def test_a_killed_ray_predict_resumes_with_only_the_missing_images(
    ray_address: str, tmp_path: Path, mobilenet_weights: str, capsys: pytest.CaptureFixture
) -> None:
    _image_set(tmp_path / "images", 60, size=128)
    output = tmp_path / "out"
    command = [
        sys.executable, "-m", "hfr", "predict", "--model", _bundled_bottle(),
        str(tmp_path / "images"), "--output", str(output), "--no-overlays", "--ray",
        ray_address, "--batch-size", "4",
    ]  # fmt: skip
    first = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    scores = output / "scores.csv"
    deadline = time.time() + 180
    while time.time() < deadline:
        if scores.is_file() and len(scores.read_text().splitlines()) > 10:
            break
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    kept = len(scores.read_text().splitlines()) - 1
    assert 10 <= kept < 60, kept
    assert main(command[3:]) != 0  # refused in this process, before Ray: never mixed by accident
    assert "--resume" in capsys.readouterr().err
    assert main([*command[3:], "--resume"]) == 0
    rerun = capsys.readouterr().out
    with open(scores, newline="") as handle:
        images = [row["image"] for row in csv.DictReader(handle)]
    assert len(images) == len(set(images)) == 60
    done_before = int(rerun.split(" done before")[0].rsplit(", ", 1)[1])
    assert f"{60 - done_before} images scored" in rerun
    assert done_before >= kept - 1  # at most the half-written last row was dropped
