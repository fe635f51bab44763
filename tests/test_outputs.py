"""`hfr predict` results: distinct overlay names, rows kept as they come, no mixing."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from hfr.errors import HFRError
from hfr.serving.outputs import ResultsWriter, unique_names


def test_same_stem_in_other_folders_or_formats_gets_distinct_names(tmp_path: Path) -> None:
    paths = [tmp_path / "a/good/000.png", tmp_path / "b/good/000.png", tmp_path / "b/x.png"]
    paths.append(tmp_path / "b/x.jpg")
    names = unique_names(paths)
    assert len(set(names)) == 4 and names[0] == "a__good__000.png"


def test_rows_are_on_disk_before_the_run_ends(tmp_path: Path) -> None:
    writer = ResultsWriter(tmp_path / "out")
    writer.write({"image": "one.png", "score": "1.0"}, np.zeros((4, 4, 3), np.uint8), "one.png")
    rows = list(
        csv.DictReader((tmp_path / "out" / "scores.csv").open())
    )  # still open: a crash here
    assert rows[0]["image"] == "one.png" and rows[0]["overlay"] == "overlays/one.png.overlay.png"
    writer.close()


def test_a_second_run_never_mixes_with_the_first(tmp_path: Path) -> None:
    with ResultsWriter(tmp_path) as writer:
        writer.write({"image": "old.png"}, np.zeros((4, 4, 3), np.uint8), "old.png")
    with pytest.raises(HFRError, match="already holds results"):
        ResultsWriter(tmp_path)
    with ResultsWriter(tmp_path, overwrite=True) as writer:
        writer.write({"image": "new.png"})
    assert [r["image"] for r in csv.DictReader((tmp_path / "scores.csv").open())] == ["new.png"]
    assert not any((tmp_path / "overlays").iterdir())


def test_overlays_without_scores_are_not_resumed(tmp_path: Path) -> None:
    """Overlays left without a ``scores.csv`` name no finished images: resume is refused, not
    allowed to replace them."""
    (tmp_path / "overlays").mkdir()
    (tmp_path / "overlays" / "old.png.overlay.png").write_bytes(b"png")
    with pytest.raises(HFRError, match="holds overlays but no scores.csv, so no run to resume"):
        ResultsWriter(tmp_path, resume=True)
    assert (tmp_path / "overlays" / "old.png.overlay.png").is_file()


def test_predict_refuses_a_finished_folder_before_loading_or_exporting(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The output check comes first: an ONNX Runtime run into a finished folder stops before
    it exports the model (which takes seconds), and writes nothing there."""
    from conftest import tiny_model

    from hfr.cli import main

    tiny_model().save_pretrained(tmp_path / "model")  # not even calibrated: never loaded
    output = tmp_path / "out"
    output.mkdir()
    (output / "scores.csv").write_text("image,score\nold.png,1.0\n")
    image = tmp_path / "x.png"
    image.write_bytes(b"never read")
    command = ["predict", "--model", str(tmp_path / "model"), str(image), "--output", str(output)]
    assert main([*command, "--backend", "onnxruntime"]) == 2
    assert "already holds results" in capsys.readouterr().err
    assert sorted(p.name for p in output.iterdir()) == ["scores.csv"]
