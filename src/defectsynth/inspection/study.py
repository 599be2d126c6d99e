"""The jobs behind ``src/inspection.py`` (Table 4) and ``src/segmentation.py``.

Per product and split: choose the split by protocol, make the synthetic sets (the generator's,
cut-paste, baselines'), then per backbone (or U-Net), training set and seed: fit with Lightning,
keep the best validation epoch, measure on the real test set. Under protocol=clean the same
loop also trains the real-defect rows (``real``: the real training defects alone and with N
synthetic ones of each generator; ``prepare_real``), reported in a third table and a curve.
A run whose ``metrics.json`` exists is reused, so an interrupted study resumes where it
stopped (rerun with ``hydra.run.dir=<its folder>``) — only with the settings that made it
(``cache``).

Run folder::

    table4.md / table4.csv / table4.json          (segmentation.{md,csv,json})
    <category>-<defect>/split<seed>/splits.json   every file of every part of the split
    <category>-<defect>/split<seed>/synthetic/<set>/  synthetic sets (generate.py layout)
    <category>-<defect>/split<seed>/real_k<k>/      a reduced real set's split and sets
    <category>-<defect>/runs/<net>-<set>-seed<k>/metrics.json (+ logger folders)
    <category>-<defect>_real_vs_synthetic.png      the real-vs-synthetic curve
"""

from __future__ import annotations

import gc
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from defectsynth import config as _config  # noqa: F401  (registers resolvers)
from defectsynth.data.mvtec import DefectSample
from defectsynth.errors import ConfigError, DataError
from defectsynth.evaluation import csv_text
from defectsynth.inspection.cache import check_reuse, claim_folder, stamp
from defectsynth.inspection.classifier import BACKBONES, DefectClassifier, check_pretrained_weights
from defectsynth.inspection.data import (
    LabelledImages,
    StudyDataModule,
    real_image,
    real_mask,
    to_image_tensor,
    to_mask_tensor,
)
from defectsynth.inspection.fitting import (
    finish_wandb,
    fit,
    log_table_to_wandb,
    quiet_lightning,
    run_loggers,
)
from defectsynth.inspection.metrics import (
    Predictions,
    always_defect_free,
    classification_metrics,
    format_interval,
    format_mean_std,
    mean_of,
    pixel_states,
    pooled_classification,
    pooled_segmentation,
    seed_interval,
    segmentation_metrics,
    summarize,
)
from defectsynth.inspection.real import (
    CurvePoint,
    RealDefects,
    RealMix,
    check_real_rows,
    curve_points,
    make_mixes,
    plot_curves,
    reduced,
    split_real,
)
from defectsynth.inspection.segmenter import DefectSegmenter
from defectsynth.inspection.sources import (
    CUT_PASTE,
    SPLIT_OPTIONS,
    Input,
    Product,
    SyntheticSet,
    attach_baselines,
    check_generator_data,
    composite_set,
    cutpaste_set,
    ensure_generator,
    finished,
    generate_set,
    per_source_limit,
    product_of,
    read_set,
    slug,
)
from defectsynth.inspection.splits import (
    PROTOCOL_TEXT,
    InspectionSplit,
    check_protocol,
    check_synthetic_sources,
    make_split,
    split_synthetic,
)
from defectsynth.utils.io import atomic_path, check_output_dir, write_text

log = logging.getLogger(__name__)
TRIVIAL = "Always defect-free"
CLASSIFICATION_COLUMNS = (  # key, header, scale, digits
    ("accuracy", "Accuracy (%)", 100.0, 2),
    ("precision", "Precision", 1.0, 2),
    ("recall", "Recall", 1.0, 2),
    ("f1", "F1", 1.0, 2),
    ("auroc", "AUROC", 1.0, 3),
    ("precision_macro", "Precision (macro)", 1.0, 2),
    ("recall_macro", "Recall (macro)", 1.0, 2),
)
SEGMENTATION_COLUMNS = (
    ("pixel_auroc", "Pixel AUROC", 1.0, 3),
    ("pixel_ap", "Pixel AP", 1.0, 3),
    ("pixel_f1_max", "Pixel F1-max", 1.0, 3),
    ("iou", "IoU@0.5", 1.0, 3),
    ("image_auroc", "Image AUROC", 1.0, 3),
)


# ------------------------------------------------------------------------------ inputs
def _as_list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple, ListConfig)):
        return [str(v) for v in value]
    return [str(value)]


def _input(value: str, kind: str) -> Input:
    parsed = Input.parse(value)
    if parsed.kind != kind:
        expected = "a checkpoint file" if kind == "ckpt" else "a folder written by src/generate.py"
        raise ConfigError(f"{kind}={value!r} is not {expected}")
    return parsed


def resolve_products(cfg: DictConfig) -> list[Product]:
    """One product per ``ckpt``/``samples`` entry; without either, one generator is trained (or
    reused) per entry of ``products``."""
    if cfg.get("input"):
        raise ConfigError(
            "input= is not used here: the study chooses the defect-free source images itself, "
            "by protocol (split.synthetic_sources); give ckpt= or samples="
        )
    ckpts, samples = _as_list(cfg.get("ckpt")), _as_list(cfg.get("samples"))
    if ckpts and samples:
        raise ConfigError("give ckpt=<checkpoint(s)> or samples=<folder(s)>, not both")
    inputs = [_input(c, "ckpt") for c in ckpts] + [_input(s, "samples") for s in samples]
    recipes: list[tuple[str, str, tuple[str, ...]] | None] = [None] * len(inputs)
    if not inputs:
        if cfg.data.get("category") or cfg.data.get("defect"):
            raise ConfigError(
                "product=/data.category= override the data of a given ckpt= or samples=; to "
                "train generators for the study, list the products instead: products=[wood]"
            )
        generator = cfg.generator
        inputs = [
            Input(
                "ckpt",
                ensure_generator(
                    product,
                    str(generator.scale),
                    list(generator.overrides),
                    Path(generator.dir),
                    cfg.paths.cache_dir,
                ),
            )
            for product in cfg.products
        ]
        recipes = [
            (str(product), str(generator.scale), tuple(str(o) for o in generator.overrides))
            for product in cfg.products
        ]
    overrides = OmegaConf.to_container(cfg.data, resolve=True)
    products = [product_of(i, overrides, cfg.paths.cache_dir) for i in inputs]
    for product, recipe in zip(products, recipes, strict=True):
        product.recipe = recipe
    for product in products:
        check_generator_data(product, str(cfg.protocol), cfg.paths.cache_dir)
    names = [p.name for p in products]
    if len(set(names)) < len(names):
        raise ConfigError(f"two inputs are for the same product ({names}); give one each")
    baselines = [Input.parse(b) for b in _as_list(cfg.get("baselines"))]
    attach_baselines(products, baselines, str(cfg.protocol), overrides)
    return products


def split_seed_of(cfg: DictConfig, seed: int) -> int:
    """``split.seed`` null: every training seed draws its own split; else one fixed split."""
    return int(seed) if cfg.split.seed is None else int(cfg.split.seed)


# ------------------------------------------------------------------------------ cache keys
# the product's data options that decide its images and split (see ``cache``)
DATA_SETTINGS = (
    "category",
    "defect",
    "image_size",
    *SPLIT_OPTIONS,
    "on_bad_file",
    "mask_threshold",
)
# options added later: recorded only when set, so folders written before them still resume
UNSET_UNRECORDED = ("image_ext", "mask_ext", "mask_threshold", "defect_train_limit")
# how a network is trained, not what: resuming on another device or with a progress bar
# reuses the results
RUNTIME_OPTIONS = ("accelerator", "progress_bar")
# network options added later, recorded only when they differ from the behaviour before them,
# so folders written earlier still resume
LATER_DEFAULTS = {"select": "loss"}


