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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
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
    #: files of the image folders that were left out on purpose, one "<n> <why>" per reason
    ignored: tuple[str, ...] = ()

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


def image_extensions(value: str | Sequence[str] | None, option: str) -> frozenset[str] | None:
    """``data.image_ext`` / ``data.mask_ext`` as a set of lower-case suffixes with their dot
    (``jpg``, ``.JPG`` and ``[.jpg, .jpeg]`` are accepted); None when unset."""
    if value is None or value == "" or (not isinstance(value, str) and not list(value)):
        return None
    items = [value] if isinstance(value, str) else list(value)
    out = set()
    for item in items:
        ext = str(item).strip().lower()
        ext = ext if ext.startswith(".") else f".{ext}"
        if ext not in IMAGE_SUFFIXES:
            raise ConfigError(
                f"{option}={value!r}: {ext!r} is not an image extension; expected one or a list "
                f"of {sorted(IMAGE_SUFFIXES)}."
            )
        out.add(ext)
    return frozenset(out)


def list_images(
    folder: Path, bad: BadFiles | None = None, extensions: Iterable[str] | None = None
) -> list[Path]:
    """Image files of ``folder`` sorted by name (only ``extensions`` when given). Hidden files
    (.DS_Store, ._*) and other suffixes (Thumbs.db, notes) are ignored; a broken symbolic link
    is a bad file."""
    if not folder.is_dir():
        return []
    wanted = IMAGE_SUFFIXES if extensions is None else frozenset(extensions)
    images = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.suffix.lower() not in wanted:
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
    refuse_same_stems(root / category / "train" / "good", normal_train)
    if not normal_train:
        raise DataError(f"no images in {root / category / 'train' / 'good'}; expected PNG files.")
    samples = []
    defect_images = list_images(root / category / "test" / defect, bad)
    refuse_same_stems(root / category / "test" / defect, defect_images)
    for image in defect_images:
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


def limit_defect_train(split: MVTecSplit, limit: int | None) -> MVTecSplit:
    """Keep only the first ``limit`` training defects (by file name) of each defect type; the
    rest are dropped, not moved: the test defects stay the same. ``None`` keeps them all. The
    inspection study retrains generators on such reduced sets (its data-efficiency curve)."""
    if limit is None:
        return split
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(
            f"data.defect_train_limit={limit!r}; expected a positive number of training defects "
            "per type, or null for all of them"
        )
    kept: list[DefectSample] = []
    seen: dict[str | None, int] = {}
    for sample in split.defect_train:
        if seen.get(sample.defect, 0) < limit:
            kept.append(sample)
            seen[sample.defect] = seen.get(sample.defect, 0) + 1
    dropped = len(split.defect_train) - len(kept)
    ignored = (*split.ignored, f"{dropped} training defect(s) beyond data.defect_train_limit")
    return replace(split, defect_train=tuple(kept), ignored=ignored if dropped else split.ignored)


def check_defect_count(n: int, folder: Path) -> None:
    if n < MIN_DEFECT_IMAGES:
        raise DataError(
            f"{folder} holds {n} usable image(s) with masks; at least {MIN_DEFECT_IMAGES} "
            "defective images are needed to train and test."
        )


def find_mask(
    folder: Path,
    image: Path,
    suffix: str,
    extensions: Iterable[str] | None = None,
    exclude: frozenset[Path] = frozenset(),
) -> Path | None:
    """The mask of ``image`` in ``folder``: same stem plus ``suffix``, any image extension (or
    one of ``extensions``); a file of ``exclude`` (resolved paths of images) is never taken as a
    mask."""
    allowed = IMAGE_SUFFIXES if extensions is None else frozenset(extensions)
    for extension in (".png", *sorted(IMAGE_SUFFIXES - {".png"})):
        if extension not in allowed:
            continue
        candidate = folder / f"{image.stem}{suffix}{extension}"
        if candidate.is_file() and candidate.resolve() not in exclude:
            return candidate
    return None


# how many colliding stems an error message shows
_SHOWN = 5


def _shown(items: Sequence[str]) -> str:
    more = f" … ({len(items)} in all)" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def _same_stem_files(files: Sequence[Path]) -> dict[str, list[Path]]:
    by_stem: dict[str, list[Path]] = {}
    for p in files:
        by_stem.setdefault(p.stem, []).append(p)
    return {stem: group for stem, group in by_stem.items() if len(group) > 1}


def refuse_same_stems(folder: Path, files: Sequence[Path]) -> None:
    """An MVTec AD folder with two image files of one stem (``000.png`` and ``000.jpg``) is
    ambiguous — which one is the sample, and which one does its ground-truth mask belong to?
    Stop naming them rather than train on both."""
    collisions = _same_stem_files(files)
    if collisions:
        shown = [" + ".join(p.name for p in collisions[s]) for s in sorted(collisions)]
        raise DataError(
            f"{folder} holds {len(collisions)} file stem(s) with several image files "
            f"({_shown(shown)}); an MVTec AD folder has one image per stem (masks live in "
            "ground_truth/). Remove or move the extra files."
        )


