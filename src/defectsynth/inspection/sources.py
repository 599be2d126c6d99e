"""Where the studies' defective training images come from.

* a generator checkpoint (``ckpt=``): the study chooses the source images by protocol and
  translates them with the project's synthesis code (``synthesize``), into its run folder;
* a folder from ``src/generate.py`` (``samples=``): used as it is; under protocol=clean its
  ``manifest.csv`` sources are checked against the classifier's test set;
* cut-paste of real training defects onto the same source images (``cutpaste``);
* no input at all: a generator is trained first per product (``ensure_generator``), as
  ``src/tables.py`` does, and reused by later runs with the same settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import compose
from omegaconf import DictConfig, OmegaConf, open_dict

from defectsynth.checkpoint import load_checkpoint
from defectsynth.data.cache import read_mask
from defectsynth.data.datamodule import DefectDataModule
from defectsynth.data.mvtec import MVTecSplit
from defectsynth.data.transforms import EvalTransform
from defectsynth.errors import ConfigError, DataError, DefectSynthError
from defectsynth.generation import datamodule_from
from defectsynth.inspection.cutpaste import METHOD, CutPasteLayout, make_cutpaste_set
from defectsynth.inspection.data import read_png, real_image, real_mask
from defectsynth.inspection.fitting import finish_wandb
from defectsynth.synthesis import (
    DEFAULT_MODEL,
    FLIP_VARIANTS,
    MANIFEST_FIELDS,
    SynthesisLayout,
    import_model_class,
    is_latent,
    load_model,
    read_info,
    read_manifest,
    resolve_device,
    synthesize,
    write_info,
    write_manifest,
)
from defectsynth.utils.io import save_png, write_text

log = logging.getLogger(__name__)

CUT_PASTE = "Cut-paste"
METHOD_TITLES = {  # model class → row name (Table 2's names)
    "DefectGAN": "Proposed approach",
    "CycleGAN4": "CycleGAN (4-channel)",
    "DCGAN4": "DCGAN (4-channel)",
    "CUT": "CUT",
    "NegCUT": "NEGCUT",
    METHOD: CUT_PASTE,
}


@dataclass(frozen=True)
class Input:
    """A generator checkpoint (``kind="ckpt"``) or a folder written by generate.py."""

    kind: str
    path: Path

    @classmethod
    def parse(cls, value: str | Path) -> Input:
        path = Path(value).expanduser()
        if path.is_dir():
            return cls("samples", path)
        if path.is_file():
            return cls("ckpt", path)
        raise ConfigError(
            f"{str(path)!r} does not exist; expected a generator checkpoint (.ckpt) or a folder "
            "written by src/generate.py"
        )

    def describe(self) -> dict[str, Any]:
        """The data the input was made from (checkpoint hyper-parameters or synthesis.json)."""
        if self.kind == "ckpt":
            checkpoint = load_checkpoint(self.path)
            hparams = checkpoint.get("hyper_parameters") or {}
            return {
                "data": dict(checkpoint.get("datamodule_hyper_parameters") or {}),
                "model_class": (checkpoint.get("defectsynth") or {}).get("model_class"),
                "ablation": (hparams.get("ablation") or {}).get("name"),
            }
        info = read_info(self.path)
        return {
            "data": dict(info.get("data") or {}),
            "model_class": info.get("model_class"),
            "ablation": info.get("ablation"),
        }


def per_source_limit(source: Input) -> int | None:
    """How many distinct images a checkpoint's model makes per source image: an
    image-to-image model is deterministic, so its variety is the 4 flips it was trained with;
    a latent or controllable model draws new codes (None: no limit). A samples= folder holds
    what it holds (None here; its size limits it)."""
    if source.kind != "ckpt":
        return None
    class_path = (load_checkpoint(source.path).get("defectsynth") or {}).get("model_class")
    model_class = import_model_class(class_path or DEFAULT_MODEL)
    if not getattr(model_class, "is_image_to_image", True) or getattr(
        model_class, "is_controllable", False
    ):
        return None
    return len(FLIP_VARIANTS)


def method_title(model_class: str | None, ablation: str | None) -> str:
    name = (model_class or "DefectGAN").rsplit(".", 1)[-1]
    title = METHOD_TITLES.get(name, name)
    return title if ablation in (None, "full") else f"{title} ({ablation})"


def slug(text: str) -> str:
    cleaned = "".join(c.lower() if c.isalnum() else "_" for c in text)
    return "_".join(part for part in cleaned.split("_") if part)


@dataclass
class Product:
    """One product/defect pair of the study: its data, its generator and its baselines."""

    datamodule: DefectDataModule
    main: Input
    title: str
    baselines: list[tuple[Input, str]] = field(default_factory=list)
    # the data options recorded with the generator (checkpoint or synthesis.json), before the
    # study's data.* overrides: what decided which real defects trained it
    trained_on: dict[str, Any] = field(default_factory=dict)
    # how the study trained the generator itself (products=, no ckpt=): conf/product name,
    # experiment scale and train.py overrides, so it can retrain it on fewer real defects
    recipe: tuple[str, str, tuple[str, ...]] | None = None

    @property
    def category(self) -> str:
        return self.datamodule.category

    @property
    def defect(self) -> str:
        return self.datamodule.defect

    @property
    def label(self) -> str:
        """As in the paper's tables: ``Tile (crack)``."""
        return f"{self.category.replace('_', ' ').capitalize()} ({self.defect.replace('_', ' ')})"

    @property
    def name(self) -> str:
        return f"{self.category}-{self.defect}"

    @property
    def base_size(self) -> int:
        """The generator's resolution: every image of the study is decoded at it first."""
        return int(self.datamodule.image_size)

    @property
    def gan_split(self) -> MVTecSplit:
        if self.datamodule.split is None:
            self.datamodule.setup()
        assert self.datamodule.split is not None
        return self.datamodule.split