def split_settings(cfg: DictConfig, product: Product, split_seed: int) -> dict[str, Any]:
    """What decides a split of ``product`` (keys everything cached under its split folder)."""
    data = product.datamodule.hparams
    return {
        "protocol": str(cfg.protocol),
        "split.seed": split_seed,
        "split.normal": list(cfg.split.normal),
        "split.synthetic_sources": str(cfg.split.synthetic_sources),
        **{
            f"data.{k}": data.get(k)
            for k in DATA_SETTINGS
            if k not in UNSET_UNRECORDED or data.get(k) is not None
        },
    }


def input_settings(source: Input) -> dict[str, Any]:
    path = source.path.resolve()
    settings: dict[str, Any] = {"input": str(path)}
    if source.kind == "ckpt":
        # a checkpoint rewritten in place (a generator trained on) makes other images
        stat = path.stat()
        settings.update({"input.bytes": stat.st_size, "input.mtime_ns": stat.st_mtime_ns})
    return settings


def run_settings(
    cfg: DictConfig, kind: str, network: str, synthetic: SyntheticSet | RealMix, seed: int
) -> dict[str, Any]:
    """What decides one run's ``metrics.json``: its training set's settings, the network, the
    seed and the training options (``train.*`` or ``segmenter.*``)."""
    prefix = "segmenter" if kind == "segmentation" else "train"
    options = OmegaConf.to_container(cfg[prefix], resolve=True)
    assert isinstance(options, dict)
    settings = {
        **synthetic.settings,
        # "run.": not options; the set's own "seed" is the synthesis seed
        "run.network": network,
        "run.seed": seed,
        "split.synthetic_val": float(cfg.split.synthetic_val),
        **{
            f"{prefix}.{k}": v
            for k, v in options.items()
            if k not in RUNTIME_OPTIONS and LATER_DEFAULTS.get(k, object()) != v
        },
    }
    if kind == "classification":
        settings["classifier.pretrained"] = bool(cfg.classifier.pretrained)
    else:
        settings["pooled.bins"] = int(cfg.pooled.bins)  # the stored pixel states
    return settings


# ------------------------------------------------------------------------------ data
@dataclass
class StudyData:
    split: InspectionSplit
    # the product's generator first, then (composite=true) its mask-composited images,
    # cut-paste, the baselines
    sets: list[SyntheticSet]


def _synthetic(
    cfg: DictConfig,
    source: Input,
    title: str,
    product: Product,
    split: InspectionSplit,
    out: Path,
    base: dict[str, Any],
    n_per_image: int | None = None,
    name: str | None = None,
) -> SyntheticSet:
    """The set of ``source`` (a checkpoint translates the split's source images into
    ``<out>/synthetic/<name or slug(title)>``, ``n_per_image`` each — default
    ``cfg.n_per_image``; a folder is read as it is), keyed by its settings."""
    settings = {**base, **input_settings(source)}
    if source.kind == "ckpt":
        folder = out / "synthetic" / (name or slug(title))
        per_image = int(cfg.n_per_image) if n_per_image is None else int(n_per_image)
        settings.update(
            n_per_image=per_image,
            threshold=float(cfg.threshold),
            seed=int(cfg.get("seed") or 0),
            precision=str(cfg.precision),
        )
        claim_folder(folder, settings, finished(folder))
        made = generate_set(
            source.path, split.synthesis_sources, product, folder, cfg, title, per_image
        )
    else:
        made = read_set(source.path, title)
        pair = (made.info.get("category"), made.info.get("defect"))
        if pair != (product.category, product.defect):
            raise DataError(f"samples={source.path} holds {pair[0]}/{pair[1]}, not {product.name}")
    made.settings = settings
    return made


def prepare(cfg: DictConfig, product: Product, split_seed: int, out: Path) -> StudyData:
    """The split of ``product`` and every synthetic set, checked against the protocol."""
    split = make_split(
        product.gan_split,
        cfg.protocol,
        split_seed,
        tuple(cfg.split.normal),
        cfg.split.synthetic_sources,
    )
    base = split_settings(cfg, product, split_seed)
    splits_file = out / "splits.json"
    if splits_file.is_file():  # a resumed folder: its cached sets and runs rest on this split
        check_reuse(splits_file, json.loads(splits_file.read_text()).get("settings"), base)
    write_text(json.dumps({**split.to_json(), **stamp(base)}, indent=2) + "\n", splits_file)
    main = _synthetic(cfg, product.main, product.title, product, split, out, base)
    check_synthetic_sources(main.sources, split, str(product.main.path))
    sets = [main]
    if cfg.get("composite"):
        folder = out / "synthetic" / f"{slug(main.title)}_composite"
        settings = {**main.settings, "composite": True}
        claim_folder(folder, settings, finished(folder))
        sets.append(composite_set(main, product, folder))
        sets[-1].settings = settings
    if cfg.cut_paste.enabled:
        # the same source images (and count) as the generator's set: only the defects differ
        if main.sources and all(s and Path(s).is_file() for s in main.sources):
            targets = list(main.sources)
        else:
            n = int(cfg.n_per_image)
            targets = [str(p) for p in split.synthesis_sources for _ in range(n)]
        folder = out / "synthetic" / slug(CUT_PASTE)
        edge_alpha = float(cfg.cut_paste.edge_alpha)
        # pasted onto the generator set's sources: keyed by what made those too
        settings = {
            **main.settings,
            "n_per_image": int(cfg.n_per_image),
            "cut_paste.edge_alpha": edge_alpha,
        }
        claim_folder(folder, settings, finished(folder))
        pasted = cutpaste_set(targets, product, split.donors, folder, split_seed, edge_alpha)
        pasted.settings = settings
        sets.append(pasted)
    for baseline, title in product.baselines:
        made = _synthetic(cfg, baseline, title, product, split, out, base)
        check_synthetic_sources(made.sources, split, str(baseline.path))
        sets.append(made)
    log.info(
        "%s split %d (%s): %s; synthetic sets: %s",
        product.name,
        split_seed,
        split.protocol,
        split.counts(),
        ", ".join(f"{s.title} ({len(s.images)})" for s in sets),
    )
    return StudyData(split, sets)


# ------------------------------------------------------------------------------ real rows
REAL_BACKBONES = ("all", "first")


@dataclass
class RealPlan:
    """The real rows of one product and split (``real``), and what the tables say about them."""

    real: RealDefects
    mixes: list[RealMix]
    notes: list[str] = field(default_factory=list)


def real_rows_enabled(cfg: DictConfig) -> bool:
    """Real rows run under protocol=clean only: under ``paper`` the test set holds every real
    defect, so a row trained on the real training defects would be tested on them."""
    return bool(cfg.real.enabled) and str(cfg.protocol) == "clean"


def _int_list(value: Any, option: str, minimum: int) -> list[int]:
    items = _as_list(value)
    try:
        numbers = [int(v) for v in items]
    except ValueError:
        numbers = []
    if len(numbers) != len(items) or any(n < minimum for n in numbers):
        raise ConfigError(f"{option}={items}; expected a list of whole numbers ≥ {minimum}")
    return numbers


def real_ratios(cfg: DictConfig) -> list[int]:
    """The synthetic-per-real ratios of the full rows (0, the reference, always among them)."""
    return sorted({0, *_int_list(cfg.real.ratios, "real.ratios", 0)})


def real_counts(cfg: DictConfig) -> list[int]:
    return sorted(set(_int_list(cfg.real.counts, "real.counts", 1)))


