"""The job behind ``src/table5.py`` (``make table5``): the controllable model
(``model=defect_gan_control``) against the paper model (``defect_gan``, the paper preset) and the
authors' settings (``defect_gan experiment=author_code``), each trained for the same batches.

Per cell (variant × data × seed) it trains, generates from the test images and evaluates them
(``evaluate.py``'s metrics, ``n_per_image`` samples per source), as ``make table6`` does
(:func:`defectsynth.lowdata.train_and_evaluate`), then measures four things:

* **locality** — the share of the pixels *outside* the mask that the generator changed (the
  requested mask for a controllable model, the predicted one otherwise) and evaluate.py's
  mask-coherence IoU (predicted mask vs changed pixels);
* **diversity** — the mean LPIPS between the samples of the *same* source image (a controllable
  model: different noise codes; the paper model: its ≤ 4 flip variants, since it is
  deterministic) and evaluate.py's set-level LPIPS;
* **placement** — a controllable model only: a second set generated on requested masks never
  seen in training (``placement.mode``: ``foreground`` / ``random`` draws with a seed of their
  own, transformed real shapes at new places, or ``heldout``: the held-out test defects' real
  masks); the IoU of each request with the pixels the generator *changed* (a model that copies
  the request into its mask output without drawing there scores 0) and with its predicted mask;
  and, for every model, the share of the changed pixels that lie off the product's foreground;
* **fidelity** — evaluate.py's FID-64 and KID.

With one seed every number carries its bootstrap interval over images (the same resampling as
evaluate.py); with several, mean ± sample std over seeds. A cell whose ``row.json`` exists is
reused, so an interrupted table resumes where it stopped.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from defectsynth import metrics as M
from defectsynth.control_figure import codes_by_placements
from defectsynth.errors import ConfigError, DataError
from defectsynth.evaluation import MetricSuite, SampleSet, load_samples, report_row
from defectsynth.generation import datamodule_from, run_synthesis
from defectsynth.lowdata import (
    cell_name,
    check_variants,
    open_study,
    run_study,
    saved_row,
    train_and_evaluate,
)
from defectsynth.metrics import bootstrap as B
from defectsynth.report import build_report
from defectsynth.synthesis import (
    FLIP_VARIANTS,
    is_controllable,
    load_model,
    read_manifest,
)
from defectsynth.tables import composed
from defectsynth.utils.grids import side_by_side
from defectsynth.utils.io import save_png, write_text

log = logging.getLogger(__name__)

DASH = "—"
PLACEMENT_MODES = ("foreground", "random", "heldout")
# section → (column, title, digits)
SECTIONS: dict[str, list[tuple[str, str, int]]] = {
    "Locality": [
        ("changed_outside", "Changed outside mask ↓", 3),
        ("mask_iou", "Mask-coherence IoU ↑", 3),
        ("mask_area", "Mask area", 3),
        ("changed_area", "Changed area", 3),
    ],
    "Diversity": [
        ("lpips_same_source", "Same-source LPIPS ↑", 3),
        ("lpips", "Set LPIPS ↑", 3),
        ("code_ratio", "Code / defect change ↑", 3),
    ],
    "Placement": [
        ("request_changed_iou", "IoU request vs changed ↑", 3),
        ("request_predicted_iou", "IoU request vs predicted mask ↑", 3),
        ("changed_off_foreground", "Changed off foreground ↓", 3),
    ],
    "Fidelity": [
        ("fid64", "FID-64 ↓", 2),
        ("kid_mean", "KID ↓", 4),
    ],
}
METRICS = [key for columns in SECTIONS.values() for key, _, _ in columns]
SIZES = [
    ("n_fake", "Generated (evaluation)"),
    ("n_sources", "Source images"),
    ("n_per_image", "Per source"),
    ("n_placement", "Placement set"),
    ("n_real_train", "FID-64 real"),
    ("n_kid_real", "KID real"),
    ("batches", "Batches"),
    ("train_seconds", "Train s"),
    ("cell_seconds", "Cell s (all)"),
]


@dataclass(frozen=True)
class DataSpec:
    """One data set of the table: a procedural product, or a category of ``root``
    (``product`` is a product config name, or ``category/defect``)."""

    product: str
    root: str | None = None

    @property
    def label(self) -> str:
        name = self.product.replace("/", "-")
        return name if self.root is None else f"real-{name}"

    @property
    def title(self) -> str:
        return f"{self.product} ({'procedural' if self.root is None else 'MVTec AD'})"

    def overrides(self) -> list[str]:
        if "/" in self.product:
            category, defect = self.product.split("/", 1)
            out = [f"data.category={category}", f"data.defect={defect}"]
        else:
            out = [f"product={self.product}"]
        return out + ([f"data.root={self.root}"] if self.root else [])


def data_specs(cfg: DictConfig) -> list[DataSpec]:
    specs = [DataSpec(str(p)) for p in cfg.products]
    if cfg.get("data_root"):
        root = Path(str(cfg.data_root)).expanduser()
        if not root.is_dir():
            raise ConfigError(f"data_root={str(cfg.data_root)!r} is not a folder")
        specs += [DataSpec(str(p), str(root)) for p in cfg.real_products]
    return specs


# ------------------------------------------------------------------------------ intervals
@dataclass
class Bootstrap:
    """Percentile intervals from evaluate.py's resampling settings (``None``: off)."""

    resampler: B.Resampler | None
    level: float = 0.95

    @classmethod
    def from_options(cls, options: DictConfig) -> Bootstrap:
        settings = options.get("bootstrap") or {}
        n = int(settings.get("n", 0))
        resampler = B.Resampler(n, seed=int(settings.get("seed", 0))) if n > 0 else None
        return cls(resampler, float(settings.get("level", 0.95)))

    def interval(
        self, name: str, n: int, statistic: Callable[[np.ndarray], np.ndarray]
    ) -> list[float] | None:
        if self.resampler is None or n < 1:
            return None
        return B.percentile_interval(statistic(self.resampler.weights(name, n)), self.level)