def product_of(main: Input, overrides: dict[str, Any], cache_dir: str | None) -> Product:
    described = main.describe()
    datamodule = datamodule_from(
        {"datamodule_hyper_parameters": described["data"]}, overrides, cache_dir
    )
    datamodule.prepare_data()
    datamodule.setup()
    title = method_title(described["model_class"], described["ablation"])
    return Product(datamodule, main, title, trained_on=dict(described["data"]))


# the data options that decide which real defects trained a generator
SPLIT_OPTIONS = (
    "root",
    "train_fraction",
    "procedural_spec",
    "folders",
    "mask_suffix",
    "image_ext",
    "mask_ext",
    "defect_train_limit",
)


def _split_options(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The split-deciding options after the study's data overrides (as ``datamodule_from``
    applies them: non-null values win, ``root=procedural`` means the built-in data)."""
    merged = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    if merged.get("root") == "procedural":
        merged["root"] = None
    return {k: merged.get(k) for k in SPLIT_OPTIONS}


def _relative(path: Path, root: Path | None) -> str:
    # the same data moved to another folder keeps its names below the root
    try:
        return str(Path(path).relative_to(root)) if root is not None else Path(path).name
    except ValueError:
        return Path(path).name


def check_generator_data(product: Product, protocol: str, cache_dir: str | None) -> None:
    """Under protocol=clean, stop when the study's real test defects may include defects the
    product's own generator was trained on: a ``data.*`` override that changes the split (e.g.
    ``data.train_fraction``) would otherwise move them into the test set silently. The same
    options as for the baselines decide; a changed ``data.root`` alone (the data moved) is
    accepted when the original folder is gone, else the two splits are compared file by file."""
    if protocol != "clean":
        return
    where = f"{product.main.kind}={product.main.path}"
    recorded = product.trained_on
    if not recorded.get("category") or not recorded.get("defect"):
        raise DataError(
            f"{where} does not record the data its generator was trained on, so protocol=clean "
            "cannot keep its training defects out of the test set. Use protocol=paper, or a "
            "checkpoint written by src/train.py."
        )
    if (recorded["category"], recorded["defect"]) != (product.category, product.defect):
        return  # trained on another product: none of its defects is tested here
    theirs = _split_options(recorded, {})
    ours = _split_options(dict(product.datamodule.hparams), {})
    differing = [k for k in SPLIT_OPTIONS if k != "root" and theirs[k] != ours[k]]
    if differing:
        changes = "; ".join(f"data.{k}: {theirs[k]!r} → {ours[k]!r}" for k in differing)
        raise DataError(
            f"{where}: the study's data split differs from the one its generator was trained on "
            f"({changes}), so its training defects may be test defects, which protocol=clean "
            "forbids. Drop the data.* override(s), or use protocol=paper."
        )
    if theirs["root"] == ours["root"]:
        return
    try:
        original = datamodule_from({"datamodule_hyper_parameters": recorded}, {}, cache_dir)
        original.setup()
    except DefectSynthError as err:
        log.warning(
            "%s: the data it was trained on (%s) cannot be read here (%s); assuming "
            "data.root=%s holds the same files, so the same split",
            where,
            theirs["root"] or "procedural",
            err,
            ours["root"] or "procedural",
        )
        return
    assert original.split is not None
    trained = {_relative(s.image, original.split.root) for s in original.split.defect_train}
    split = product.gan_split
    leaked = [s.image for s in split.defect_test if _relative(s.image, split.root) in trained]
    if leaked:
        raise DataError(
            f"{where}: {len(leaked)} real test defect(s) under data.root={ours['root']} have the "
            f"names of defects its generator was trained on under {theirs['root']} (e.g. "
            f"{leaked[0]}): the folder holds other files, so the split moved, which "
            "protocol=clean forbids. Point data.root at the same data, or use protocol=paper."
        )


def attach_baselines(
    products: Sequence[Product],
    baselines: Sequence[Input],
    protocol: str = "clean",
    overrides: dict[str, Any] | None = None,
) -> None:
    """Give each baseline to the product it was trained on (category and defect). Under
    protocol=clean it must have been trained on the same data split as the product's generator:
    otherwise its training defects could be the study's test defects."""
    by_pair = {(p.category, p.defect): p for p in products}
    for baseline in baselines:
        described = baseline.describe()
        pair = (described["data"].get("category"), described["data"].get("defect"))
        if pair not in by_pair:
            raise ConfigError(
                f"baseline {baseline.path} was trained on {pair[0]}/{pair[1]}, which is not a "
                f"product of this study ({sorted(by_pair)})"
            )
        product = by_pair[pair]
        theirs = _split_options(described["data"], overrides or {})
        ours = _split_options(dict(product.datamodule.hparams), {})
        if protocol == "clean" and theirs != ours:
            differing = sorted(k for k in SPLIT_OPTIONS if theirs[k] != ours[k])
            raise DataError(
                f"baseline {baseline.path} was trained on other data than the generator of "
                f"{product.name} (data.{', data.'.join(differing)} differ), so its training "
                "defects may be test defects, which protocol=clean forbids. Retrain it on the "
                "same data, or use protocol=paper."
            )
        title = method_title(described["model_class"], described["ablation"])
        taken = {product.title, CUT_PASTE, *(t for _, t in product.baselines)}
        unique, k = title, 2
        while unique in taken:  # two checkpoints of one method: keep both rows apart
            unique, k = f"{title} #{k}", k + 1
        product.baselines.append((baseline, unique))