def check_real_options(cfg: DictConfig, kind: str, seeds: Sequence[int]) -> None:
    """The real.* options, before any work."""
    real = cfg.real
    real_ratios(cfg)
    real_counts(cfg)
    real_metrics(cfg, kind)
    if int(real.count_ratio) < 1:
        raise ConfigError(f"real.count_ratio={real.count_ratio}; expected a ratio ≥ 1")
    if not 0.0 <= float(real.val) < 1.0:
        raise ConfigError(f"real.val={real.val}; expected a fraction in [0, 1)")
    if str(real.backbones) not in REAL_BACKBONES:
        raise ConfigError(f"real.backbones={real.backbones}; expected one of {REAL_BACKBONES}")
    if real.seeds is None:
        return
    chosen = _int_list(real.seeds, "real.seeds", -(2**31))
    missing = sorted(set(chosen) - set(seeds))
    if missing or not chosen:
        raise ConfigError(
            f"real.seeds={chosen}: expected some of seeds={list(seeds)} (null: all of them; "
            "real.enabled=false: no real rows)"
        )


def real_seeds(cfg: DictConfig, seeds: Sequence[int]) -> list[int]:
    if cfg.real.seeds is None:
        return list(seeds)
    return [int(s) for s in _as_list(cfg.real.seeds)]


def real_metrics(cfg: DictConfig, kind: str) -> list[str]:
    """The real-vs-synthetic table's metrics; the first is plotted."""
    columns = SEGMENTATION_COLUMNS if kind == "segmentation" else CLASSIFICATION_COLUMNS
    known = [key for key, *_ in columns]
    chosen = _as_list(cfg.real.metrics) or (
        ["pixel_ap", "iou"] if kind == "segmentation" else ["auroc", "f1"]
    )
    unknown = [m for m in chosen if m not in known]
    if unknown:
        raise ConfigError(f"real.metrics: {unknown} unknown here; choose from {known}")
    return chosen


def _checkpoint_pool(
    cfg: DictConfig,
    source: Input,
    title: str,
    product: Product,
    split: InspectionSplit,
    out: Path,
    base: dict[str, Any],
    needed: int,
    existing: SyntheticSet | None,
) -> tuple[SyntheticSet, str]:
    """Enough items of one generator for the largest ratio — as many as it can make without
    repeating one: ⌈needed / sources⌉ per source image, at most its flips for an
    image-to-image model. The study's own set is reused when it is at least as large."""
    n_sources = len(split.synthesis_sources)
    if source.kind != "ckpt":
        assert existing is not None
        return existing, f"the folder {source.path} holds {len(existing.images)} images"
    limit = per_source_limit(source)
    per_image = max(1, math.ceil(needed / n_sources))
    if limit is not None:
        per_image = min(per_image, limit)
    text = (
        f"{title} makes at most {limit} distinct images per source image (its flips) × "
        f"{n_sources} source images"
        if limit is not None
        else ""
    )
    if existing is not None and len(existing.images) >= per_image * n_sources:
        return existing, text
    made = _synthetic(
        cfg, source, title, product, split, out, base, per_image, f"{slug(title)}_x{per_image}"
    )
    return made, text


def _cut_paste_pool(
    cfg: DictConfig,
    product: Product,
    split: InspectionSplit,
    donors: Sequence[DefectSample],
    out: Path,
    base: dict[str, Any],
    needed: int,
) -> SyntheticSet:
    """Cut-paste items of the real rows: pasted from their real *training* defects only (a
    validation defect pasted into training would leak into model selection)."""
    n_sources = len(split.synthesis_sources)
    per_image = max(1, math.ceil(needed / n_sources))
    targets = [str(p) for p in split.synthesis_sources for _ in range(per_image)]
    folder = out / "synthetic" / f"cut_paste_real_x{per_image}"
    edge_alpha = float(cfg.cut_paste.edge_alpha)
    settings = {
        **base,
        "n_per_image": per_image,
        "cut_paste.edge_alpha": edge_alpha,
        "cut_paste.donors": [str(d.image) for d in donors],
    }
    claim_folder(folder, settings, finished(folder))
    made = cutpaste_set(targets, product, donors, folder, split.seed, edge_alpha)
    made.settings = settings
    return made


def _pools(
    cfg: DictConfig,
    kind: str,
    product: Product,
    split: InspectionSplit,
    donors: Sequence[DefectSample],
    out: Path,
    base: dict[str, Any],
    needed: int,
    existing: dict[str, SyntheticSet],
    baselines: Sequence[tuple[Input, str]],
) -> list[tuple[SyntheticSet, str]]:
    """Every generator's pool of synthetic items (the proposed model, cut-paste from
    ``donors``, the baselines), checked against the protocol; without masks, none for the
    segmentation study."""
    if needed <= 0:
        return []
    pools = [
        _checkpoint_pool(
            cfg,
            product.main,
            product.title,
            product,
            split,
            out,
            base,
            needed,
            existing.get(product.title),
        )
    ]
    if cfg.cut_paste.enabled:
        pools.append((_cut_paste_pool(cfg, product, split, donors, out, base, needed), ""))
    for baseline, title in baselines:
        pools.append(
            _checkpoint_pool(
                cfg, baseline, title, product, split, out, base, needed, existing.get(title)
            )
        )
    for pool, _ in pools:
        check_synthetic_sources(pool.sources, split, str(pool.folder))
    if kind == "segmentation":
        pools = [(p, t) for p, t in pools if p.masks is not None]
    return pools


def _same_test_set(main: InspectionSplit, other: InspectionSplit) -> bool:
    def names(split: InspectionSplit) -> tuple[Any, ...]:
        return (
            [str(Path(p).resolve()) for p in split.normal_train],
            [str(Path(p).resolve()) for p in split.normal_val],
            [str(Path(p).resolve()) for p in split.normal_test],
            [str(Path(s.image).resolve()) for s in split.defect_test],
            [str(Path(p).resolve()) for p in split.synthesis_sources],
        )

    return names(main) == names(other)


def _reduced_rows(
    cfg: DictConfig,
    kind: str,
    product: Product,
    data: StudyData,
    real: RealDefects,
    k: int,
    out: Path,
) -> list[RealMix]:
    """The rows with only the first ``k`` real training defects, and the generator retrained
    on exactly those (``data.defect_train_limit=k``; trained once, reused by later runs)."""
    assert product.recipe is not None
    name, scale, overrides = product.recipe
    ckpt = ensure_generator(
        name,
        scale,
        [*overrides, f"data.defect_train_limit={k}"],
        Path(cfg.generator.dir),
        cfg.paths.cache_dir,
    )
    overrides_data = OmegaConf.to_container(cfg.data, resolve=True)
    assert isinstance(overrides_data, dict)
    smaller = product_of(Input("ckpt", ckpt), overrides_data, cfg.paths.cache_dir)
    smaller.title = product.title
    check_generator_data(smaller, str(cfg.protocol), cfg.paths.cache_dir)
    split = data.split
    split_k = make_split(
        smaller.gan_split,
        cfg.protocol,
        split.seed,
        tuple(cfg.split.normal),
        cfg.split.synthetic_sources,
    )
    if not _same_test_set(split, split_k):
        raise DataError(
            f"the generator retrained on {k} real defect(s) ({ckpt}) has another split than the "
            f"study's {product.name} (its defect-free images, test defects or sources differ): "
            "its rows would not be comparable"
        )
    real_k = reduced(real, k)
    trained = {str(Path(s.image).resolve()) for s in split_k.donors}
    if trained != {str(Path(s.image).resolve()) for s in real_k.train}:
        raise DataError(
            f"the generator retrained with data.defect_train_limit={k} ({ckpt}) was trained "
            f"on other defects than the first {k} real training defects of the real rows"
        )
    folder = out / f"real_k{k}"
    base = split_settings(cfg, smaller, split.seed)
    splits_file = folder / "splits.json"
    if splits_file.is_file():
        check_reuse(splits_file, json.loads(splits_file.read_text()).get("settings"), base)
    write_text(json.dumps({**split_k.to_json(), **stamp(base)}, indent=2) + "\n", splits_file)
    ratio = int(cfg.real.count_ratio)
    pools = _pools(cfg, kind, smaller, split_k, real_k.train, folder, base, ratio * k, {}, [])
    return make_mixes(real_k, pools, [0, ratio], base, split_k.donors, k)