def ratio_with_interval(
    boot: Bootstrap, name: str, numerator: torch.Tensor, denominator: torch.Tensor
) -> tuple[float | None, list[float] | None]:
    """Σ numerator / Σ denominator over a set, with its bootstrap interval over images."""
    num, den = numerator.numpy(), denominator.numpy()
    value = M.pooled_ratio(numerator, denominator)
    if value is None:
        return None, None
    return value, boot.interval(name, len(num), lambda w: B.weighted_ratio(num, den, w))


# ------------------------------------------------------------------------------ measurements
def requested_masks(folder: Path, rows: list[dict[str, str]], size: int) -> torch.Tensor | None:
    """The requested masks of a controllable model's samples (N, 1, H, W) in {0, 1}, from the
    manifest; None when the folder has none (a model that takes no request)."""
    if not rows or not all(r.get("requested_mask") for r in rows):
        return None
    from PIL import Image

    masks = []
    for r in rows:
        with Image.open(folder / r["requested_mask"]) as image:
            mask = torch.from_numpy(np.array(image.convert("L")) >= 128).float()
        if mask.shape != (size, size):
            raise DataError(f"{r['requested_mask']} is {tuple(mask.shape)}, not {size}x{size}")
        masks.append(mask[None])
    return torch.stack(masks)


def same_source_lpips(
    suite: MetricSuite, images: torch.Tensor, sources: list[str], boot: Bootstrap
) -> dict[str, Any]:
    """Mean over source images (with ≥ 2 samples) of the mean LPIPS between their samples;
    the interval resamples source images."""
    groups: dict[str, list[int]] = {}
    for i, source in enumerate(sources):
        groups.setdefault(source, []).append(i)
    groups = {k: v for k, v in groups.items() if len(v) >= 2}
    out: dict[str, Any] = {"lpips_same_source": None, "n_groups": len(groups)}
    if suite.networks.lpips is None or not groups:
        return out
    means = []
    for index in groups.values():
        pairs = M.pairwise_within(
            suite.networks.lpips,
            images[index].to(suite.device),
            batch_size=int(suite.options.batch_size),
        )
        n = len(index)
        means.append(float(pairs.sum()) / (n * (n - 1)))
    values = np.asarray(means)
    out["lpips_same_source"] = float(values.mean())
    out["lpips_same_source_interval"] = boot.interval(
        "sources", len(values), lambda w: B.weighted_mean(values, w)
    )
    return out


