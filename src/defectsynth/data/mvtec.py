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

import logging
from dataclasses import dataclass, field
from pathlib import Path

from defectsynth.errors import ConfigError, DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
MASK_SUFFIX = "_mask"
MVTEC_URL = "https://www.mvtec.com/company/research/datasets/mvtec-ad"
MIN_DEFECT_IMAGES = 2
BAD_FILE_POLICIES = ("error", "skip")


@dataclass
class BadFiles:
    """What to do with a file that cannot be used (``data.on_bad_file``): ``error`` stops with
    the DataError naming it; ``skip`` logs it, records it and lets the caller drop it."""

    policy: str = "error"
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.policy not in BAD_FILE_POLICIES:
            raise ConfigError(
                f"data.on_bad_file={self.policy!r}; expected one of {list(BAD_FILE_POLICIES)}"
            )

    def handle(self, path: Path, error: DataError) -> None:
        if self.policy == "error":
            raise error
        log.warning("skipping %s: %s", path, error)
        self.skipped.append((str(path), str(error)))


@dataclass(frozen=True)
class DefectSample:
    """A real defective image and its ground-truth mask (and, in a split of several defect
    types, the type it belongs to)."""

    image: Path
    mask: Path
    defect: str | None = None


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
    #: the defect types of a split of several (``index_defect_types``); empty for one type
    defects: tuple[str, ...] = ()

    @property
    def defect_types(self) -> tuple[str, ...]:
        return self.defects or (self.defect,)

    def counts(self) -> dict[str, int]:
        return {
            "normal_train": len(self.normal_train),
            "defect_train": len(self.defect_train),
            "defect_test": len(self.defect_test),
            "normal_test": len(self.normal_test),
        }


def list_images(folder: Path, bad: BadFiles | None = None) -> list[Path]:
    """Image files of ``folder`` sorted by name. Hidden files (.DS_Store, ._*) and other
    suffixes (Thumbs.db, notes) are ignored; a broken symbolic link is a bad file."""
    if not folder.is_dir():
        return []
    images = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if p.is_symlink() and not p.exists():
            (bad or BadFiles()).handle(
                p, DataError(f"{p} is a broken symbolic link (to {p.readlink()}).")
            )
            continue
        if p.is_file():
            images.append(p)
    return images


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
    root: Path | str,
    category: str,
    defect: str,
    train_fraction: float = 0.8,
    bad: BadFiles | None = None,
) -> MVTecSplit:
    """Index ``category``/``defect`` under ``root`` and split it; every problem is a DataError
    (or, with ``bad.policy == "skip"``, a skipped file)."""
    bad = bad or BadFiles()
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

    normal_train = list_images(root / category / "train" / "good", bad)
    if not normal_train:
        raise DataError(f"no images in {root / category / 'train' / 'good'}; expected PNG files.")
    samples = []
    for image in list_images(root / category / "test" / defect, bad):
        mask = mask_path_for(root, category, defect, image)
        if mask.is_file():
            samples.append(DefectSample(image, mask))
        else:
            bad.handle(image, DataError(f"defect image {image} has no mask: expected {mask}."))
    check_defect_count(len(samples), root / category / "test" / defect)

    n_train = max(1, round(train_fraction * len(samples)))
    return MVTecSplit(
        root=root,
        category=category,
        defect=defect,
        normal_train=tuple(normal_train),
        defect_train=tuple(samples[:n_train]),
        defect_test=tuple(samples[n_train:]),
        normal_test=tuple(list_images(root / category / "test" / "good", bad)),
    )