# ------------------------------------------------------------------------------ synthetic sets
@dataclass
class SyntheticSet:
    """Defective training images (HxWx3 uint8, any size), masks (HxW {0, 1}) or None, and the
    source image of each item ("" for items sampled from a latent code)."""

    title: str
    folder: Path
    images: list[np.ndarray]
    masks: list[np.ndarray] | None
    sources: list[str]
    info: dict[str, Any]
    # the study settings that made it (see ``cache``); the runs trained on it inherit them
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return slug(self.title)


def read_set(folder: Path, title: str) -> SyntheticSet:
    """Read a folder written by generate.py (or by ``make_cutpaste_set``)."""
    info = read_info(folder)
    rows = read_manifest(folder)
    if not rows:
        raise DataError(f"{folder}/manifest.csv lists no images")
    images = [read_png(folder / r["image"]) for r in rows]
    masks = None
    if all(r.get("mask") for r in rows):
        masks = [read_mask(folder / r["mask"]) for r in rows]
    return SyntheticSet(title, folder, images, masks, [r.get("source", "") for r in rows], info)


def finished(folder: Path) -> bool:
    """A synthetic set in ``folder`` was written to the end (its manifest comes last)."""
    return (folder / "synthesis.json").is_file() and (folder / "manifest.csv").is_file()