def prepare_real(
    cfg: DictConfig, kind: str, product: Product, data: StudyData, out: Path
) -> RealPlan:
    """The real rows of ``product`` on the split of ``data`` (``out``: its split folder): the
    reference, every generator at every ratio, and (``real.counts``) the reduced real sets."""
    split = data.split
    real = split_real(split.donors, float(cfg.real.val))
    base = split_settings(cfg, product, split.seed)
    ratios = real_ratios(cfg)
    counts = real_counts(cfg)
    if counts:
        ratios = sorted({*ratios, int(cfg.real.count_ratio)})
    needed = max(ratios) * len(real.train)
    existing = {s.title: s for s in data.sets}
    pools = _pools(
        cfg, kind, product, split, real.train, out, base, needed, existing, product.baselines
    )
    mixes = make_mixes(real, pools, ratios, base, split.donors)
    notes = []
    for k in counts:
        if product.recipe is None:
            notes.append(
                f"real.counts: {product.label} came as ckpt=/samples=, which the study cannot "
                "retrain on fewer defects; give products= instead"
            )
            break
        if product.datamodule.multi_type:
            notes.append("real.counts: not for a product of several defect types")
            break
        if k >= len(real.train):
            notes.append(f"real.counts: k={k} ≥ the {len(real.train)} real training defects")
            continue
        mixes += _reduced_rows(cfg, kind, product, data, real, k, out)
    for mix in mixes:
        check_real_rows(mix.real, split, mix.title, mix.trained)
    log.info(
        "%s split %d: real rows on %d real training + %d validation defects: %s",
        product.name,
        split.seed,
        len(real.train),
        len(real.val),
        ", ".join(f"{m.title} ({m.n_real} + {m.n_synthetic})" for m in mixes),
    )
    return RealPlan(real, mixes, notes)


def _real_images(product: Product, paths: Sequence[Path], size: int) -> torch.Tensor:
    base, cache = product.base_size, product.datamodule.cache
    return to_image_tensor([real_image(cache, p, base) for p in paths], size)


def _zeros(n: int, size: int) -> torch.Tensor:
    return torch.zeros(n, 1, size, size, dtype=torch.uint8)


def _real_defects(
    product: Product, defects: Sequence[DefectSample], size: int, with_masks: bool
) -> LabelledImages:
    """Real defective images (label 1) with their ground-truth masks where asked."""
    cache, base = product.datamodule.cache, product.base_size
    return LabelledImages.of(
        _real_images(product, [s.image for s in defects], size),
        1,
        to_mask_tensor([real_mask(cache, s.mask, base) for s in defects], size)
        if with_masks
        else None,
    )


def build_sets(
    cfg: DictConfig,
    product: Product,
    data: StudyData,
    synthetic: SyntheticSet | RealMix,
    size: int,
    with_masks: bool,
) -> tuple[LabelledImages, LabelledImages, LabelledImages]:
    """(train, val, test): defect-free 60/20/20 + synthetic 80/20/0 + real defects 0/0/100;
    with masks (empty for defect-free images) for the segmentation study. A real row
    (``RealMix``): its real training defects and synthetic items train, its real validation
    defects validate — the test set is the same."""
    split = data.split

    def normal(paths: Sequence[Path]) -> LabelledImages:
        return LabelledImages.of(
            _real_images(product, paths, size), 0, _zeros(len(paths), size) if with_masks else None
        )

    test = LabelledImages.concat(
        [normal(split.normal_test), _real_defects(product, split.defect_test, size, with_masks)]
    )
    if isinstance(synthetic, RealMix):
        mix = synthetic
        # the guard sits where the tensors are made: nothing else decides what trains
        check_real_rows(mix.real, split, mix.title, mix.trained)
        parts = [
            normal(split.normal_train),
            _real_defects(product, mix.real.train, size, with_masks),
        ]
        if mix.synthetic is not None and mix.items:
            items = list(mix.items)
            made = mix.synthetic
            masks = None
            if with_masks:
                assert made.masks is not None
                masks = to_mask_tensor([made.masks[i] for i in items], size)
            images = to_image_tensor([made.images[i] for i in items], size)
            parts.append(LabelledImages.of(images, 1, masks))
        train = LabelledImages.concat(parts)
        val = LabelledImages.concat(
            [normal(split.normal_val), _real_defects(product, mix.real.val, size, with_masks)]
        )
        return train, val, test
    train_idx, val_idx = split_synthetic(
        synthetic.sources, float(cfg.split.synthetic_val), split.seed
    )
    images = to_image_tensor(synthetic.images, size)
    masks = to_mask_tensor(synthetic.masks, size) if with_masks and synthetic.masks else None

    def fake(indices: list[int]) -> LabelledImages:
        return LabelledImages.of(images[indices], 1, masks[indices] if masks is not None else None)

    train = LabelledImages.concat([normal(split.normal_train), fake(train_idx)])
    val = LabelledImages.concat([normal(split.normal_val), fake(val_idx)])
    return train, val, test


# ------------------------------------------------------------------------------ one run
PIXEL_STATES = "pixel_states.npz"  # per test image: pixel confusion at the threshold, binned


@dataclass
class RunResult:
    metrics: dict[str, Any]
    predictions: Predictions


def predictions_of(record: dict[str, Any], folder: Path) -> Predictions:
    """The test predictions of a run's ``metrics.json`` (and pixel states) for pooling."""
    labels = torch.tensor(record["test_labels"])
    images = tuple(record["test_images"])
    if "pixel_states" not in record:
        return Predictions(torch.tensor(record["test_scores"]), labels, images)
    path = folder / record["pixel_states"]
    if not path.is_file():
        raise DataError(
            f"{path} is missing but {folder / 'metrics.json'} needs it for the pooled table; "
            f"delete {folder} to recompute the run"
        )
    with np.load(path) as states:
        hits, curve = torch.from_numpy(states["hits"]), torch.from_numpy(states["curve"])
    return Predictions(torch.tensor(record["image_scores"]), labels, images, hits, curve)


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


