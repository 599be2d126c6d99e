"""The job behind ``src/lowdata.py`` (``make table6``): the paper preset against the
data-efficient preset (``experiment=low_data``) with the same batches, products and seeds.

Per cell (variant × product × seed) it trains, generates from the test images and evaluates
(``evaluate.py``'s metrics), then adds what the low-data question needs and evaluate.py does
not report: the identity L1 logged in the last epoch, each discriminator's last r_t (and ADA's
p), and the share of the pixels *outside* the predicted mask that the generator changed.
The table gives mean ± sample std over seeds (KID: its own subset std when there is one seed).
A cell whose ``row.json`` exists is reused, so an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import csv
import json
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from defectsynth.data.cache import ImageCache
from defectsynth.errors import ConfigError
from defectsynth.evaluation import MetricSuite, SampleSet, load_samples
from defectsynth.evaluation import evaluate as evaluate_job
from defectsynth.metrics.masks import changed_outside_mask
from defectsynth.synthesis import resolve_device
from defectsynth.tables import composed, finish_wandb
from defectsynth.training import train as train_job
from defectsynth.utils.grids import side_by_side
from defectsynth.utils.io import write_text
from defectsynth.workers import run_cells

log = logging.getLogger(__name__)

# column → (title, digits); "±" columns are aggregated as mean ± std over seeds
COLUMNS = {
    "batches": ("Batches", 0),
    "identity_l1": ("Identity L1 ↓", 3),
    "cycle_l1": ("Cycle L1 ↓", 3),
    "mask_iou": ("Mask-coherence IoU ↑", 3),
    "changed_outside": ("Changed outside mask ↓", 3),
    "changed_area": ("Changed (all) ", 3),
    "mask_area": ("Mask area", 3),
    "fid64": ("FID-64 ↓", 3),
    "kid_mean": ("KID ↓", 4),
    "lpips": ("LPIPS ↑", 3),
    "dist_to_train": ("Dist-to-train", 3),
    "rt_D_Y": ("r_t D_Y", 2),
    "rt_D_C": ("r_t D_C", 2),
}


def samples_changed_outside(
    samples: SampleSet, change_threshold: float = 0.1, masks: torch.Tensor | None = None
) -> float | None:
    """:func:`~defectsynth.metrics.masks.changed_outside_mask` of a generated set: outside
    ``masks`` (default: the predicted masks, binarised at the set's threshold); None without
    masks or sources."""
    masks = samples.masks if masks is None else masks
    if masks is None or samples.sources is None:
        return None
    return changed_outside_mask(
        samples.sources,
        samples.images,
        masks,
        mask_threshold=float(samples.info.get("threshold", 0.5)),
        change_threshold=change_threshold,
    )


def changed_outside_folder(folder: Path, cache: ImageCache, threshold: float = 0.1) -> float | None:
    """Share of the pixels outside the predicted mask that the generator changed, for a folder
    written by generate.py (see :func:`samples_changed_outside`)."""
    return samples_changed_outside(load_samples(folder, cache), threshold)


def last_epoch_values(run: Path) -> dict[str, float]:
    """The last logged value of every epoch-level metric of a run's CSV log."""
    values: dict[str, float] = {}
    for path in sorted(run.glob("csv/version_*/metrics.csv")):
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                for key, value in row.items():
                    if value and (key.endswith("_epoch") or key.startswith("daug/")):
                        values[key] = float(value)
    return values


@dataclass(frozen=True)
class Product:
    """A product of the study: procedural (``products``) or real MVTec AD (``real_products``,
    read from ``data_root``); ``key`` names its rows and folders."""

    name: str
    data_root: str | None = None

    @property
    def key(self) -> str:
        return self.name if self.data_root is None else f"{self.name}@mvtec"


def study_products(cfg: DictConfig) -> list[Product]:
    """The procedural products, then the real ones when ``data_root`` is a folder (absent: a
    warning, and the study runs without them)."""
    found = [Product(str(name)) for name in cfg.products]
    real = list(cfg.get("real_products") or [])
    root = cfg.get("data_root")
    if real and root:
        if Path(str(root)).is_dir():
            found += [Product(str(name), str(root)) for name in real]
        else:
            log.warning(
                "data_root=%s is not a folder: real_products=%s left out (set data_root to "
                "your MVTec AD copy, or real_products=[] to silence this)",
                root,
                real,
            )
    return found


def train_and_evaluate(
    cfg: DictConfig,
    overrides: list[str],
    folder: Path,
    suite: MetricSuite,
    eval_overrides: list[str] | None = None,
    **values: str,
) -> tuple[DictConfig, DictConfig, float]:
    """Train ``folder/train`` with ``overrides`` (``values`` set on the composed config), then
    generate from its last checkpoint and evaluate it into ``folder/evaluate`` with
    ``cfg.eval_overrides`` (+ ``eval_overrides``). With ``cfg.reuse_checkpoints`` an existing
    last.ckpt is evaluated without training on. Returns the train and evaluate configs and the
    training seconds."""
    start = time.perf_counter()
    values = {"run_name": folder.name, **values}
    train_cfg = composed("train", overrides, folder / "train", **values)
    last = folder / "train" / "checkpoints" / "last.ckpt"
    if cfg.get("reuse_checkpoints") and last.is_file():
        # measure an interrupted run where it stopped (its row records the batches trained)
        log.info("evaluating %s as it is (reuse_checkpoints=true)", last)
    else:
        train_job(train_cfg)
        finish_wandb()
    trained = time.perf_counter()
    eval_cfg = composed(
        "evaluate",
        [*cfg.eval_overrides, *(eval_overrides or [])],
        folder / "evaluate",
        ckpt=str(last),
    )
    evaluate_job(eval_cfg, suite.networks)
    finish_wandb()
    return train_cfg, eval_cfg, round(trained - start, 1)


def run_cell(
    cfg: DictConfig, variant: str, product: Product, seed: int, out: Path, suite: MetricSuite
) -> dict[str, Any]:
    folder = out / cell_name(variant, product.key, seed)
    if (saved := saved_row(folder)) is not None:
        return saved
    row_file = folder / "row.json"
    overrides = [
        f"experiment={cfg.variants[variant].experiment}",
        f"product={product.name}",
        f"seed={seed}",
        *cfg.variants[variant].overrides,
        *cfg.train_overrides,
    ]
    if product.data_root is not None:
        overrides += [f"data.root={product.data_root}", *cfg.get("real_overrides", [])]
    train_cfg, eval_cfg, train_seconds = train_and_evaluate(cfg, overrides, folder, suite)
    report = json.loads((folder / "evaluate" / "metrics.json").read_text())
    metrics = report["metrics"]
    coherence = metrics.get("mask_coherence") or {}
    kid = metrics.get("kid") or {}
    logged = last_epoch_values(folder / "train")
    checkpoint = torch.load(
        folder / "train" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    cache = ImageCache(Path(str(train_cfg.paths.cache_dir)))
    row: dict[str, Any] = {
        "variant": variant,
        "product": product.key,
        "seed": seed,
        "identity_l1": logged.get("train/loss_identity_epoch"),
        "cycle_l1": logged.get("train/loss_cycle_epoch"),
        "mask_iou": coherence.get("iou"),
        "mask_area": coherence.get("mask_area"),
        "changed_area": coherence.get("changed_area"),
        "changed_outside": changed_outside_folder(
            folder / "evaluate" / "samples",
            cache,
            float(eval_cfg.metrics.change_threshold),
        ),
        "fid64": metrics.get("fid64"),
        "kid_mean": kid.get("mean"),
        "kid_std": kid.get("std"),
        "lpips": metrics.get("lpips"),
        "dist_to_train": metrics.get("dist_to_train"),
        **{k.replace("daug/", ""): v for k, v in logged.items() if k.startswith("daug/")},
        "batches": (checkpoint.get("low_data") or {}).get("batches_seen"),
        "train_seconds": train_seconds,
        "grid": str(folder / "evaluate" / "samples" / "grid.png"),
        "skipped": report.get("skipped", {}),
    }
    write_text(json.dumps(row, indent=2) + "\n", row_file)
    return row


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if isinstance(v, int | float)]
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def aggregate(rows: list[dict[str, Any]], cfg: DictConfig) -> list[dict[str, Any]]:
    """One row per variant × product: mean and std over seeds of every column."""
    out = []
    for product in (p.key for p in study_products(cfg)):
        for variant in cfg.run:
            group = [r for r in rows if r["variant"] == variant and r["product"] == product]
            if not group:
                continue
            agg: dict[str, Any] = {
                "Variant": cfg.variants[variant].label,
                "Product": product,
                "Seeds": len(group),
            }
            for key in COLUMNS:
                mean, std = _mean_std([r.get(key) for r in group])
                agg[key], agg[f"{key}_std"] = mean, std
            if len(group) == 1 and agg.get("kid_mean") is not None:
                agg["kid_mean_std"] = group[0].get("kid_std")
            out.append(agg)
    return out


def _cell(mean: float | None, std: float | None, digits: int) -> str:
    if mean is None:
        return "–"
    return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


def markdown(rows: list[dict[str, Any]], title: str) -> str:
    headers = ["Variant", "Product", "Seeds", *(t for t, _ in COLUMNS.values())]
    lines = [f"# {title}", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cells = [str(row["Variant"]), str(row["Product"]), str(row["Seeds"])]
        cells += [_cell(row.get(k), row.get(f"{k}_std"), d) for k, (_, d) in COLUMNS.items()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def cell_name(variant: str, data: str, seed: int) -> str:
    """A study cell's folder name (and the key of its saved ``row.json``)."""
    return f"{variant}-{data}-seed{seed}"


def saved_row(folder: Path) -> dict[str, Any] | None:
    """A finished cell's ``row.json`` (an interrupted study resumes from these), else None."""
    row_file = folder / "row.json"
    if not row_file.is_file():
        return None
    log.info("reusing %s", row_file)
    return json.loads(row_file.read_text())


def run_study(
    cfg: DictConfig,
    datas: Sequence[Any],
    key: Callable[[Any], str],
    out: Path,
    suite: MetricSuite,
    run_cell: Callable[..., dict[str, Any]],
) -> list[dict[str, Any]] | None:
    """``run_cell(cfg, variant, data, seed, out, suite)`` for every data × seed × variant, in
    worker processes when ``jobs`` > 1 (:func:`~defectsynth.workers.run_cells`); a cell with
    its ``row.json`` is done. None in a worker."""
    cells = [(v, d, int(s)) for d in datas for s in cfg.seeds for v in cfg.run]
    return run_cells(
        cfg,
        cells,
        out,
        lambda v, d, s: run_cell(cfg, v, d, s, out, suite),
        done=lambda v, d, s: (out / cell_name(v, key(d), s) / "row.json").is_file(),
    )


def check_variants(cfg: DictConfig) -> None:
    unknown = [v for v in cfg.run if v not in cfg.variants]
    if unknown:
        raise ConfigError(f"run={list(cfg.run)} names {unknown}; variants: {list(cfg.variants)}")


def open_study(cfg: DictConfig) -> tuple[Path, MetricSuite]:
    """The output folder and the metric networks of a study over ``cfg.variants``; unknown
    names in ``run`` and missing weight files stop here, before any training."""
    check_variants(cfg)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    probe = composed("evaluate", list(cfg.eval_overrides), out)
    return out, MetricSuite(probe.metrics, device=resolve_device(probe.device)).prepare()


def lowdata(cfg: DictConfig) -> dict[str, float]:
    start = time.perf_counter()
    out, suite = open_study(cfg)
    rows = run_study(cfg, study_products(cfg), lambda p: p.key, out, suite, run_cell)
    if rows is None:
        return {}
    table = aggregate(rows, cfg)
    text = markdown(table, f"{cfg.title} (preset {cfg.preset}, seeds {list(cfg.seeds)})")
    write_text(text, out / "table6.md")
    fields = list(dict.fromkeys(k for row in table for k in row))
    with open(out / "table6.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(table)
    write_text(json.dumps({"cells": rows, "table": table}, indent=2) + "\n", out / "table6.json")
    grids = side_by_side(rows, [p.key for p in study_products(cfg)], list(cfg.run), out)
    write_text(OmegaConf.to_yaml(cfg), out / "lowdata.yaml")
    log.info("table6 written to %s in %.0f s", out, time.perf_counter() - start)
    print(text)
    for path in grids:
        print(f"grids: {path}")
    return {}