def generate_set(
    ckpt: Path,
    sources: Sequence[Path],
    product: Product,
    out: Path,
    options: DictConfig,
    title: str,
    n_per_image: int | None = None,
) -> SyntheticSet:
    """Translate ``sources`` with the generator of ``ckpt`` (``options``: the synthesis keys
    n_per_image, threshold, batch_size, precision, device, seed; ``n_per_image`` overrides
    the first) into ``out``."""
    per_image = int(options.n_per_image) if n_per_image is None else int(n_per_image)
    if not finished(out):
        device = resolve_device(options.device)
        model, checkpoint = load_model(ckpt, device)
        size = product.base_size
        transform = EvalTransform(size)
        cache = product.datamodule.cache
        batch = torch.stack([transform(real_image(cache, p, size))["image"] for p in sources])
        layout = SynthesisLayout(out, product.category, product.defect)
        latent, seed = is_latent(model), int(options.get("seed") or 0)
        start = time.perf_counter()
        rows = synthesize(
            model,
            batch,
            [str(p) for p in sources],
            layout,
            n_per_image=per_image,
            threshold=float(options.threshold),
            batch_size=int(options.batch_size),
            device=device,
            precision=str(options.precision),
            seed=seed,
        )
        hparams = checkpoint.get("hyper_parameters") or {}
        write_info(
            layout,
            {
                "ckpt": str(Path(ckpt).resolve()),
                "model_class": (checkpoint.get("defectsynth") or {}).get("model_class"),
                "epoch": checkpoint.get("epoch"),
                "ablation": (hparams.get("ablation") or {}).get("name"),
                "category": product.category,
                "defect": product.defect,
                "data": {k: v for k, v in product.datamodule.hparams.items() if k != "cache_dir"},
                "source": "inspection study (sources chosen by protocol)",
                "n_sources": len(sources),
                "n_per_image": per_image,
                "n_images": len(rows),
                "seed": seed if latent else None,
                "threshold": float(options.threshold),
                "image_size": int(model.image_size) if latent else size,
                "seconds": round(time.perf_counter() - start, 3),
            },
        )
    return read_set(out, title)


def cutpaste_set(
    targets: Sequence[str],
    product: Product,
    donors: Sequence,
    out: Path,
    seed: int,
    edge_alpha: float,
) -> SyntheticSet:
    """Cut-paste items onto ``targets`` (one item per entry; the defect-free image paths of the
    generated set, so both sets have the same sources and size)."""
    if not finished(out):
        size, cache = product.base_size, product.datamodule.cache
        images = [real_image(cache, Path(t), size) for t in targets]
        donor_arrays = [
            (real_image(cache, d.image, size), real_mask(cache, d.mask, size)) for d in donors
        ]
        usable = [(i, d) for i, d in enumerate(donor_arrays) if d[1].any()]
        if not usable:
            raise DataError(
                f"every training defect of {product.name} has an empty mask at {size} px; "
                "cut-paste has nothing to paste"
            )
        make_cutpaste_set(
            images,
            list(targets),
            [d for _, d in usable],
            [str(donors[i].image) for i, _ in usable],
            CutPasteLayout(out, product.category, product.defect),
            seed=seed,
            edge_alpha=edge_alpha,
            info={
                "data": {k: v for k, v in product.datamodule.hparams.items() if k != "cache_dir"}
            },
        )
    return read_set(out, CUT_PASTE)


