"""Dataset layouts: MVTec AD style (also MVTec 3D-AD RGB, converted VisA), plain folders, and the
one-class protocol on IDX files (MNIST, Fashion-MNIST) or folder-per-class sets (CIFAR-10 style).

Every loader returns a :class:`AnomalyDataset` of training images (normal only) and labelled test
samples; a layout that does not fit raises :class:`DatasetLayoutError` saying what was expected.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from hfr.errors import DatasetLayoutError
from hfr.images import ImageInput, list_images

MVTEC_AD_CATEGORIES = (
    "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut",
    "pill", "screw", "tile", "toothbrush", "transistor", "wood", "zipper",
)  # fmt: skip
GOOD = "good"


@dataclass
class TestSample:
    """One test image: its source, label (1 anomalous) and defect mask file when there is one."""

    image: ImageInput
    label: int
    defect: str
    mask_path: Path | None = None

    def mask(self, size: tuple[int, int]) -> np.ndarray:
        """The ground-truth mask resized (nearest) to ``size`` (H, W); all False if none."""
        if self.mask_path is None:
            return np.zeros(size, dtype=bool)
        with Image.open(self.mask_path) as mask:
            resized = mask.convert("L").resize((size[1], size[0]), Image.Resampling.NEAREST)
            return np.asarray(resized) > 127


@dataclass
class AnomalyDataset:
    """Normal training images and labelled test samples of one category."""

    name: str
    category: str
    train: Sequence[ImageInput]
    test: list[TestSample] = field(default_factory=list)

    @property
    def has_masks(self) -> bool:
        """Whether the anomalous test samples carry pixel masks."""
        return any(s.mask_path is not None for s in self.test if s.label == 1)


def categories(root: str | Path) -> list[str]:
    """Names of the MVTec-layout categories under ``root`` (folders holding ``train/good``)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"dataset root {root} is not a folder")
    return sorted(p.name for p in root.iterdir() if (p / "train" / GOOD).is_dir())


def load_mvtec(root: str | Path, category: str, *, name: str = "mvtec_ad") -> AnomalyDataset:
    """MVTec AD layout: ``root/category/{train/good, test/<defect>, ground_truth/<defect>}``.

    MVTec 3D-AD (``.../<split>/<defect>/rgb`` images with ``gt`` masks beside them) is detected.
    """
    base = Path(root) / category
    if not base.is_dir():
        found = categories(root) if Path(root).is_dir() else []
        raise DatasetLayoutError(
            f"expected category folder {base}; categories found under {root}: {found or 'none'}"
        )
    train = _images_in(base / "train" / GOOD, "training images")
    test_root = base / "test"
    if not test_root.is_dir():
        raise DatasetLayoutError(f"expected {test_root} with one folder per defect type and 'good'")
    defects = sorted(p.name for p in test_root.iterdir() if p.is_dir())
    if not defects:
        raise DatasetLayoutError(f"{test_root} has no defect folders")
    samples = []
    for defect in defects:
        for image in _images_in(test_root / defect, f"test images of {defect!r}"):
            label = int(defect != GOOD)
            mask = _find_mask(base, defect, image) if label else None
            samples.append(TestSample(image, label, defect, mask))
    return AnomalyDataset(name, category, train, samples)


def _images_in(folder: Path, what: str) -> list[Path]:
    if (folder / "rgb").is_dir():
        folder = folder / "rgb"
    if not folder.is_dir():
        raise DatasetLayoutError(f"expected {what} in {folder}, but that folder does not exist")
    images = list_images(folder)
    if not images:
        found = sorted(p.name for p in folder.iterdir())[:5]
        raise DatasetLayoutError(f"expected {what} in {folder}; found no image files ({found})")
    return images


def _find_mask(base: Path, defect: str, image: Path) -> Path:
    candidates = [
        base / "ground_truth" / defect / f"{image.stem}_mask.png",
        base / "ground_truth" / defect / f"{image.stem}.png",
        image.parent.parent / "gt" / f"{image.stem}.png",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DatasetLayoutError(
        f"no mask for anomalous test image {image}; expected one of: "
        + ", ".join(str(c) for c in candidates)
    )


def load_folder(
    train_dir: str | Path,
    *,
    test_good_dir: str | Path | None = None,
    test_anomalous_dir: str | Path | None = None,
    mask_dir: str | Path | None = None,
    category: str | None = None,
) -> AnomalyDataset:
    """A plain folder of normal images, plus optional test folders and masks (same file stems)."""
    train = _images_in(Path(train_dir), "normal training images")
    samples = []
    if test_good_dir is not None:
        samples += [TestSample(p, 0, GOOD) for p in _images_in(Path(test_good_dir), "test images")]
    if test_anomalous_dir is not None:
        for image in _images_in(Path(test_anomalous_dir), "anomalous test images"):
            mask = None
            if mask_dir is not None:
                options = [Path(mask_dir) / f"{image.stem}{s}" for s in ("_mask.png", ".png")]
                mask = next((m for m in options if m.is_file()), None)
                if mask is None:
                    raise DatasetLayoutError(
                        f"no mask for {image}; expected {options[0]} or {options[1]}"
                    )
            samples.append(TestSample(image, 1, "anomalous", mask))
    return AnomalyDataset("folder", category or Path(train_dir).name, train, samples)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip or raw), as used by MNIST and Fashion-MNIST."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise DatasetLayoutError(f"cannot read IDX file {path}: {error}") from error
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetLayoutError(f"{path} is not an unsigned-byte IDX file")
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    values = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if values.size != int(np.prod(shape)):
        raise DatasetLayoutError(f"{path}: header says {shape} but holds {values.size} values")
    return values.reshape(shape)


def _idx_file(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise DatasetLayoutError(f"expected {stem}(.gz) in {root} (MNIST / Fashion-MNIST IDX layout)")


def load_idx_one_class(
    root: str | Path, normal_class: int, *, name: str = "mnist"
) -> AnomalyDataset:
    """One-class protocol on IDX files: train on one class, test on the whole test split."""
    root = Path(root)
    train_x = read_idx(_idx_file(root, "train-images-idx3-ubyte"))
    train_y = read_idx(_idx_file(root, "train-labels-idx1-ubyte"))
    test_x = read_idx(_idx_file(root, "t10k-images-idx3-ubyte"))
    test_y = read_idx(_idx_file(root, "t10k-labels-idx1-ubyte"))
    if normal_class not in set(train_y.tolist()):
        raise DatasetLayoutError(f"class {normal_class} not among the labels of {root}")
    train = list(train_x[train_y == normal_class])
    test = [
        TestSample(image, int(label != normal_class), str(int(label)))
        for image, label in zip(test_x, test_y, strict=True)
    ]
    return AnomalyDataset(name, str(normal_class), train, test)


def load_class_folders_one_class(
    root: str | Path, normal_class: str, *, name: str = "cifar10"
) -> AnomalyDataset:
    """One-class protocol on ``root/{train,test}/<class>/`` image folders (CIFAR-10 style)."""
    root = Path(root)
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise DatasetLayoutError(f"expected {root / split} holding one folder per class")
    classes = sorted(p.name for p in (root / "test").iterdir() if p.is_dir())
    if normal_class not in classes:
        raise DatasetLayoutError(f"class {normal_class!r} not in {root / 'test'}: found {classes}")
    train = _images_in(root / "train" / normal_class, f"training images of {normal_class!r}")
    test = [
        TestSample(image, int(cls != normal_class), cls)
        for cls in classes
        for image in _images_in(root / "test" / cls, f"test images of {cls!r}")
    ]
    return AnomalyDataset(name, normal_class, train, test)