def index_defect_types(
    root: Path | str,
    category: str,
    defects: list[str] | tuple[str, ...],
    train_fraction: float = 0.8,
    bad: BadFiles | None = None,
) -> MVTecSplit:
    """Several defect types of one category in one split: each type is split on its own (the
    first round(train_fraction·n) of its images by name train), and every sample records its
    type. ``defect`` of the result names them all (``crack+glue_strip``)."""
    bad = bad or BadFiles()
    if not defects:
        raise DataError("data.defect=[] names no defect type; give one or more.")
    duplicates = sorted({d for d in defects if list(defects).count(d) > 1})
    if duplicates:
        raise DataError(f"data.defect lists {duplicates} more than once; name each type once.")
    available = list_defects(check_root(Path(root)), category)
    unknown = [d for d in defects if d not in available]
    if unknown:
        raise DataError(
            f"data.defect={list(defects)}: {unknown} not found for category {category!r} under "
            f"{root} (no '{category}/test/<type>' folder). Available defects: "
            f"{available or 'none'}."
        )
    splits = [index_category(root, category, d, train_fraction, bad) for d in defects]

    def tagged(samples: tuple[DefectSample, ...], defect: str) -> tuple[DefectSample, ...]:
        return tuple(DefectSample(s.image, s.mask, defect) for s in samples)

    first = splits[0]
    return MVTecSplit(
        root=first.root,
        category=category,
        defect="+".join(defects),
        normal_train=first.normal_train,
        defect_train=sum((tagged(s.defect_train, s.defect) for s in splits), ()),
        defect_test=sum((tagged(s.defect_test, s.defect) for s in splits), ()),
        normal_test=first.normal_test,
        defects=tuple(defects),
    )


def check_defect_count(n: int, folder: Path) -> None:
    if n < MIN_DEFECT_IMAGES:
        raise DataError(
            f"{folder} holds {n} usable image(s) with masks; at least {MIN_DEFECT_IMAGES} "
            "defective images are needed to train and test."
        )


def find_mask(folder: Path, image: Path, suffix: str) -> Path | None:
    """The mask of ``image`` in ``folder``: same stem plus ``suffix``, any image extension."""
    for extension in (".png", *sorted(IMAGE_SUFFIXES - {".png"})):
        candidate = folder / f"{image.stem}{suffix}{extension}"
        if candidate.is_file():
            return candidate
    return None


def index_folders(
    normal: Path | str,
    defect: Path | str,
    mask: Path | str,
    category: str = "custom",
    defect_name: str = "defect",
    mask_suffix: str = "_mask",
    normal_test: Path | str | None = None,
    normal_test_fraction: float = 0.1,
    train_fraction: float = 0.8,
    bad: BadFiles | None = None,
) -> MVTecSplit:
    """A product in plain folders (``data=folder``): defect-free images, defective images and
    their masks (matched by file stem + ``mask_suffix``). Defect images split as in the paper;
    the defect-free test set is ``normal_test`` or, without it, the last
    ``normal_test_fraction`` of the defect-free images by name."""
    bad = bad or BadFiles()
    folders = {
        "data.folders.normal": normal,
        "data.folders.defect": defect,
        "data.folders.mask": mask,
    }
    for option, folder in folders.items():
        if folder is None or not Path(folder).is_dir():
            raise DataError(
                f"{option}={str(folder)!r} is not a folder; expected a folder of "
                "images (data=folder needs normal, defect and mask folders)."
            )
    normal_images = list_images(Path(normal), bad)
    if normal_test is not None:
        test_images = list_images(check_root(Path(normal_test)), bad)
    else:
        n_test = round(normal_test_fraction * len(normal_images)) if len(normal_images) > 1 else 0
        normal_images, test_images = (
            normal_images[: len(normal_images) - n_test],
            normal_images[len(normal_images) - n_test :],
        )
    if not normal_images:
        raise DataError(f"no defect-free images in data.folders.normal={str(normal)!r}.")
    samples = []
    for image in list_images(Path(defect), bad):
        found = find_mask(Path(mask), image, mask_suffix)
        if found is not None:
            samples.append(DefectSample(image, found))
        else:
            expected = Path(mask) / f"{image.stem}{mask_suffix}.png"
            bad.handle(
                image,
                DataError(
                    f"defect image {image} has no mask: expected {expected} (data.mask_suffix="
                    f"{mask_suffix!r})."
                ),
            )
    check_defect_count(len(samples), Path(defect))
    n_train = max(1, round(train_fraction * len(samples)))
    return MVTecSplit(
        root=Path(defect).parent,
        category=category,
        defect=defect_name,
        normal_train=tuple(normal_images),
        defect_train=tuple(samples[:n_train]),
        defect_test=tuple(samples[n_train:]),
        normal_test=tuple(test_images),
    )