def _run(
    cfg: DictConfig,
    kind: str,
    network: str,
    product: Product,
    data: StudyData,
    synthetic: SyntheticSet | RealMix,
    seed: int,
    out: Path,
) -> RunResult:
    """Train one network on one training set (a synthetic set, or a real row) with one seed;
    ``metrics.json`` (and, for the segmenter, ``pixel_states.npz``) in its folder, reused when
    made with the same settings."""
    folder = out / product.name / "runs" / f"{network}-{synthetic.key}-seed{seed}"
    metrics_file = folder / "metrics.json"
    settings = run_settings(cfg, kind, network, synthetic, seed)
    if metrics_file.is_file():
        record = json.loads(metrics_file.read_text())
        check_reuse(metrics_file, record.get("settings"), settings)
        log.info("reusing %s", metrics_file)
        return RunResult(record["metrics"], predictions_of(record, folder))
    segmentation = kind == "segmentation"
    options = cfg.segmenter if segmentation else cfg.train
    size = int(options.image_size or product.base_size)
    train, val, test = build_sets(cfg, product, data, synthetic, size, segmentation)
    L.seed_everything(seed, workers=True)
    if segmentation:
        module: Any = DefectSegmenter(
            width=options.width,
            levels=options.levels,
            lr=options.lr,
            dice_weight=options.dice_weight,
            flips=options.flips,
        )
    else:
        module = DefectClassifier(
            backbone=network,
            pretrained=bool(cfg.classifier.pretrained),
            lr=options.lr,
            betas=tuple(options.betas),
            weight_decay=options.weight_decay,
            flips=options.flips,
        )
    datamodule = StudyDataModule(train, val, test, int(options.batch_size), seed)
    name = f"{product.name}/{network}/{synthetic.key}/seed{seed}"
    loggers = run_loggers(cfg, folder, name, group=f"{kind}-{product.name}")
    fitted = fit(module, datamodule, options, folder, loggers)
    scores = module.scores(test.images)
    if segmentation:
        assert test.masks is not None
        metrics = segmentation_metrics(
            scores, test.masks, test.labels, float(options.threshold), str(options.pixel_set)
        )
    else:
        metrics = classification_metrics(scores, test.labels, float(options.threshold))
    for logger in loggers:
        logger.log_metrics({f"test/{k}": v for k, v in _numbers(metrics).items()})
        logger.finalize("success")
    finish_wandb()
    record = {
        "metrics": metrics,
        "fit": fitted,
        "network": network,
        "training_set": synthetic.title,
        "product": product.label,
        "protocol": data.split.protocol,
        "seed": seed,
        "split_seed": data.split.seed,
        "image_size": size,
        "counts": {"train": train.counts(), "val": val.counts(), "test": test.counts()},
        **stamp(settings),
    }
    if isinstance(synthetic, RealMix):  # which real defects trained and validated it
        record["real_train"] = [str(d.image) for d in synthetic.real.train]
        record["real_val"] = [str(d.image) for d in synthetic.real.val]
        record["synthetic_items"] = synthetic.n_synthetic
        record["synthetic_set"] = str(synthetic.synthetic.folder) if synthetic.synthetic else None
    # in test-set order (build_sets): what the pooled tables are computed from
    record["test_images"] = [str(p) for p in data.split.normal_test]
    record["test_images"] += [str(s.image) for s in data.split.defect_test]
    record["test_labels"] = [int(v) for v in test.labels]
    if segmentation:
        assert test.masks is not None
        hits, curve = pixel_states(
            scores, test.masks, float(options.threshold), int(cfg.pooled.bins)
        )
        with atomic_path(folder / PIXEL_STATES) as tmp, tmp.open("wb") as fh:
            np.savez_compressed(fh, hits=hits.numpy(), curve=curve.numpy())
        record["image_scores"] = [float(s) for s in scores.flatten(1).amax(dim=1)]
        record["pixel_states"] = PIXEL_STATES
    else:
        # unrounded: pooled metrics must threshold exactly the scores the run's metrics did
        record["test_scores"] = [float(s) for s in scores]
    write_text(json.dumps(record, indent=2) + "\n", metrics_file)
    log.info("%s: %s", name, {k: round(v, 4) for k, v in _numbers(metrics).items()})
    del module, datamodule
    gc.collect()  # dozens of fits in one process: free each network before the next
    return RunResult(metrics, predictions_of(record, folder))


# ------------------------------------------------------------------------------ tables
TEST_SET = "Test set per seed (defect-free / defective)"


def _cells(summary: dict[str, Any], columns: Sequence[tuple]) -> list[str]:
    return [format_mean_std(summary.get(key), scale, digits) for key, _, scale, digits in columns]


def _average(summaries: Sequence[dict[str, Any]], columns: Sequence[tuple]) -> list[str]:
    cells = []
    for key, _, scale, digits in columns:
        means = [mean_of(s, key) for s in summaries]
        defined = [m for m in means if m is not None]
        cells.append(f"{sum(defined) / len(defined) * scale:.{digits}f}" if defined else "–")
    return cells


def _test_counts(summary: dict[str, Any]) -> str:
    """The per-seed test set: defect-free / defective images (a range where splits differ)."""

    def span(key: str) -> str:
        entry = summary.get(key)
        if not isinstance(entry, dict):
            return "–"
        values = [int(v) for v in entry["values"]]
        low, high = min(values), max(values)
        return str(low) if low == high else f"{low}–{high}"

    return f"{span('n_defect_free')} / {span('n_defective')}"


