"""Dataset layouts and the errors for layouts that do not fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import write_idx
from PIL import Image

from hfr.data import (
    categories,
    load_class_folders_one_class,
    load_folder,
    load_idx_one_class,
    load_mvtec,
    read_idx,
)
from hfr.errors import DatasetLayoutError


def _png(path: Path, value: int = 0, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, np.uint8)).save(path)


def make_mvtec(root: Path, category: str = "widget") -> Path:
    base = root / category
    for i in range(3):
        _png(base / "train" / "good" / f"{i:03d}.png")
    _png(base / "test" / "good" / "000.png")
    _png(base / "test" / "crack" / "000.png")
    _png(base / "ground_truth" / "crack" / "000_mask.png", 255)
    return root


def test_mvtec_layout(tmp_path: Path) -> None:
    dataset = load_mvtec(make_mvtec(tmp_path), "widget")
    assert len(dataset.train) == 3
    assert [(s.defect, s.label) for s in dataset.test] == [("crack", 1), ("good", 0)]
    assert dataset.has_masks
    assert dataset.test[0].mask((4, 4)).all()
    assert not dataset.test[1].mask((4, 4)).any()
    assert categories(tmp_path) == ["widget"]


def test_mvtec_3d_rgb_layout(tmp_path: Path) -> None:
    base = tmp_path / "cookie"
    _png(base / "train" / "good" / "rgb" / "000.png")
    _png(base / "test" / "good" / "rgb" / "000.png")
    _png(base / "test" / "hole" / "rgb" / "000.png")
    _png(base / "test" / "hole" / "gt" / "000.png", 255)
    dataset = load_mvtec(tmp_path, "cookie", name="mvtec_3d")
    hole = next(s for s in dataset.test if s.label == 1)
    assert hole.mask_path == base / "test" / "hole" / "gt" / "000.png"


def test_wrong_layouts_say_what_was_expected(tmp_path: Path) -> None:
    make_mvtec(tmp_path)
    with pytest.raises(DatasetLayoutError, match="categories found .*widget"):
        load_mvtec(tmp_path, "bottle")
    (tmp_path / "widget" / "ground_truth" / "crack" / "000_mask.png").unlink()
    with pytest.raises(DatasetLayoutError, match="no mask for anomalous test image"):
        load_mvtec(tmp_path, "widget")
    empty = tmp_path / "empty" / "train" / "good"
    empty.mkdir(parents=True)
    (empty / "notes.txt").write_text("x")
    with pytest.raises(DatasetLayoutError, match=r"found no image files \(\['notes.txt'\]\)"):
        load_mvtec(tmp_path, "empty")
    with pytest.raises(DatasetLayoutError, match="not a folder"):
        categories(tmp_path / "nope")


def test_plain_folders_with_and_without_masks(tmp_path: Path) -> None:
    for i in range(3):
        _png(tmp_path / "normal" / f"{i}.png")
    _png(tmp_path / "ok" / "a.png")
    _png(tmp_path / "bad" / "b.png")
    _png(tmp_path / "masks" / "b_mask.png", 255)
    dataset = load_folder(
        tmp_path / "normal",
        test_good_dir=tmp_path / "ok",
        test_anomalous_dir=tmp_path / "bad",
        mask_dir=tmp_path / "masks",
    )
    assert [s.label for s in dataset.test] == [0, 1] and dataset.has_masks
    no_masks = load_folder(tmp_path / "normal", test_anomalous_dir=tmp_path / "bad")
    assert not no_masks.has_masks
    with pytest.raises(DatasetLayoutError, match="no mask for"):
        load_folder(tmp_path / "normal", test_anomalous_dir=tmp_path / "bad", mask_dir=tmp_path)


def test_idx_one_class_protocol(tmp_path: Path) -> None:
    images = np.arange(6 * 4 * 4).reshape(6, 4, 4) % 255
    labels = np.array([0, 1, 0, 2, 1, 0])
    for split in ("train", "t10k"):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", labels)
    np.testing.assert_array_equal(read_idx(tmp_path / "train-images-idx3-ubyte.gz"), images)
    dataset = load_idx_one_class(tmp_path, 0)
    assert len(dataset.train) == 3
    assert [s.label for s in dataset.test] == [0, 1, 0, 1, 1, 0]
    with pytest.raises(DatasetLayoutError, match="class 7 not among"):
        load_idx_one_class(tmp_path, 7)
    with pytest.raises(DatasetLayoutError, match="IDX layout"):
        load_idx_one_class(tmp_path / "missing", 0)


def test_corrupt_idx_file(tmp_path: Path) -> None:
    (tmp_path / "x.idx").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x09abc")
    with pytest.raises(DatasetLayoutError, match="header says"):
        read_idx(tmp_path / "x.idx")


def test_class_folders_one_class(tmp_path: Path) -> None:
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            _png(tmp_path / split / cls / "0.png")
    dataset = load_class_folders_one_class(tmp_path, "cat")
    assert [(s.defect, s.label) for s in dataset.test] == [("cat", 0), ("dog", 1)]
    with pytest.raises(DatasetLayoutError, match="found \\['cat', 'dog'\\]"):
        load_class_folders_one_class(tmp_path, "bird")
