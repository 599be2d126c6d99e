"""The job behind ``src/evaluate.py``: synthetic samples + real defects → metrics.json.

Metrics (each documented in the README):
- ``fid64``: the paper's protocol — 64-d Inception features (first pooling block); real set =
  the GAN's training defect images, fake set = the generated images.
- ``fid2048``, ``kid``: standard 2048-d pool features; real set = the held-out real defect
  images when there are any, else the training ones (``meta.fid2048_real_set`` says which).
- ``lpips``: diversity, mean LPIPS over all pairs of the first ≤100 generated images.
- ``dist_to_train``: mean over generated images of the minimum LPIPS to a training defect.
- ``ic_lpips``: DFMGAN's clustered LPIPS (clusters = nearest training defect image).
- ``mask_coherence``: IoU of the predicted mask with the pixels G actually changed.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from defectsynth import metrics as M
from defectsynth.data.cache import ImageCache
from defectsynth.data.transforms import EvalTransform
from defectsynth.errors import ConfigError, DataError
from defectsynth.generation import datamodule_from, log_grid_to_wandb, loggers_for, run_synthesis
from defectsynth.synthesis import read_info, read_manifest, resolve_device
from defectsynth.utils.io import write_text

log = logging.getLogger(__name__)

FeatureExtractor = Callable[[torch.Tensor], torch.Tensor]
Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
TABLE_COLUMNS = (
    ("fid64", "FID (64-d) ↓"),
    ("lpips", "LPIPS ↑"),
    ("dist_to_train", "Dist. to train"),
    ("fid2048", "FID (2048-d) ↓"),
    ("kid_mean", "KID ↓"),
    ("ic_lpips", "IC-LPIPS ↑"),
    ("mask_iou", "Mask IoU ↑"),
    ("mask_area", "Mask area"),
)


@dataclass
class SampleSet:
    """Generated images (N,3,H,W) in [-1,1], soft masks (N,1,H,W) or None, their sources."""

    images: torch.Tensor
    masks: torch.Tensor | None
    sources: torch.Tensor | None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Networks:
    """Feature networks; built lazily from the config unless injected (tests)."""

    inception64: FeatureExtractor | None = None
    inception2048: FeatureExtractor | None = None
    lpips: Distance | None = None
    # network name → why it could not be loaded (with skip_missing), so it is tried only once
    unavailable: dict[str, str] = field(default_factory=dict)


def _read_png(path: Path, grayscale: bool = False) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L" if grayscale else "RGB"))


def load_samples(folder: Path, cache: ImageCache) -> SampleSet:
    """Read a folder written by generate.py, with the source images re-read the same way."""
    info = read_info(folder)
    rows = read_manifest(folder)
    if not rows:
        raise DataError(f"{folder}/manifest.csv lists no images")
    to_tensor = EvalTransform(int(info["image_size"]))
    images = torch.stack([to_tensor(_read_png(folder / r["image"]))["image"] for r in rows])
    masks = None
    if all(r.get("soft_mask") for r in rows):
        masks = torch.stack(
            [
                torch.from_numpy(_read_png(folder / r["soft_mask"], grayscale=True).copy())
                .float()
                .div(255)
                .unsqueeze(0)
                for r in rows
            ]
        )
    sources = None
    if all(r.get("source") and Path(r["source"]).is_file() for r in rows):
        sources = torch.stack(
            [
                to_tensor(cache.image(Path(r["source"]), int(info["image_size"])))["image"]
                for r in rows
            ]
        )
    return SampleSet(images, masks, sources, info)


# the metrics each feature network serves
METRICS_OF_NETWORK = {
    "inception64": ("fid64",),
    "inception2048": ("fid2048", "kid"),
    "lpips": ("lpips", "dist_to_train", "ic_lpips"),
}


class MetricSuite:
    """Computes every metric. ``prepare`` loads the feature networks before any work, so a
    missing weight file stops the run at once, or (``skip_missing``) makes its metrics null
    with the reason."""

    def __init__(
        self,
        options: DictConfig,
        networks: Networks | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.options = options
        self.networks = networks or Networks()
        self.device = torch.device(device)
        self.skipped: dict[str, str] = {}

    def _load(self, name: str) -> Any:
        weights_dir = self.options.weights_dir
        if name == "lpips":
            return M.LpipsDistance(
                M.load_lpips(weights_dir=weights_dir).to(self.device),
                authors_unscaled=self.options.lpips_authors_unscaled,
            )
        dims = 64 if name == "inception64" else 2048
        return M.load_inception(dims=dims, weights_dir=weights_dir).to(self.device)

    def prepare(self) -> MetricSuite:
        for name, metric_names in METRICS_OF_NETWORK.items():
            if getattr(self.networks, name) is not None:
                continue
            if name not in self.networks.unavailable:
                try:
                    setattr(self.networks, name, self._load(name))
                    continue
                except M.MissingWeightsError as err:
                    if not self.options.skip_missing:
                        raise
                    log.warning("skipping %s: %s", ", ".join(metric_names), err)
                    self.networks.unavailable[name] = str(err)
            self.skipped.update(dict.fromkeys(metric_names, self.networks.unavailable[name]))
        return self

    def features(self, name: str, images: torch.Tensor) -> torch.Tensor:
        extractor = getattr(self.networks, name)
        features = M.extract_features(
            extractor, images.to(self.device), batch_size=self.options.batch_size
        )
        return features.double().cpu()

    def compute(
        self, fakes: SampleSet, real_train: torch.Tensor, real_test: torch.Tensor
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        self.prepare()
        o = self.options
        heldout = len(real_test) >= 2
        fid_real = real_test if heldout else real_train
        results: dict[str, Any] = {
            name: None for names in METRICS_OF_NETWORK.values() for name in names
        }

        if self.networks.inception64 is not None:
            results["fid64"] = M.fid_from_features(
                self.features("inception64", real_train), self.features("inception64", fakes.images)
            )
        if self.networks.inception2048 is not None:
            real = self.features("inception2048", fid_real)
            fake = self.features("inception2048", fakes.images)
            mean, std = M.kid_from_features(
                real, fake, subsets=o.kid_subsets, subset_size=o.kid_subset_size
            )
            results["fid2048"] = M.fid_from_features(real, fake)
            results["kid"] = {"mean": mean, "std": std}
        if self.networks.lpips is not None:
            distance = self.networks.lpips
            fake, train = fakes.images.to(self.device), real_train.to(self.device)
            to_train = M.pairwise_distances(distance, fake, train, batch_size=o.batch_size)
            results["lpips"] = M.lpips_diversity(
                distance, fake, max_images=o.lpips_max_images, batch_size=o.batch_size
            )
            results["dist_to_train"] = M.dist_to_train(
                distance, fake, train, fake_to_train=to_train
            )
            results["ic_lpips"] = M.ic_lpips(distance, fake, train, fake_to_train=to_train)

        if fakes.masks is None or fakes.sources is None:
            results["mask_coherence"] = None
            self.skipped["mask_coherence"] = (
                "the model outputs no mask" if fakes.masks is None else "no source images"
            )
        else:
            results["mask_coherence"] = M.mask_coherence(
                fakes.sources,
                fakes.images,
                fakes.masks,
                mask_threshold=float(fakes.info.get("threshold", 0.5)),
                change_threshold=o.change_threshold,
            )
        meta = {
            "n_fake": len(fakes.images),
            "n_real_train": len(real_train),
            "n_real_test": len(real_test),
            "fid64_real_set": "defect_train",
            "fid2048_real_set": "defect_test" if heldout else "defect_train",
            "lpips_input": "unscaled [0,1] (authors' code)"
            if o.lpips_authors_unscaled
            else "[-1,1]",
        }
        return results, meta


def flatten(results: dict[str, Any]) -> dict[str, float | None]:
    """One number per column: kid → kid_mean/kid_std, ic_lpips → its value, mask → iou/area."""
    kid = results.get("kid") or {}
    ic = results.get("ic_lpips")
    mask = results.get("mask_coherence") or {}
    return {
        "fid64": results.get("fid64"),
        "fid2048": results.get("fid2048"),
        "kid_mean": kid.get("mean"),
        "kid_std": kid.get("std"),
        "lpips": results.get("lpips"),
        "dist_to_train": results.get("dist_to_train"),
        "ic_lpips": ic.get("value") if isinstance(ic, dict) else ic,
        "mask_iou": mask.get("iou"),
        "mask_area": mask.get("mask_area"),
    }


def fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown_table(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> str:
    """Rows of flattened metrics (with the label columns ``keys``) as a Markdown table."""
    headers = [*keys, *(title for _, title in TABLE_COLUMNS)]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cells = [str(row.get(k, "")) for k in keys]
        cells += [fmt(row.get(name), 4 if name == "kid_mean" else 3) for name, _ in TABLE_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def csv_text(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    fields = list(dict.fromkeys(k for row in rows for k in row))
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_reports(out: Path, report: dict[str, Any], label: dict[str, Any]) -> dict[str, Any]:
    """metrics.json (full), metrics.csv (one flat row), metrics.md (a one-row table)."""
    row = {**label, **flatten(report["metrics"])}
    write_text(json.dumps(report, indent=2, default=str) + "\n", out / "metrics.json")
    write_text(csv_text([row]), out / "metrics.csv")
    write_text(markdown_table([row], tuple(label)), out / "metrics.md")
    return row


def evaluate(cfg: DictConfig, networks: Networks | None = None) -> dict[str, float]:
    """Generate (``ckpt=``) or read (``samples=``) synthetic data, measure it, write reports."""
    out = Path(cfg.paths.output_dir)
    suite = MetricSuite(cfg.metrics, networks, resolve_device(cfg.device)).prepare()
    if cfg.get("samples"):
        folder = Path(cfg.samples)
    elif cfg.get("ckpt"):
        folder = out / "samples"
        run_synthesis(cfg, folder)
    else:
        raise ConfigError(
            "give ckpt=<checkpoint> (generate, then evaluate) or samples=<folder "
            "written by src/generate.py>"
        )
    info = read_info(folder)
    loggers = loggers_for(cfg, info)
    if not cfg.get("samples"):
        log_grid_to_wandb(loggers, folder)
    overrides = OmegaConf.to_container(cfg.data, resolve=True)
    datamodule = datamodule_from(
        {"datamodule_hyper_parameters": info["data"]}, overrides, cfg.paths.cache_dir
    )
    datamodule.setup()
    fakes = load_samples(folder, datamodule.cache)
    real_train = _stack(datamodule.eval_dataset("defect_train"))
    real_test = _stack(datamodule.eval_dataset("defect_test"))
    if real_train.shape[-2:] != fakes.images.shape[-2:]:
        raise DataError(
            f"generated images are {tuple(fakes.images.shape[-2:])} but the real defects are "
            f"{tuple(real_train.shape[-2:])}; set data.image_size to the model's size"
        )

    results, meta = suite.compute(fakes, real_train, real_test)
    label = {
        "product": f"{info['category']} ({info['defect']})",
        "model": _model_name(info),
    }
    report = {
        "metrics": results,
        "skipped": suite.skipped,
        "meta": {
            **meta,
            **label,
            "samples": str(folder),
            "ckpt": info.get("ckpt"),
            "epoch": info.get("epoch"),
        },
    }
    row = write_reports(out, report, label)
    numbers = {k: v for k, v in row.items() if isinstance(v, float)}
    for logger in loggers:
        logger.log_metrics({f"eval/{k}": v for k, v in numbers.items()})
    log.info("metrics written to %s", out / "metrics.json")
    print((out / "metrics.md").read_text())
    return numbers


def _stack(dataset) -> torch.Tensor:
    if len(dataset) == 0:
        return torch.empty(0, 3, 1, 1)
    return torch.stack([dataset[i]["image"] for i in range(len(dataset))])


def _model_name(info: dict[str, Any]) -> str:
    class_path = info.get("model_class") or "defectsynth.models.defect_gan.DefectGAN"
    name = info.get("model") or class_path.rsplit(".", 1)[-1]
    return f"{name} ({info['ablation']})" if info.get("ablation") else name