def markdown(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    title: str,
    notes: Sequence[str],
    level: int = 1,
) -> str:
    lines = [f"{'#' * level} {title}", "", *notes, ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _csv_row(
    labels: dict[str, Any], summary: dict[str, Any], columns: Sequence[tuple]
) -> dict[str, Any]:
    row = dict(labels)
    row["n_seeds"] = summary.get("n_runs")
    for key, *_ in columns:
        entry = summary.get(key)
        row[f"{key}_mean"] = entry["mean"] if isinstance(entry, dict) else None
        row[f"{key}_std"] = entry["std"] if isinstance(entry, dict) else None
    if "confusion_matrix" in summary:
        (tn, fp), (fn, tp) = summary["confusion_matrix"]
        row.update(tn=tn, fp=fp, fn=fn, tp=tp)
    return row


@dataclass
class Group:
    """One table group: a network (or the trivial classifier) trained on one set, all products."""

    network: str
    training_set: str
    per_product: dict[str, dict[str, Any]]  # product label → summary over seeds
    pooled: dict[str, dict[str, Any]] = field(default_factory=dict)  # … → pooled over seeds


@dataclass
class Table:
    title: str
    notes: list[str]
    header: list[str]
    rows: list[list[str]]
    csv_rows: list[dict[str, Any]]


def build_table(
    groups: Sequence[Group], columns: Sequence[tuple], first: Sequence[str]
) -> tuple[list[list[str]], list[dict[str, Any]]]:
    """Markdown rows (with an ``Avg`` row per group when there are several products) and CSV
    rows of the groups: mean ± std over seeds, and the per-seed test set."""
    rows, csv_rows = [], []
    for group in groups:
        for product, summary in group.per_product.items():
            rows.append(
                [
                    group.network,
                    group.training_set,
                    product,
                    *_cells(summary, columns),
                    _test_counts(summary),
                ]
            )
            labels = dict(zip(first, (group.network, group.training_set, product), strict=True))
            csv_rows.append(_csv_row(labels, summary, columns))
        if len(group.per_product) > 1:
            average = _average(list(group.per_product.values()), columns)
            rows.append([group.network, group.training_set, "Avg", *average, "–"])
    return rows, csv_rows


def build_pooled_table(
    groups: Sequence[Group], columns: Sequence[tuple], first: Sequence[str], confusion: str
) -> tuple[list[str], list[list[str]], list[dict[str, Any]]]:
    """Header, Markdown rows and CSV rows of the pooled metrics: counts beside every number,
    the pooled ``confusion`` matrix, each metric with its interval."""
    header = [
        *first,
        "Runs",
        "Test predictions (defect-free / defective)",
        "Distinct test images (defect-free / defective)",
        "Confusion [[TN, FP], [FN, TP]]"
        if confusion == "confusion_matrix"
        else "Pixel confusion [[TN, FP], [FN, TP]]",
        *(f"{title} [interval]" for _, title, *_ in columns),
    ]
    rows, csv_rows = [], []
    for group in groups:
        for product, pooled in group.pooled.items():
            intervals = pooled.get("intervals", {})
            (tn, fp), (fn, tp) = pooled[confusion]
            rows.append(
                [
                    group.network,
                    group.training_set,
                    product,
                    str(pooled["n_runs"]),
                    f"{pooled['n_defect_free']} / {pooled['n_defective']}",
                    f"{pooled['n_images_defect_free']} / {pooled['n_images_defective']}",
                    f"[[{tn}, {fp}], [{fn}, {tp}]]",
                    *(
                        format_interval(pooled.get(key), intervals.get(key), scale, digits)
                        for key, _, scale, digits in columns
                    ),
                ]
            )
            row: dict[str, Any] = dict(
                zip(first, (group.network, group.training_set, product), strict=True)
            )
            for key in (
                "n_runs",
                "n_defect_free",
                "n_defective",
                "n_images_defect_free",
                "n_images_defective",
            ):
                row[key] = pooled[key]
            row.update(tn=tn, fp=fp, fn=fn, tp=tp)
            for key, *_ in columns:
                interval = intervals.get(key) or [None, None]
                row.update({key: pooled.get(key), f"{key}_low": interval[0]})
                row[f"{key}_high"] = interval[1]
            csv_rows.append(row)
    return header, rows, csv_rows


def write_table(
    cfg: DictConfig,
    name: str,
    main: Table,
    pooled: Table,
    seeds: list[int],
    seconds: float,
    real: Table | None = None,
) -> str:
    """``<name>.md`` (all tables), ``<name>.csv``, ``<name>_pooled.csv`` (``<name>_real.csv``)
    and ``<name>.json`` (rows + resolved config) in the run folder, the tables in W&B, and the
    Markdown printed."""
    out = Path(cfg.paths.output_dir)
    record = {
        "protocol": cfg.protocol,
        "preset": cfg.preset,
        "seeds": seeds,
        "seconds": round(seconds, 1),
        "rows": list(main.csv_rows),
        "pooled_rows": list(pooled.csv_rows),
        "real_rows": list(real.csv_rows) if real is not None else [],
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    text = markdown(main.header, main.rows, main.title, main.notes)
    text += "\n" + markdown(pooled.header, pooled.rows, pooled.title, pooled.notes, level=2)
    log_table_to_wandb(cfg, out, name, main.header, main.rows)
    log_table_to_wandb(cfg, out, f"{name}_pooled", pooled.header, pooled.rows)
    if real is not None:
        text += "\n" + markdown(real.header, real.rows, real.title, real.notes, level=2)
        if real.rows:  # none under protocol=paper: the section only says why
            log_table_to_wandb(cfg, out, f"{name}_real", real.header, real.rows)
            write_text(csv_text(list(real.csv_rows)), out / f"{name}_real.csv")
    write_text(text, out / f"{name}.md")
    write_text(csv_text(list(main.csv_rows)), out / f"{name}.csv")
    write_text(csv_text(list(pooled.csv_rows)), out / f"{name}_pooled.csv")
    write_text(json.dumps(record, indent=2, default=str) + "\n", out / f"{name}.json")
    print(text)
    return text


# ------------------------------------------------------------------------------ real vs synthetic
HOW_TO_READ = (
    "- How to read it: **Real + <generator> above the reference** is the claim that matters "
    "in practice (adding synthetic defects to the real ones helps); **a synthetic-only row "
    "(Table 4) at or above the reference** would be remarkable — believe it only when the "
    "intervals say so. Intervals that overlap mean the study cannot tell the rows apart."
)


def real_section(
    cfg: DictConfig,
    kind: str,
    groups: Sequence[Group],
    extra: dict[str, Any],
    products: Sequence[Product],
    titles: dict[str, str],
) -> Table | None:
    """The real-vs-synthetic table (every real row: mean over seeds with its Student-t
    interval, the pooled value with its image-resampling interval, the counts) and one curve
    PNG per product in the run folder. None when no real row ran; under protocol=paper a
    table of notes saying why."""
    plans: dict[str, RealPlan] = extra["plans"]
    first = "Segmenter" if kind == "segmentation" else "Backbone"
    if not plans:
        if not cfg.real.enabled or str(cfg.protocol) != "paper":
            return None
        note = (
            "Not made under protocol=paper: its test set holds every real defect, including "
            "the real training defects, so a row trained on them would be tested on its own "
            "training images. Run protocol=clean (the default) for these rows."
        )
        return Table("Real vs synthetic", [note], [first, "Training defects"], [], [])
    columns = SEGMENTATION_COLUMNS if kind == "segmentation" else CLASSIFICATION_COLUMNS
    by_key = {key: (title, scale, digits) for key, title, scale, digits in columns}
    metrics = real_metrics(cfg, kind)
    level = float(cfg.pooled.level)
    lookup = {(g.network, g.training_set): g for g in groups}
    header = [
        first,
        "Product (Defect)",
        "Training defects",
        "Real (train / val)",
        "Synthetic added",
    ]
    for key in metrics:
        header += [f"{by_key[key][0]} over seeds", f"{by_key[key][0]} pooled"]
    header += ["Seeds", "Distinct test images (defect-free / defective)"]
    rows: list[list[str]] = []
    csv_rows: list[dict[str, Any]] = []
    notes = [
        f"Protocol **{cfg.protocol}**. Every row: the same defect-free images, network, budget, "
        "augmentation, class-balanced sampling and model selection (the best epoch on the "
        "defect-free validation images + the real validation defects); only the defective "
        "training images change.",
        "",
        HOW_TO_READ,
        f"- Over seeds: mean [{level:.0%} Student-t interval of the mean over the seeds] — the "
        "training randomness; pooled: every seed's predictions pooled [percentile interval "
        "from resampling the distinct test images] — the size of the test set. One seed: no "
        "seed interval.",
        "- ×r: r synthetic defects per real training defect, the first of a generator's items "
        "with every source image once before any twice (flip variants last).",
    ]
    network_names = [titles.get(n, n) for n in extra["real_networks"]]
    labels_to_names = {p.label: p.name for p in products}
    by_label = {p.label: p for p in products}
    for label, plan in plans.items():
        data: StudyData = extra["data"][labels_to_names[label]]
        c = data.split.counts()
        notes.append(
            f"- {label}: {len(plan.real.train)} real training defects + {len(plan.real.val)} "
            "validating (the GAN's training defects, the last by name validate); test set "
            f"{c['normal_test']} defect-free / {c['defect_test']} defective images (never in a "
            "real row: checked when each row's data are made)."
        )
        for mix in plan.mixes:
            if mix.note:
                notes.append(f"  - {mix.title}: {mix.note}.")
        notes += [f"  - {n}" for n in plan.notes]
    notes.append(
        "- The proposed generator (and the baselines) trained on all of the GAN's training "
        "defects, the validation ones included; the real rows train on the others. The "
        "real.counts rows retrain the generator on exactly their k training defects."
    )
    plotted = metrics[0]
    for label, plan in plans.items():
        name = labels_to_names[label]
        points: list[CurvePoint] = []
        for network in network_names:
            summaries = {}
            for mix in plan.mixes:
                group = lookup.get((network, mix.title))
                if group is None or label not in group.per_product:
                    continue
                summary, pooled = group.per_product[label], group.pooled.get(label, {})
                summaries[mix.title] = summary
                n_seeds = int(summary.get("n_runs", 0))
                row = [
                    network,
                    label,
                    mix.title,
                    f"{mix.n_real} / {len(mix.real.val)}",
                    f"{mix.n_synthetic}" + (f" of {mix.requested}" if mix.note else ""),
                ]
                csv_row: dict[str, Any] = {
                    first: network,
                    "Product (Defect)": label,
                    "Training defects": mix.title,
                    "line": mix.line,
                    "k": mix.k,
                    "ratio": mix.ratio,
                    "n_real_train": mix.n_real,
                    "n_real_val": len(mix.real.val),
                    "n_synthetic": mix.n_synthetic,
                    "n_synthetic_requested": mix.requested,
                    "n_seeds": n_seeds,
                }
                for key in metrics:
                    _, scale, digits = by_key[key]
                    entry = summary.get(key)
                    mean = entry.get("mean") if isinstance(entry, dict) else None
                    values = entry.get("values", []) if isinstance(entry, dict) else []
                    interval = seed_interval(values, level)
                    pooled_interval = pooled.get("intervals", {}).get(key)
                    row += [
                        format_interval(mean, interval, scale, digits),
                        format_interval(pooled.get(key), pooled_interval, scale, digits),
                    ]
                    csv_row.update(
                        {
                            f"{key}_mean": mean,
                            f"{key}_seed_low": interval[0] if interval else None,
                            f"{key}_seed_high": interval[1] if interval else None,
                            f"{key}_pooled": pooled.get(key),
                            f"{key}_pooled_low": pooled_interval[0] if pooled_interval else None,
                            f"{key}_pooled_high": pooled_interval[1] if pooled_interval else None,
                        }
                    )
                n_free, n_bad = pooled.get("n_images_defect_free"), pooled.get("n_images_defective")
                row += [str(n_seeds), f"{n_free} / {n_bad}"]
                csv_row.update(n_images_defect_free=n_free, n_images_defective=n_bad)
                csv_row["protocol"] = cfg.protocol
                rows.append(row)
                csv_rows.append(csv_row)
            points += curve_points(
                plan.mixes,
                summaries,
                network,
                label,
                plotted,
                level,
                int(cfg.real.count_ratio),
            )
        if not points:
            continue
        synthetic_only = {
            (g.network, g.training_set): value
            for g in groups
            if label in g.per_product
            and (value := mean_of(g.per_product[label], plotted)) is not None
        }
        path = Path(cfg.paths.output_dir) / f"{name}_real_vs_synthetic.png"
        plot_curves(
            points,
            path,
            f"{label}: real vs real + synthetic ({cfg.protocol} protocol, {cfg.preset} scale; "
            f"bands: {level:.0%} interval over seeds; dotted: synthetic only)",
            by_key[plotted][0],
            synthetic_only,
        )
        notes.append(f"- Curve: `{path.name}` ({by_key[plotted][0]}).")
        copied = share_with_generator(path, by_label[label], cfg)
        if copied is not None:
            notes.append(f"  (also `{copied}`, for `src/report.py run={copied.parents[1]}`)")
    return Table("Real vs synthetic", notes, header, rows, csv_rows)


STUDIES = "studies"  # <generator run>/studies/*.png: the report's downstream-studies section


def share_with_generator(path: Path, product: Product, cfg: DictConfig) -> Path | None:
    """A copy of a study's curve in the run folder of the generator it measured
    (``<run>/checkpoints/<ckpt>`` → ``<run>/studies/``), where report.html shows it."""
    ckpt = product.main.path
    if product.main.kind != "ckpt" or ckpt.parent.name != "checkpoints":
        return None
    target = ckpt.parent.parent / STUDIES / f"{cfg.task_name}-{cfg.run_name}-{path.name}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            shutil.copyfile(path, tmp)
    except OSError as err:  # a read-only checkpoint folder: the run folder's copy is enough
        log.warning("could not copy %s to %s: %s", path.name, target.parent, err)
        return None
    return target


# ------------------------------------------------------------------------------ jobs
def _check_common(cfg: DictConfig) -> list[int]:
    check_protocol(cfg.protocol)
    seeds = [int(s) for s in _as_list(cfg.seeds)]
    if not seeds:
        raise ConfigError("seeds=[...] must list at least one seed")
    pooled = cfg.pooled
    if int(pooled.bootstrap) < 0:
        raise ConfigError(f"pooled.bootstrap={pooled.bootstrap}; expected a count ≥ 0 (0: none)")
    if not 0.0 < float(pooled.level) < 1.0:
        raise ConfigError(f"pooled.level={pooled.level}; expected a probability in (0, 1)")
    if int(pooled.bins) < 2:
        raise ConfigError(f"pooled.bins={pooled.bins}; expected at least 2 thresholds")
    return seeds


def _count_notes(data_by_product: dict[str, StudyData], products: Sequence[Product]) -> list[str]:
    notes = []
    for product in products:
        data = data_by_product[product.name]
        c = data.split.counts()
        sets = ", ".join(f"{s.title} {len(s.images)}" for s in data.sets)
        notes.append(
            f"- {product.label}: defect-free {c['normal_train']}/{c['normal_val']}/"
            f"{c['normal_test']} (train/val/test); real defects in test: {c['defect_test']}; "
            f"synthetic sets (80/20 train/val by source image): {sets}"
        )
    return notes


def _study(cfg: DictConfig, kind: str) -> tuple[list[Product], dict, dict, list[int], float]:
    """Shared by both jobs: resolve inputs, then train and measure every run."""
    out = Path(cfg.paths.output_dir)
    check_output_dir(out)
    seeds = _check_common(cfg)
    quiet_lightning()
    networks = ["unet"] if kind == "segmentation" else [str(b) for b in cfg.backbones]
    if kind == "classification":
        for backbone in networks:
            if backbone not in BACKBONES:
                raise ConfigError(
                    f"backbones: {backbone!r} is not supported; choose from {list(BACKBONES)}"
                )
            if cfg.classifier.pretrained:
                check_pretrained_weights(backbone)  # before any work
    check_real_options(cfg, kind, seeds)
    with_real = real_rows_enabled(cfg)
    seeds_real = set(real_seeds(cfg, seeds))
    networks_real = networks[:1] if str(cfg.real.backbones) == "first" else networks
    start = time.perf_counter()
    products = resolve_products(cfg)
    results: dict[tuple[str, str, str], list[RunResult]] = {}
    trivial: dict[str, dict[int, dict[str, Any]]] = {}
    trivial_runs: dict[str, list[Predictions]] = {}  # one per seed, as the trained rows
    first_data: dict[str, StudyData] = {}
    plans: dict[str, RealPlan] = {}  # product label → the real rows of its first split
    for product in products:
        prepared: dict[int, StudyData] = {}
        planned: dict[int, RealPlan] = {}
        for seed in seeds:
            split_seed = split_seed_of(cfg, seed)
            folder = out / product.name / f"split{split_seed}"
            if split_seed not in prepared:
                prepared[split_seed] = prepare(cfg, product, split_seed, folder)
            data = prepared[split_seed]
            first_data.setdefault(product.name, data)
            if with_real and seed in seeds_real and split_seed not in planned:
                planned[split_seed] = prepare_real(cfg, kind, product, data, folder)
                plans.setdefault(product.label, planned[split_seed])
            sets = data.sets
            if kind == "segmentation":
                for skipped in (s for s in sets if s.masks is None):
                    log.warning("%s has no masks: not a segmentation training set", skipped.title)
                sets = [s for s in sets if s.masks is not None]
                if not sets:
                    raise DataError(f"no training set of {product.name} has masks")
            else:
                split = data.split
                labels = torch.cat(
                    [torch.zeros(len(split.normal_test)), torch.ones(len(split.defect_test))]
                ).long()
                # deterministic given the split: one entry per split, not per training seed
                trivial.setdefault(product.label, {})[split_seed] = always_defect_free(labels)
                names = (*map(str, split.normal_test), *(str(d.image) for d in split.defect_test))
                trivial_runs.setdefault(product.label, []).append(
                    Predictions(torch.zeros(len(labels)), labels, names)
                )
            for network in networks:
                rows: list[SyntheticSet | RealMix] = list(sets)
                if with_real and seed in seeds_real and network in networks_real:
                    rows += planned[split_seed].mixes
                for synthetic in rows:
                    result = _run(cfg, kind, network, product, data, synthetic, seed, out)
                    key = (network, synthetic.title, product.label)
                    results.setdefault(key, []).append(result)
    extra = {
        "trivial": trivial,
        "trivial_runs": trivial_runs,
        "data": first_data,
        "plans": plans,
        "real_networks": networks_real,
        "real_seeds": sorted(seeds_real),
    }
    return products, results, extra, seeds, start


def _groups(
    results: dict[tuple[str, str, str], list[RunResult]],
    titles: dict[str, str],
    pool: Callable[[list[Predictions]], dict[str, Any]],
) -> list[Group]:
    groups: dict[tuple[str, str], Group] = {}
    for (network, training_set, product), runs in results.items():
        key = (network, training_set)
        if key not in groups:
            groups[key] = Group(titles.get(network, network), training_set, {})
        groups[key].per_product[product] = summarize([r.metrics for r in runs])
        groups[key].pooled[product] = pool([r.predictions for r in runs])
    return list(groups.values())


def _pooled_notes(cfg: DictConfig, extra: Sequence[str]) -> list[str]:
    n_boot, level = int(cfg.pooled.bootstrap), float(cfg.pooled.level)
    interval = (
        f"[interval]: {level:.0%} percentile interval over {n_boot} resamples of the distinct "
        "test images (within each class), each image with all its seeds' predictions"
        if n_boot > 0
        else "no intervals (pooled.bootstrap=0)"
    )
    return [
        "- Every seed's test predictions pooled into one confusion matrix and one AUROC per "
        "row (Runs: how many). With one split (split.seed fixed) the seeds test the same "
        "images: read each number against the distinct test images, not the predictions.",
        f"- {interval}. Resampling keeps the class sizes, so a row that calls every image "
        "defective (or none) has a zero-width accuracy interval: the class sizes fix it.",
        *extra,
    ]


def _notes(cfg: DictConfig, seeds: list[int], extra: Sequence[str], seconds: float) -> list[str]:
    seed_text = f"seeds {seeds} (mean ± sample std)" if len(seeds) > 1 else f"seed {seeds[0]}"
    return [
        f"Protocol **{cfg.protocol}** — {PROTOCOL_TEXT[cfg.protocol]}.",
        f"Scale `{cfg.preset}`, {seed_text}, wall time {seconds:.0f} s.",
        "",
        *extra,
    ]


def inspection(cfg: DictConfig) -> dict[str, float]:
    """Table 4: binary classifiers trained on real defect-free + synthetic defective images,
    tested on real images."""
    products, results, extra, seeds, start = _study(cfg, "classification")
    titles = {name: spec.title for name, spec in BACKBONES.items()}

    def pool(runs: list[Predictions]) -> dict[str, Any]:
        return pooled_classification(
            runs,
            float(cfg.train.threshold),
            int(cfg.pooled.bootstrap),
            float(cfg.pooled.level),
        )

    trivial = Group(
        TRIVIAL,
        "–",
        {p: summarize(list(r.values())) for p, r in extra["trivial"].items()},
        {p: pool(runs) for p, runs in extra["trivial_runs"].items()},
    )
    groups = [trivial, *_groups(results, titles, pool)]
    first = ("Backbone", "Training defects", "Product (Defect)")
    rows, csv_rows = build_table(groups, CLASSIFICATION_COLUMNS, first)
    for row in csv_rows:
        row["protocol"] = cfg.protocol
    seconds = time.perf_counter() - start
    notes = _notes(
        cfg,
        seeds,
        [
            *_count_notes(extra["data"], products),
            "- Precision, recall, F1: the defective class, at P(defective) > "
            f"{cfg.train.threshold}; (macro): the mean over both classes, the reading of the "
            "paper's Table 4. Its rows train on synthetic defects only (the paper's question; "
            f"{CUT_PASTE} pastes real training defects); the real-defect rows (Real defects, "
            "Real + …) train on the real training defects, alone or with synthetic ones: see "
            "*Real vs synthetic* below.",
        ],
        seconds,
    )
    header = [*first, *(title for _, title, *_ in CLASSIFICATION_COLUMNS), TEST_SET]
    title = f"Table 4 — defect inspection ({cfg.protocol} protocol)"
    main = Table(title, notes, header, rows, csv_rows)
    pooled_header, pooled_rows, pooled_csv = build_pooled_table(
        groups, CLASSIFICATION_COLUMNS, first, "confusion_matrix"
    )
    for row in pooled_csv:
        row["protocol"] = cfg.protocol
    pooled = Table(
        "Pooled over seeds",
        _pooled_notes(cfg, []),
        pooled_header,
        pooled_rows,
        pooled_csv,
    )
    real = real_section(cfg, "classification", groups, extra, products, titles)
    write_table(cfg, "table4", main, pooled, seeds, seconds, real)
    return _return_values(groups[1:], "accuracy")


def segmentation(cfg: DictConfig) -> dict[str, float]:
    """A U-Net trained on synthetic (image, mask) pairs + defect-free images with empty masks,
    tested on real defects with their ground truth and the defect-free test pool."""
    products, results, extra, seeds, start = _study(cfg, "segmentation")

    def pool(runs: list[Predictions]) -> dict[str, Any]:
        return pooled_segmentation(
            runs,
            str(cfg.segmenter.pixel_set),
            int(cfg.pooled.bootstrap),
            float(cfg.pooled.level),
        )

    groups = _groups(results, {"unet": "U-Net"}, pool)
    first = ("Segmenter", "Training pairs", "Product (Defect)")
    rows, csv_rows = build_table(groups, SEGMENTATION_COLUMNS, first)
    for row in csv_rows:
        row["protocol"] = cfg.protocol
    seconds = time.perf_counter() - start
    pixel_set = (
        "all test images (real defects + the defect-free test pool)"
        if cfg.segmenter.pixel_set == "all"
        else "the real defect images only"
    )
    notes = _notes(
        cfg,
        seeds,
        [
            *_count_notes(extra["data"], products),
            f"- Pixel metrics over {pixel_set}; F1-max: best F1 over all thresholds (oracle); "
            f"IoU of the pixels scored > {cfg.segmenter.threshold} (fixed); image AUROC of the "
            "maximum pixel score.",
        ],
        seconds,
    )
    header = [*first, *(title for _, title, *_ in SEGMENTATION_COLUMNS), TEST_SET]
    title = f"Segmentation study of the synthetic masks ({cfg.protocol} protocol)"
    main = Table(title, notes, header, rows, csv_rows)
    pooled_header, pooled_rows, pooled_csv = build_pooled_table(
        groups, SEGMENTATION_COLUMNS, first, "pixel_confusion_matrix"
    )
    for row in pooled_csv:
        row["protocol"] = cfg.protocol
    bins = int(cfg.pooled.bins)
    pooled = Table(
        "Pooled over seeds",
        _pooled_notes(
            cfg,
            [
                f"- Pixel AUROC, AP and F1-max of the summed torchmetrics binned curves ({bins} "
                f"thresholds, steps of {1 / (bins - 1):.3g}); IoU and the pixel confusion matrix "
                f"summed at > {cfg.segmenter.threshold}; pixels over {pixel_set}.",
            ],
        ),
        pooled_header,
        pooled_rows,
        pooled_csv,
    )
    real = real_section(cfg, "segmentation", groups, extra, products, {"unet": "U-Net"})
    write_table(cfg, "segmentation", main, pooled, seeds, seconds, real)
    return _return_values(groups, "pixel_ap")


def _return_values(groups: Sequence[Group], key: str) -> dict[str, float]:
    """Flat numbers for Hydra sweepers: ``<network>/<set>/<product>/<metric>``."""
    values = {}
    for group in groups:
        for product, summary in group.per_product.items():
            for metric, entry in summary.items():
                if isinstance(entry, dict) and entry.get("mean") is not None:
                    values[f"{group.network}/{group.training_set}/{product}/{metric}"] = entry[
                        "mean"
                    ]
    summaries = [s for g in groups for s in g.per_product.values()]
    values[key] = sum(mean_of(s, key) or 0.0 for s in summaries) / max(1, len(summaries))
    return values