@torch.inference_mode()
def code_diversity(
    model: Any,
    datamodule: Any,
    boot: Bootstrap,
    n_sources: int = 8,
    n_requests: int = 2,
    n_codes: int = 4,
    seed: int = 0,
) -> dict[str, Any]:
    """What the noise code alone changes: for each (source image, request) group, ``n_codes``
    codes on the same source and the same requested mask. ``code_change`` is the mean absolute
    difference (images in [0, 1]) inside the request between two codes' samples, averaged over
    code pairs and groups; ``defect_change`` that between a sample and its source inside the
    request — how strongly the defect repaints it. Their ratio near 0 means the codes are
    ignored; near 1, two codes differ as much as a defect differs from the intact surface.
    Intervals resample groups. Requests are stored training masks (flipped, rotated)."""
    split = "normal_test" if datamodule.split.normal_test else "normal_train"
    sources = datamodule.eval_dataset(split)
    n_sources = min(n_sources, len(sources))
    codes = model.codes([seed + j for j in range(n_codes)])
    code_changes, defect_changes = [], []
    for i in range(n_sources):
        x = sources[i]["image"][None].to(model.device)
        request_seeds = [seed + 7919 * (i * n_requests + r + 1) for r in range(n_requests)]
        requests, types = model.fallback_masks(request_seeds)
        requests = torch.nn.functional.interpolate(requests, size=x.shape[-2:], mode="nearest")
        for request, defect_type in zip(requests, types, strict=True):
            image, _ = model.synthesize(
                x.expand(n_codes, -1, -1, -1),
                requested=request[None].expand(n_codes, -1, -1, -1),
                z=codes,
                defect_type=defect_type.expand(n_codes),
            )
            inside = request[0] >= 0.5
            if not bool(inside.any()):
                continue
            pixels = ((image + 1) / 2)[:, :, inside]  # (codes, 3, pixels) in [0, 1]
            diffs = (pixels[:, None] - pixels[None]).abs().mean(dim=(2, 3))
            pairs = n_codes * (n_codes - 1)
            code_changes.append(float(diffs.sum()) / pairs if pairs else 0.0)
            source_pixels = ((x[0] + 1) / 2)[:, inside]
            defect_changes.append(float((pixels - source_pixels).abs().mean()))
    out: dict[str, Any] = {"code_change": None, "defect_change": None, "code_ratio": None}
    if not code_changes or n_codes < 2:
        return out
    code, defect = np.asarray(code_changes), np.asarray(defect_changes)
    out.update(
        code_change=float(code.mean()),
        code_change_interval=boot.interval(
            "code_groups", len(code), lambda w: B.weighted_mean(code, w)
        ),
        defect_change=float(defect.mean()),
        defect_change_interval=boot.interval(
            "code_groups", len(defect), lambda w: B.weighted_mean(defect, w)
        ),
        n_code_groups=len(code),
        n_codes=n_codes,
    )
    if defect.sum() > 0:
        out["code_ratio"] = float(code.sum() / defect.sum())
        out["code_ratio_interval"] = boot.interval(
            "code_groups", len(code), lambda w: B.weighted_ratio(code, defect, w)
        )
    return out