def folder_images(
    option: str, folder: Path, image_ext: frozenset[str] | None, bad: BadFiles
) -> tuple[list[Path], list[Path]]:
    """The images of a user folder and the image files left out (not ``data.image_ext``).
    Without ``data.image_ext``, two files of one stem (``001.jpg`` and ``001.png``: an image
    and its mask, most often) stop with an error: which one is the image is never guessed."""
    files = list_images(folder, bad)
    if image_ext is not None:
        return [p for p in files if p.suffix.lower() in image_ext], [
            p for p in files if p.suffix.lower() not in image_ext
        ]
    collisions = _same_stem_files(files)
    if collisions:
        stems = sorted(collisions)
        shown = [" + ".join(p.name for p in collisions[s]) for s in stems]
        found = sorted({p.suffix.lower() for group in collisions.values() for p in group})
        # masks are most often PNG; the example only shows the syntax, nothing is chosen
        example = [*[e for e in found if e != ".png"][:1], ".png"] if ".png" in found else found
        raise DataError(
            f"{option}={str(folder)!r} holds {len(stems)} file stem(s) with several image "
            f"files ({_shown(shown)}): most likely images with their masks beside them, and a "
            "mask must never be taken as an image. Set data.image_ext to the images' extension "
            f"and data.mask_ext to the masks' (extensions found: {found}; e.g. "
            f"data.image_ext={example[0]} data.mask_ext={example[-1]}), or move the masks to "
            "their own folder."
        )
    return files, []


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
    image_ext: str | Sequence[str] | None = None,
    mask_ext: str | Sequence[str] | None = None,
) -> MVTecSplit:
    """A product in plain folders (``data=folder``): defect-free images, defective images and
    their masks (matched by file stem + ``mask_suffix``, with one of ``mask_ext`` when given).
    Defect images split as in the paper; the defect-free test set is ``normal_test`` or,
    without it, the last ``normal_test_fraction`` of the defect-free images by name.

    A mask is never an image: ``image_ext`` restricts the images to those extensions; without
    it, a folder with two image files of one stem is an error, and so are image and mask
    folders that coincide with an empty ``mask_suffix``. A file that is the mask of a defect
    image is left out of the images; what was left out is listed in ``ignored``."""
    bad = bad or BadFiles()
    images_ext = image_extensions(image_ext, "data.image_ext")
    masks_ext = image_extensions(mask_ext, "data.mask_ext")
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
    mask_dir = Path(mask)
    if normal_test is not None:
        check_root(Path(normal_test))
    image_folders = {
        "data.folders.normal": Path(normal),
        "data.folders.defect": Path(defect),
        **({"data.folders.normal_test": Path(normal_test)} if normal_test is not None else {}),
    }
    listed = {
        option: folder_images(option, folder, images_ext, bad)
        for option, folder in image_folders.items()
    }
    # after the listing: a same-stem collision names the stems, which says more
    if Path(defect).resolve() == mask_dir.resolve() and not mask_suffix and images_ext is None:
        raise ConfigError(
            f"data.folders.defect and data.folders.mask are the same folder ({defect}) and "
            "data.mask_suffix is empty, so every image could be taken as its own mask. Set "
            "data.image_ext and data.mask_ext (e.g. data.image_ext=.jpg data.mask_ext=.png), or "
            "data.mask_suffix to what the mask names add (widget_017.png → widget_017_mask.png)."
        )

    defect_images, _ = listed["data.folders.defect"]
    found_masks = {
        image: find_mask(
            mask_dir, image, mask_suffix, masks_ext, exclude=frozenset({image.resolve()})
        )
        for image in defect_images
    }
    # resolved: the same folder may be spelt two ways (a relative path, a symbolic link)
    masks = frozenset(m.resolve() for m in found_masks.values() if m is not None)
    ignored: list[str] = []
    # a defect image that is another's mask (``001.png`` beside ``001_mask.png`` in one folder
    # with data.mask_suffix=_mask) is a mask, not an image
    beside = [p for p in defect_images if p.resolve() in masks]
    if beside:
        ignored.append(
            f"{len(beside)} mask(s) beside the images in data.folders.defect "
            f"(data.mask_suffix={mask_suffix!r})"
        )
    for option, (images, left_out) in listed.items():
        as_masks = sum(1 for p in left_out if p.resolve() in masks)
        other = len(left_out) - as_masks
        if as_masks:
            ignored.append(f"{as_masks} mask(s) beside the images in {option}")
        if other:
            ignored.append(
                f"{other} file(s) in {option} not data.image_ext={sorted(images_ext or ())}"
            )
        stray = [p.name for p in images if p.resolve() in masks]
        stray = stray if option != "data.folders.defect" else []
        if stray:
            raise DataError(
                f"{option}={str(image_folders[option])!r} holds files that are also masks of "
                f"defect images ({_shown(stray)}); a mask must never be taken as an image. "
                "Point data.folders.mask at the masks' own folder, or set data.image_ext / "
                "data.mask_ext to tell images and masks apart."
            )

    normal_images = listed["data.folders.normal"][0]
    if normal_test is not None:
        test_images = listed["data.folders.normal_test"][0]
    else:
        n_test = round(normal_test_fraction * len(normal_images)) if len(normal_images) > 1 else 0
        normal_images, test_images = (
            normal_images[: len(normal_images) - n_test],
            normal_images[len(normal_images) - n_test :],
        )
    if not normal_images:
        raise DataError(f"no defect-free images in data.folders.normal={str(normal)!r}.")
    samples = []
    for image in defect_images:
        if image.resolve() in masks:
            continue
        found = found_masks[image]
        if found is not None:
            samples.append(DefectSample(image, found))
        else:
            extension = sorted(masks_ext)[0] if masks_ext else ".png"
            expected = mask_dir / f"{image.stem}{mask_suffix}{extension}"
            options = f"data.mask_suffix={mask_suffix!r}"
            if masks_ext is not None:
                options += f", data.mask_ext={sorted(masks_ext)}"
            bad.handle(
                image,
                DataError(f"defect image {image} has no mask: expected {expected} ({options})."),
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
        ignored=tuple(ignored),
    )
