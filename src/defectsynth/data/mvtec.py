"""Index an MVTec AD-layout folder and split it as the paper does. Pure functions, no torch.

Layout::

    <root>/<category>/train/good/*.png                normal train
    <root>/<category>/test/good/*.png                 normal test
    <root>/<category>/test/<defect>/*.png             defective images
    <root>/<category>/ground_truth/<defect>/<stem>_mask.png

The paper's split: all train/good images train the GAN, the first round(0.8·n) defect images
(sorted by file name) are the defective training set, the rest plus test/good form the test set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from defectsynth.errors import DataError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
MASK_SUFFIX = "_mask"
MVTEC_URL = "https://www.mvtec.com/company/research/datasets/mvtec-ad"
MIN_DEFECT_IMAGES = 2


@dataclass(frozen=True)
class DefectSample:
    """A real defective image and its ground-truth mask."""

    image: Path
    mask: Path


@dataclass(frozen=True)
class MVTecSplit:
    """One category/defect pair split into the paper's training and test sets."""

    root: Path
    category: str
    defect: str
    normal_train: tuple[Path, ...]
    defect_train: tuple[DefectSample, ...]
    defect_test: tuple[DefectSample, ...]
    normal_test: tuple[Path, ...]

    def counts(self) -> dict[str, int]:
        return {
            "normal_train": len(self.normal_train),
            "defect_train": len(self.defect_train),
            "defect_test": len(self.defect_test),
            "normal_test": len(self.normal_test),
        }


def list_images(folder: Path) -> list[Path]:
    """Image files of ``folder`` sorted by name; hidden files and non-image files are ignored."""
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _subfolders(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_categories(root: Path) -> list[str]:
    """Categories under ``root``: the folders that have a ``train/good`` subfolder."""
    return [c for c in _subfolders(root) if (root / c / "train" / "good").is_dir()]


def list_defects(root: Path, category: str) -> list[str]:
    """Defect types of a category: the folders of ``test/`` other than ``good``."""
    return [d for d in _subfolders(root / category / "test") if d != "good"]


def mask_path_for(root: Path, category: str, defect: str, image: Path) -> Path:
    return root / category / "ground_truth" / defect / f"{image.stem}{MASK_SUFFIX}.png"


def check_root(root: Path) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"data.root={str(root)!r} does not exist or is not a folder. Expected an MVTec AD "
            f"download (<root>/<category>/train/good/...; get it from {MVTEC_URL}), or leave "
            "data.root unset (null) to use the built-in procedural dataset."
        )
    return root


def index_category(
    root: Path | str, category: str, defect: str, train_fraction: float = 0.8
) -> MVTecSplit:
    """Index ``category``/``defect`` under ``root`` and split it; every problem is a DataError."""
    root = check_root(Path(root))
    categories = list_categories(root)
    if category not in categories:
        raise DataError(
            f"data.category={category!r} not found under data.root={str(root)!r} (no "
            f"'{category}/train/good' folder). Available categories: {categories or 'none'}."
        )
    defects = list_defects(root, category)
    if defect not in defects:
        raise DataError(
            f"data.defect={defect!r} not found for category {category!r} under {root} (no "
            f"'{category}/test/{defect}' folder). Available defects: {defects or 'none'}."
        )
    if not 0.0 < train_fraction <= 1.0:
        raise DataError(f"data.train_fraction={train_fraction} must be in (0, 1].")

    normal_train = list_images(root / category / "train" / "good")
    if not normal_train:
        raise DataError(f"no images in {root / category / 'train' / 'good'}; expected PNG files.")
    defect_images = list_images(root / category / "test" / defect)
    if len(defect_images) < MIN_DEFECT_IMAGES:
        raise DataError(
            f"{root / category / 'test' / defect} holds {len(defect_images)} image(s); at least "
            f"{MIN_DEFECT_IMAGES} defective images are needed to train and test."
        )
    samples = []
    for image in defect_images:
        mask = mask_path_for(root, category, defect, image)
        if not mask.is_file():
            raise DataError(f"defect image {image} has no mask: expected {mask}.")
        samples.append(DefectSample(image, mask))

    n_train = max(1, round(train_fraction * len(samples)))
    return MVTecSplit(
        root=root,
        category=category,
        defect=defect,
        normal_train=tuple(normal_train),
        defect_train=tuple(samples[:n_train]),
        defect_test=tuple(samples[n_train:]),
        normal_test=tuple(list_images(root / category / "test" / "good")),
    )