def locality(
    samples: SampleSet, requested: torch.Tensor | None, change_threshold: float, boot: Bootstrap
) -> dict[str, Any]:
    """Changed-outside share against the requested masks (when given) or the predicted ones."""
    masks = requested if requested is not None else samples.masks
    if masks is None or samples.sources is None:
        return {"changed_outside": None, "changed_outside_mask": None}
    threshold = 0.5 if requested is not None else float(samples.info.get("threshold", 0.5))
    stats = M.changed_outside_statistics(
        samples.sources, samples.images, masks, threshold, change_threshold
    )
    value, interval = ratio_with_interval(boot, "fake", stats["changed_outside"], stats["outside"])
    return {
        "changed_outside": value,
        "changed_outside_interval": interval,
        "changed_outside_mask": "requested" if requested is not None else "predicted",
    }


def placement_measures(
    samples: SampleSet,
    requested: torch.Tensor | None,
    foreground: np.ndarray,
    change_threshold: float,
    boot: Bootstrap,
    name: str,
) -> dict[str, Any]:
    """The placement columns of one generated set (``requested`` None: only the share of the
    changed pixels off the foreground)."""
    if samples.sources is None:
        return {}
    fg = torch.from_numpy(np.asarray(foreground) > 0)
    if requested is None:
        stats = M.placement_statistics(
            samples.sources,
            samples.images,
            torch.zeros(len(samples.images), 1, *samples.images.shape[-2:]),
            foreground=fg,
            change_threshold=change_threshold,
        )
    else:
        stats = M.placement_statistics(
            samples.sources,
            samples.images,
            requested,
            predicted=samples.masks,
            foreground=fg,
            mask_threshold=float(samples.info.get("threshold", 0.5)),
            change_threshold=change_threshold,
        )
    out: dict[str, Any] = {}
    value, interval = ratio_with_interval(
        boot, name, stats["changed_off_foreground"], stats["changed"]
    )
    out["changed_off_foreground"], out["changed_off_foreground_interval"] = value, interval
    if requested is None:
        return out
    for key in ("request_changed", "request_predicted"):
        if f"{key}_intersection" in stats:
            value, interval = ratio_with_interval(
                boot, name, stats[f"{key}_intersection"], stats[f"{key}_union"]
            )
            out[f"{key}_iou"], out[f"{key}_iou_interval"] = value, interval
    want = requested[:, 0] >= 0.5
    out["requested_off_foreground"] = M.pooled_ratio(
        (want & ~fg).flatten(1).sum(1).double(), want.flatten(1).sum(1).double()
    )
    outside = M.changed_outside_statistics(
        samples.sources, samples.images, requested, 0.5, change_threshold
    )
    out["placement_changed_outside"] = M.pooled_ratio(
        outside["changed_outside"], outside["outside"]
    )
    return out


def heldout_masks(datamodule: Any, folder: Path) -> Path:
    """The held-out test defects' real masks copied into ``folder`` under names that match no
    source image (so generation cycles them in name order)."""
    samples = datamodule.split.defect_test
    if not samples:
        raise ConfigError(
            "placement.mode=heldout: this product holds no test defects out; use "
            "placement.mode=foreground or random"
        )
    folder.mkdir(parents=True, exist_ok=True)
    for i, sample in enumerate(samples):
        shutil.copyfile(sample.mask, folder / f"heldout_{i:03d}{Path(sample.mask).suffix}")
    return folder


def generate_placement_set(
    cfg: DictConfig, ckpt: Path, datamodule: Any, folder: Path
) -> tuple[Path, dict[str, Any]]:
    """Generate the placement set of a controllable checkpoint into ``folder/samples``."""
    mode = str(cfg.placement.mode)
    if mode not in PLACEMENT_MODES:
        raise ConfigError(f"placement.mode={mode!r}; expected one of {list(PLACEMENT_MODES)}")
    group = "folder" if mode == "heldout" else mode
    gen_cfg = composed(
        "generate",
        [
            f"placement={group}",
            "logger=none",
            f"seed={int(cfg.placement.seed)}",
            f"n_per_image={int(cfg.placement.n_per_image)}",
            *cfg.get("generate_overrides", []),
        ],
        folder,
        ckpt=str(ckpt),
    )
    if mode == "heldout":
        masks = heldout_masks(datamodule, folder / "masks")
        OmegaConf.update(gen_cfg, "placement.mode", str(masks))
    samples = folder / "samples"
    info = run_synthesis(gen_cfg, samples)
    return samples, info


