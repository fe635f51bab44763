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