COMPOSITE_SUFFIX = " (mask-composited)"


def composite_set(made: SyntheticSet, product: Product, out: Path) -> SyntheticSet:
    """The generator's images pasted back onto their own source images through their soft
    masks, x·(1 − m) + G(x)·m, with the same binary masks: the defects the generator drew,
    without whatever it changed outside its mask. Needs soft masks and source images."""
    title = made.title + COMPOSITE_SUFFIX
    if finished(out):
        return read_set(out, title)
    rows = read_manifest(made.folder)
    if not all(
        r.get("soft_mask") and r.get("source") and Path(r["source"]).is_file() for r in rows
    ):
        raise DataError(
            f"composite=true needs soft masks and readable source images; {made.folder} "
            "lacks them (a model without a mask output, or samples from a latent code)"
        )
    size, cache = product.base_size, product.datamodule.cache
    layout = SynthesisLayout(out, product.category, product.defect)
    layout.check_writable()
    written = []
    for row in rows:
        index = int(row["index"])
        fake = read_png(made.folder / row["image"]).astype(np.float32)
        source = real_image(cache, Path(row["source"]), fake.shape[0]).astype(np.float32)
        soft = read_png(made.folder / row["soft_mask"], grayscale=True).astype(np.float32) / 255
        alpha = soft[..., None]
        image = np.clip(np.rint(source * (1 - alpha) + fake * alpha), 0, 255).astype(np.uint8)
        image_path, mask_path, soft_path = layout.files(index)
        save_png(read_png(made.folder / row["mask"], grayscale=True), mask_path)
        save_png(np.rint(soft * 255).astype(np.uint8), soft_path)
        save_png(image, image_path)
        written.append(
            {
                **{k: row.get(k, "") for k in MANIFEST_FIELDS},
                "image": str(image_path.relative_to(out)),
                "mask": str(mask_path.relative_to(out)),
                "soft_mask": str(soft_path.relative_to(out)),
            }
        )
    write_manifest(written, layout.manifest)
    write_info(layout, {**made.info, "composited_from": str(made.folder), "image_size": size})
    return read_set(out, title)


# ------------------------------------------------------------------------------ generators
def _generator_folder(root: Path, product: str, scale: str, overrides: Sequence[str]) -> Path:
    tag = hashlib.sha1(json.dumps([product, scale, *overrides]).encode()).hexdigest()[:8]
    return root / f"{product}-{scale}-{tag}"


def ensure_generator(
    product: str, scale: str, overrides: Sequence[str], root: Path, cache_dir: str | None
) -> Path:
    """``checkpoints/last.ckpt`` of the proposed model trained on the procedural (or configured)
    ``product`` with ``experiment=<scale>``; trained now unless a finished run with the same
    settings exists under ``root`` (an interrupted one is resumed)."""
    from defectsynth.training import train as train_job

    folder = _generator_folder(root, product, scale, overrides)
    ckpt = folder / "checkpoints" / "last.ckpt"
    done = folder / "generator.json"
    if done.is_file() and ckpt.is_file():
        log.info("reusing the generator in %s", folder)
        return ckpt
    cfg = compose("train", overrides=[f"product={product}", f"experiment={scale}", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(folder)
        if cache_dir is not None:
            cfg.paths.cache_dir = str(cache_dir)
        if ckpt.is_file():
            cfg.ckpt_path = str(ckpt)
    log.info("training the %s generator (experiment=%s) in %s", product, scale, folder)
    start = time.perf_counter()
    train_job(cfg)
    finish_wandb()
    record = {
        "product": product,
        "scale": scale,
        "overrides": list(overrides),
        "seconds": round(time.perf_counter() - start, 1),
        "config": OmegaConf.to_container(cfg, resolve=False),
    }
    write_text(json.dumps(record, indent=2, default=str) + "\n", done)
    return ckpt