def _interval_of(report: dict[str, Any], key: str) -> list[float] | None:
    return (report.get("intervals") or {}).get(key)


def run_cell(
    cfg: DictConfig, variant: str, data: DataSpec, seed: int, out: Path, suite: MetricSuite
) -> dict[str, Any]:
    folder = out / cell_name(variant, data.label, seed)
    if (saved := saved_row(folder)) is not None:
        return saved
    row_file = folder / "row.json"
    start = time.perf_counter()
    v = cfg.variants[variant]
    n_per_image = int(cfg.n_per_image)
    if str(v.model) not in cfg.controllable_models:
        n_per_image = min(n_per_image, len(FLIP_VARIANTS))  # a deterministic model's flips
    overrides = [
        f"model={v.model}",
        f"experiment={v.experiment}",
        f"seed={seed}",
        *data.overrides(),
        *v.overrides,
        *cfg.train_overrides,
        *(cfg.get("real_overrides") or [] if data.root else []),
    ]
    train_cfg, eval_cfg, train_seconds = train_and_evaluate(
        cfg,
        overrides,
        folder,
        suite,
        eval_overrides=[f"n_per_image={n_per_image}"],
        model_name=str(v.model),
    )
    ckpt = folder / "train" / "checkpoints" / "last.ckpt"
    report = json.loads((folder / "evaluate" / "metrics.json").read_text())
    flat = report_row(report)
    meta = report.get("meta") or {}
    change = float(eval_cfg.metrics.change_threshold)
    boot = Bootstrap.from_options(eval_cfg.metrics)

    model, checkpoint = load_model(ckpt, "cpu")
    controllable = is_controllable(model)
    datamodule = datamodule_from(checkpoint, {}, str(train_cfg.paths.cache_dir))
    datamodule.setup()
    eval_folder = folder / "evaluate" / "samples"
    samples = load_samples(eval_folder, datamodule.cache)
    rows = read_manifest(eval_folder)
    size = int(samples.images.shape[-1])
    requested = requested_masks(eval_folder, rows, size) if controllable else None
    foreground = datamodule.foreground_mask()

    row: dict[str, Any] = {
        "variant": variant,
        "label": str(v.label),
        "data": data.label,
        "data_title": data.title,
        "seed": seed,
        "controllable": controllable,
        **locality(samples, requested, change, boot),
        "mask_iou": flat.get("mask_iou"),
        "mask_iou_interval": _interval_of(report, "mask_iou"),
        "mask_area": flat.get("mask_area"),
        "mask_area_interval": _interval_of(report, "mask_area"),
        "changed_area": flat.get("mask_changed_area"),
        "changed_area_interval": _interval_of(report, "mask_changed_area"),
        **same_source_lpips(suite, samples.images, [r["source"] for r in rows], boot),
        "lpips": flat.get("lpips"),
        "lpips_interval": _interval_of(report, "lpips"),
        "fid64": flat.get("fid64"),
        "fid64_interval": _interval_of(report, "fid64"),
        "kid_mean": flat.get("kid_mean"),
        "kid_mean_interval": _interval_of(report, "kid_mean"),
        "kid_subset_std": flat.get("kid_std"),
        "n_fake": meta.get("n_fake"),
        "n_real_train": meta.get("n_real_train"),
        "n_kid_real": meta.get("n_fid2048_real"),
        "n_sources": len({r["source"] for r in rows}),
        "n_per_image": n_per_image,
        "foreground_coverage": foreground.coverage,
        "foreground_is_object": foreground.is_object,
        "batches": (checkpoint.get("low_data") or {}).get("batches_seen"),
        "grid": str(eval_folder / "grid.png"),
        "skipped": report.get("skipped", {}),
    }
    if controllable:
        placement_folder, info = generate_placement_set(cfg, ckpt, datamodule, folder / "placement")
        placed = load_samples(placement_folder, datamodule.cache)
        placed_rows = read_manifest(placement_folder)
        placed_requested = requested_masks(placement_folder, placed_rows, size)
        row.update(
            placement_measures(placed, placed_requested, foreground.mask, change, boot, "placement")
        )
        row["n_placement"] = len(placed_rows)
        row["placement"] = info.get("placement")
        row.update(code_diversity(model, datamodule, boot, **cfg.code_diversity))
        figure = codes_by_placements(
            model,
            datamodule,
            source_index=int(cfg.figure.source_index),
            n_codes=int(cfg.figure.n_codes),
            placements=list(cfg.figure.placements),
            seed=int(cfg.figure.seed),
            scale=int(cfg.figure.scale),
        )
        save_png(figure, folder / "codes_by_placements.png")
        row["figure"] = str(folder / "codes_by_placements.png")
    else:
        # no request to follow: only where its changes land, on the evaluation set itself
        row.update(placement_measures(samples, None, foreground.mask, change, boot, "fake"))
        row["n_placement"] = None
    # report.html of the run (a controllable model's shows the codes × placements figure)
    row["report"] = str(build_report(folder / "train", cache_dir=str(train_cfg.paths.cache_dir)))
    row["train_seconds"] = train_seconds
    row["cell_seconds"] = round(time.perf_counter() - start, 1)
    write_text(json.dumps(row, indent=2, default=str) + "\n", row_file)
    return row


# ------------------------------------------------------------------------------ the table
def aggregate(rows: list[dict[str, Any]], cfg: DictConfig, specs: list[DataSpec]) -> list[dict]:
    """One row per variant × data: with one seed the value and its bootstrap interval
    (``<key>_lo`` / ``<key>_hi``), with several the mean and sample std over seeds."""
    out = []
    for data in specs:
        for variant in cfg.run:
            group = [r for r in rows if r["variant"] == variant and r["data"] == data.label]
            if not group:
                continue
            agg: dict[str, Any] = {
                "Model": group[0]["label"],
                "Data": data.title,
                "Seeds": len(group),
                "controllable": group[0]["controllable"],
            }
            for key in METRICS:
                values = [r.get(key) for r in group if isinstance(r.get(key), int | float)]
                agg[key] = statistics.fmean(values) if values else None
                if len(group) == 1:
                    interval = group[0].get(f"{key}_interval")
                    agg[f"{key}_lo"], agg[f"{key}_hi"] = interval if interval else (None, None)
                else:
                    agg[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
            for key, _ in SIZES:
                values = [r.get(key) for r in group if r.get(key) is not None]
                agg[key] = values[0] if values and len(set(values)) == 1 else values or None
            agg["grid"], agg["figure"] = group[0].get("grid"), group[0].get("figure")
            out.append(agg)
    return out


def _cell(row: dict[str, Any], key: str, digits: int) -> str:
    value = row.get(key)
    if value is None:
        return DASH
    text = f"{value:.{digits}f}"
    if row.get(f"{key}_std") is not None:
        return text + f" ± {row[f'{key}_std']:.{digits}f}"
    lo, hi = row.get(f"{key}_lo"), row.get(f"{key}_hi")
    if lo is not None and hi is not None:
        text += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    return text


def _size(value: Any) -> str:
    if value is None:
        return DASH
    if isinstance(value, list):
        return "/".join(str(v) for v in value)
    return f"{value:.0f}" if isinstance(value, float) else str(value)


def markdown(table: list[dict[str, Any]], cfg: DictConfig) -> str:
    seeds = list(cfg.seeds)
    placement = f"placement.mode={cfg.placement.mode}, seed {cfg.placement.seed}"
    lines = [
        f"# {cfg.title}",
        "",
        f"Preset {cfg.preset}, seeds {seeds}; every model trained for the same batches. "
        + (
            "Values: one seed, `value [lo, hi]` = bootstrap interval over images "
            "(metrics.bootstrap.level, 95 % by default)."
            if len(seeds) == 1
            else "Values: mean ± sample std over seeds."
        ),
        "",
    ]
    for section, columns in SECTIONS.items():
        headers = ["Model", "Data", "Seeds", *(title for _, title, _ in columns)]
        lines += [f"## {section}", "", "| " + " | ".join(headers) + " |"]
        lines.append("|" + "---|" * len(headers))
        for row in table:
            cells = [str(row["Model"]), str(row["Data"]), str(row["Seeds"])]
            cells += [_cell(row, key, digits) for key, _, digits in columns]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    headers = ["Model", "Data", *(title for _, title in SIZES)]
    lines += ["## Set sizes", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in table:
        cells = [str(row["Model"]), str(row["Data"]), *(_size(row.get(k)) for k, _ in SIZES)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "- Changed outside mask: share of the pixels outside the mask whose mean |G(x) − x| "
        "exceeds metrics.change_threshold; the mask is the *requested* one for the "
        "controllable model, the *predicted* one for the others.",
        "- Same-source LPIPS: mean LPIPS between the samples of one source image (controllable "
        "model: a different noise code *and* a different stored request per sample — the "
        "codes alone are shown by the figure; the paper models are deterministic: their ≤ 4 "
        "flip variants, flipped back); interval over source images.",
        "- Code / defect change: what the noise code alone changes — on one source and one "
        "request, the mean |Δ| inside the request between two codes' samples, over the mean "
        "|Δ| between a sample and its source there (0: the codes are ignored; 1: two codes "
        f"differ as much as a defect from the intact surface); {DASH} for deterministic models; "
        "interval over (source, request) groups.",
        f"- Placement: requested masks never seen in training ({placement}); "
        f"{DASH} for models that take no request. Changed off foreground: share of the changed "
        "pixels off the product's foreground (textures: the whole image is foreground, so 0); "
        "for the models without requests it is measured on their evaluation set.",
        "- Fidelity: evaluate.py's FID-64 (real set: the GAN's training defects) and KID "
        "(real set: metrics.real_set); small real sets make both biased, compare rows.",
    ]
    return "\n".join(lines) + "\n"


def write_csv(table: list[dict[str, Any]], path: Path) -> None:
    fields = list(dict.fromkeys(k for row in table for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(table)


def figures(rows: list[dict[str, Any]], specs: list[DataSpec], out: Path) -> list[Path]:
    """The first seed's codes × placements figure of each data set, beside the tables."""
    written = []
    for data in specs:
        match = [r for r in rows if r["data"] == data.label and r.get("figure")]
        if match and Path(match[0]["figure"]).is_file():
            path = out / f"codes_by_placements-{data.label}.png"
            shutil.copyfile(match[0]["figure"], path)
            written.append(path)
    return written


def table5(cfg: DictConfig) -> dict[str, float]:
    start = time.perf_counter()
    check_variants(cfg)
    if str(cfg.placement.mode) not in PLACEMENT_MODES:
        raise ConfigError(
            f"placement.mode={cfg.placement.mode!r}; expected one of {list(PLACEMENT_MODES)}"
        )
    specs = data_specs(cfg)
    out, suite = open_study(cfg)
    rows = run_study(cfg, specs, lambda d: d.label, out, suite, run_cell)
    if rows is None:
        return {}
    table = aggregate(rows, cfg, specs)
    text = markdown(table, cfg)
    write_text(text, out / "table5.md")
    write_csv(table, out / "table5.csv")
    write_text(
        json.dumps({"cells": rows, "table": table}, indent=2, default=str) + "\n",
        out / "table5.json",
    )
    grids = side_by_side(rows, [d.label for d in specs], list(cfg.run), out, key="data")
    pictures = figures(rows, specs, out)
    write_text(OmegaConf.to_yaml(cfg), out / "table5.yaml")
    log.info("table5 written to %s in %.0f s", out, time.perf_counter() - start)
    print(text)
    for path in [*grids, *pictures]:
        print(f"figure: {path}")
    for row in rows:
        print(f"report: {row['report']}")
    return {}
