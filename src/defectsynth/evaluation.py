"""The job behind ``src/evaluate.py``: synthetic samples + real defects → metrics.json.

Metrics (each documented in the README):
- ``fid64``: the paper's protocol — 64-d Inception features (first pooling block); real set =
  the GAN's training defect images, fake set = the generated images.
  ``metrics.fid64_real_source=original`` feeds the real images at their original resolution, as
  the authors did.
- ``fid2048``, ``kid``: standard 2048-d pool features; real set chosen by ``metrics.real_set``
  (held-out defects by default; ``meta.fid2048_real_set`` says which, and sets under 10 images
  are flagged).
- ``lpips``: diversity, mean LPIPS over all pairs of the first ≤100 generated images.
- ``dist_to_train``: mean over generated images of the minimum LPIPS to a training defect.
- ``ic_lpips``: DFMGAN's clustered LPIPS (clusters = training defect images, a cluster with < 2
  generated images counts 0); ``ic_lpips_nonempty``: the mean over clusters with ≥ 2 only.
- ``mask_coherence``: IoU of the predicted mask with the pixels G actually changed, and the
  mask overlap: mean IoU between the generated masks (1 = the same mask on every image).

Every number gets a bootstrap interval over images (``intervals`` in metrics.json) from the
features and distances computed once (:mod:`defectsynth.metrics.bootstrap`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from defectsynth import metrics as M
from defectsynth.data.cache import ImageCache
from defectsynth.data.transforms import EvalTransform
from defectsynth.errors import ConfigError, DataError
from defectsynth.generation import datamodule_from, log_grid_to_wandb, loggers_for, run_synthesis
from defectsynth.metrics import bootstrap as B
from defectsynth.metrics.inception import INPUT_SIZE as INCEPTION_INPUT_SIZE
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
    ("ic_lpips_nonempty", "IC-LPIPS (non-empty) ↑"),
    ("mask_iou", "Mask IoU ↑"),
    ("mask_area", "Mask area"),
    ("mask_overlap", "Mask overlap"),
)
REAL_SETS = ("heldout", "train", "all")
FID64_REAL_SOURCES = ("model_resolution", "original")
SMALL_REAL_SET = 10  # FID-2048 / KID against fewer real images than this are flagged
MASK_OVERLAP_MAX = 500  # masks compared pairwise for the overlap (an N² matrix)


@dataclass
class SampleSet:
    """Generated images (N,3,H,W) in [-1,1], soft masks (N,1,H,W) or None, their sources."""

    images: torch.Tensor
    masks: torch.Tensor | None
    sources: torch.Tensor | None
    info: dict[str, Any] = field(default_factory=dict)
    # per image: its source file and variant (flip, code) as the manifest names them; the mask
    # overlap compares images of different sources made the same way
    source_names: list[str] | None = None
    variants: list[str] | None = None


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
    return SampleSet(
        images,
        masks,
        sources,
        info,
        source_names=[r.get("source") or "" for r in rows],
        variants=[r.get("variant") or "" for r in rows],
    )


# the metrics each feature network serves
METRICS_OF_NETWORK = {
    "inception64": ("fid64",),
    "inception2048": ("fid2048", "kid"),
    "lpips": ("lpips", "dist_to_train", "ic_lpips", "ic_lpips_nonempty"),
}


def _choice(options: DictConfig, key: str, allowed: tuple[str, ...]) -> str:
    value = str(options.get(key, allowed[0]))
    if value not in allowed:
        raise ConfigError(f"metrics.{key}={value!r}; expected one of {list(allowed)}")
    return value


def fid_real_set(choice: str, train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, str]:
    """The real images FID-2048 and KID compare against, and its name for ``meta``.

    ``heldout``: the held-out real defects (never seen by the GAN), or the training ones when
    fewer than 2 are held out; ``train``: the GAN's training defects; ``all``: both.
    """
    if choice == "heldout":
        if len(test) >= 2:
            return test, "defect_test"
        return train, "defect_train (fewer than 2 held-out defects)"
    if choice == "train":
        return train, "defect_train"
    if len(test) == 0:
        return train, "defect_train (no held-out defects)"
    return torch.cat([train, test]), "defect_train+defect_test"


@dataclass
class Intervals:
    """Bootstrap intervals by flat column name, from resamples drawn by one seeded
    :class:`~defectsynth.metrics.bootstrap.Resampler` (None when bootstrap is off)."""

    resampler: B.Resampler | None
    level: float = 0.95
    values: dict[str, list[float] | None] = field(default_factory=dict)

    def weights(self, name: str, n: int) -> np.ndarray:
        assert self.resampler is not None
        return self.resampler.weights(name, n)

    seconds: float = 0.0  # the bootstrap's own cost, reported in meta

    def add(self, key: str, compute: Callable[[], np.ndarray]) -> None:
        if self.resampler is not None:
            start = time.perf_counter()
            self.values[key] = B.percentile_interval(compute(), self.level)
            self.seconds += time.perf_counter() - start


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
            net = _choice(self.options, "lpips_net", M.LPIPS_NETS)
            return M.LpipsDistance(
                M.load_lpips(weights_dir=weights_dir, net=net).to(self.device),
                authors_unscaled=self.options.lpips_authors_unscaled,
            )
        dims = 64 if name == "inception64" else 2048
        return M.load_inception(dims=dims, weights_dir=weights_dir).to(self.device)

    def prepare(self) -> MetricSuite:
        _choice(self.options, "real_set", REAL_SETS)
        _choice(self.options, "fid64_real_source", FID64_REAL_SOURCES)
        n = self.options.get("bootstrap", {}).get("n", 0)
        if not isinstance(n, int) or n < 0:
            raise ConfigError(f"metrics.bootstrap.n={n!r}; expected an integer ≥ 0 (0 = off)")
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

    def _intervals(self) -> Intervals:
        settings = self.options.get("bootstrap") or {}
        n = int(settings.get("n", 0))
        resampler = B.Resampler(n, seed=int(settings.get("seed", 0))) if n > 0 else None
        return Intervals(resampler, level=float(settings.get("level", 0.95)))

    def compute(
        self,
        fakes: SampleSet,
        real_train: torch.Tensor,
        real_test: torch.Tensor,
        fid64_real: torch.Tensor | None = None,
        real_masks: torch.Tensor | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """(metrics, intervals, meta). ``fid64_real``: the real training defects as FID-64 sees
        them when they are not ``real_train`` (``metrics.fid64_real_source=original``: each
        original image already resized to 299 px); the same images in the same order.
        ``real_masks``: their masks (N, 1, H, W), the reference of the mask overlap."""
        self.prepare()
        o = self.options
        real_set = _choice(o, "real_set", REAL_SETS)
        fid_real, fid_real_name = fid_real_set(real_set, real_train, real_test)
        # a real set is resampled as one named set, so metrics on the same images share draws
        fid_real_key = {"defect_test": "test", "defect_train+defect_test": "all"}.get(
            fid_real_name, "train"
        )
        results: dict[str, Any] = {
            name: None for names in METRICS_OF_NETWORK.values() for name in names
        }
        iv = self._intervals()
        n_fake, n_train = len(fakes.images), len(real_train)

        if self.networks.inception64 is not None:
            real = self.features("inception64", real_train if fid64_real is None else fid64_real)
            fake = self.features("inception64", fakes.images)
            results["fid64"] = M.fid_from_features(real, fake)
            iv.add(
                "fid64",
                lambda: B.frechet_resampled(
                    real.numpy(),
                    fake.numpy(),
                    iv.weights("train", n_train),
                    iv.weights("fake", n_fake),
                ),
            )
        if self.networks.inception2048 is not None:
            real2 = self.features("inception2048", fid_real)
            fake2 = self.features("inception2048", fakes.images)
            mean, std = M.kid_from_features(
                real2, fake2, subsets=o.kid_subsets, subset_size=o.kid_subset_size
            )
            results["fid2048"] = M.fid_from_features(real2, fake2)
            results["kid"] = {"mean": mean, "std": std}
            w_real = lambda: iv.weights(fid_real_key, len(fid_real))  # noqa: E731
            iv.add(
                "fid2048",
                lambda: B.frechet_resampled(
                    real2.numpy(), fake2.numpy(), w_real(), iv.weights("fake", n_fake)
                ),
            )
            iv.add("kid_mean", lambda: self._kid_resampled(real2, fake2, w_real(), iv, n_fake))
        if self.networks.lpips is not None:
            self._lpips_metrics(fakes.images, real_train, results, iv)

        mask_stats = None
        if fakes.masks is None or fakes.sources is None:
            results["mask_coherence"] = None
            self.skipped["mask_coherence"] = (
                "the model outputs no mask" if fakes.masks is None else "no source images"
            )
        else:
            mask_stats = M.mask_statistics(
                fakes.sources,
                fakes.images,
                fakes.masks,
                mask_threshold=float(fakes.info.get("threshold", 0.5)),
                change_threshold=o.change_threshold,
            )
            results["mask_coherence"] = M.coherence_from_statistics(mask_stats)
            self._mask_intervals(mask_stats, iv, n_fake)
            self._mask_overlap(fakes, results, iv)
            if real_masks is not None and len(real_masks) >= 2:
                # the reference: how much the real defects' own masks overlap each other
                results["mask_coherence"]["overlap_real"] = M.mask_overlap(real_masks)

        n_fid_real = len(fid_real)
        notes = []
        if n_fid_real < SMALL_REAL_SET:
            notes.append(
                f"FID-2048 and KID compare against only {n_fid_real} real images "
                f"({fid_real_name}; fewer than {SMALL_REAL_SET}): strongly biased and noisy; "
                "compare runs on the same set, not papers (metrics.real_set=all adds the "
                "training defects)"
            )
        meta = {
            "n_fake": n_fake,
            "n_real_train": n_train,
            "n_real_test": len(real_test),
            "fid64_real_set": "defect_train",
            "fid64_real_source": _choice(o, "fid64_real_source", FID64_REAL_SOURCES),
            "real_set": real_set,
            "fid2048_real_set": fid_real_name,
            "n_fid2048_real": n_fid_real,
            "fid2048_small_real_set": n_fid_real < SMALL_REAL_SET,
            "lpips_net": str(o.get("lpips_net", "alex")),
            "lpips_weights": getattr(
                getattr(self.networks.lpips, "net", None), "weights_source", None
            ),
            "lpips_input": "unscaled [0,1] (authors' code)"
            if o.lpips_authors_unscaled
            else "[-1,1]",
            "bootstrap": {
                "n": iv.resampler.n_resamples if iv.resampler else 0,
                "seed": iv.resampler.seed if iv.resampler else None,
                "level": iv.level,
                "seconds": round(iv.seconds, 3),
                "method": "percentile; images resampled with replacement, the generated set and "
                "each real set of FID/KID independently (the training set stays fixed for "
                "dist_to_train and IC-LPIPS); pairwise statistics over distinct originals",
            },
            "notes": notes,
        }
        return results, iv.values, meta

    @staticmethod
    def _kid_resampled(
        real: torch.Tensor, fake: torch.Tensor, w_real: np.ndarray, iv: Intervals, n_fake: int
    ) -> np.ndarray:
        r, f = real.numpy(), fake.numpy()
        return B.mmd_from_kernels(
            B.polynomial_kernel(r, r),
            B.polynomial_kernel(f, f),
            B.polynomial_kernel(r, f),
            w_real,
            iv.weights("fake", n_fake),
        )

    def _lpips_metrics(
        self,
        fake_images: torch.Tensor,
        real_train: torch.Tensor,
        results: dict[str, Any],
        iv: Intervals,
    ) -> None:
        """Every LPIPS metric from two distance matrices (fakes × fakes, fakes × train): one pass
        of the network for the point values and every resample."""
        o = self.options
        distance = self.networks.lpips
        fake, train = fake_images.to(self.device), real_train.to(self.device)
        n_fake, n_train = len(fake), len(train)
        to_train = M.pairwise_distances(distance, fake, train, batch_size=o.batch_size)
        pairs = M.pairwise_within(distance, fake, batch_size=o.batch_size)
        results["lpips"] = M.lpips_diversity(
            distance, fake, max_images=o.lpips_max_images, fake_pairs=pairs
        )
        results["dist_to_train"] = M.dist_to_train(distance, fake, train, fake_to_train=to_train)
        ic = M.ic_lpips(distance, fake, train, fake_to_train=to_train, fake_pairs=pairs)
        results["ic_lpips"] = {
            "value": ic["value"],
            "clusters_used": ic["clusters_used"],
            "clusters": ic["clusters"],
        }
        results["ic_lpips_nonempty"] = ic["value_nonempty"]
        n_div = n_fake if o.lpips_max_images is None else min(n_fake, int(o.lpips_max_images))
        div_key = "fake" if n_div == n_fake else f"fake_first_{n_div}"
        p, d = pairs.numpy(), to_train.numpy()
        # The training set is the fixed reference of Dist-to-train and IC-LPIPS (what the GAN
        # could copy; the clusters), not a sample: only the generated images are resampled.
        # Resampling it would also bias both, as a resample lacks a third of the images.
        fixed_train = np.ones(n_train)
        iv.add("lpips", lambda: B.distinct_pair_mean(p[:n_div, :n_div], iv.weights(div_key, n_div)))
        iv.add(
            "dist_to_train",
            lambda: B.nearest_distance_mean(d, iv.weights("fake", n_fake), fixed_train),
        )
        if iv.resampler is not None:
            start = time.perf_counter()
            dfmgan, nonempty = B.intra_cluster_lpips(p, d, iv.weights("fake", n_fake), fixed_train)
            iv.seconds += time.perf_counter() - start
            iv.add("ic_lpips", lambda: dfmgan)
            iv.add("ic_lpips_nonempty", lambda: nonempty)

    @staticmethod
    def _mask_overlap(fakes: SampleSet, results: dict[str, Any], iv: Intervals) -> None:
        """Mean IoU between the masks of two images of *different* sources made the same way
        (same flip or code slot): does the mask depend on the image? Near 1 when it does not."""
        assert fakes.masks is not None
        n = min(len(fakes.masks), MASK_OVERLAP_MAX)
        threshold = float(fakes.info.get("threshold", 0.5))
        overlap = M.pairwise_mask_iou(fakes.masks[:n], threshold).numpy()
        pairs = np.ones((n, n)) - np.eye(n)
        if fakes.source_names is not None and fakes.variants is not None:
            source = np.asarray(fakes.source_names[:n], dtype=object)
            variant = np.asarray(fakes.variants[:n], dtype=object)
            pairs = (source[:, None] != source[None, :]) & (variant[:, None] == variant[None, :])
            pairs = pairs.astype(np.float64)
        point = B.selected_pair_mean(overlap, pairs, np.ones(n))
        if np.isfinite(point[0]):
            results["mask_coherence"]["overlap"] = float(point[0])
            key = "fake" if n == len(fakes.masks) else f"fake_first_{n}"
            iv.add("mask_overlap", lambda: B.selected_pair_mean(overlap, pairs, iv.weights(key, n)))

    @staticmethod
    def _mask_intervals(stats: dict[str, torch.Tensor], iv: Intervals, n_fake: int) -> None:
        inter, union = stats["intersection"].numpy(), stats["union"].numpy()
        non_empty = (union > 0).astype(np.float64)
        per_image = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        w = lambda: iv.weights("fake", n_fake)  # noqa: E731
        iv.add("mask_iou", lambda: B.weighted_ratio(inter, union, w()))
        iv.add("mask_iou_per_image", lambda: B.weighted_ratio(per_image, non_empty, w()))
        iv.add("mask_area", lambda: B.weighted_mean(stats["mask_area"].numpy(), w()))
        iv.add("mask_changed_area", lambda: B.weighted_mean(stats["changed_area"].numpy(), w()))


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
        "ic_lpips_nonempty": results.get("ic_lpips_nonempty"),
        "mask_iou": mask.get("iou"),
        "mask_iou_per_image": mask.get("iou_per_image_mean"),
        "mask_area": mask.get("mask_area"),
        "mask_changed_area": mask.get("changed_area"),
        "mask_overlap": mask.get("overlap"),
        "mask_overlap_real": mask.get("overlap_real"),
    }


def report_row(report: dict[str, Any]) -> dict[str, Any]:
    """A report's flat row: the values, ``<key>_lo`` / ``<key>_hi`` of every interval, and the
    size of FID-2048's real set (the tables flag small ones)."""
    row: dict[str, Any] = dict(flatten(report["metrics"]))
    for key, interval in (report.get("intervals") or {}).items():
        lo, hi = interval if interval else (None, None)
        row[f"{key}_lo"], row[f"{key}_hi"] = lo, hi
    meta = report.get("meta") or {}
    if meta.get("n_fid2048_real") is not None:
        row["fid2048_n_real"] = meta["n_fid2048_real"]
    return row


def fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


SMALL_SET_MARK, OUTSIDE_MARK = "¹", "†"


def _cell(row: dict[str, Any], name: str, marks: set[str]) -> str:
    digits = 4 if name == "kid_mean" else 3
    value, lo, hi = row.get(name), row.get(f"{name}_lo"), row.get(f"{name}_hi")
    text = fmt(value, digits)
    if value is not None and lo is not None and hi is not None:
        text += f" [{fmt(lo, digits)}, {fmt(hi, digits)}]"
        if not lo <= value <= hi:
            text += OUTSIDE_MARK
            marks.add(OUTSIDE_MARK)
    n_real = row.get("fid2048_n_real")
    small = isinstance(n_real, int) and n_real < SMALL_REAL_SET
    if value is not None and name in ("fid2048", "kid_mean") and small:
        text += SMALL_SET_MARK
        marks.add(SMALL_SET_MARK)
    return text


def markdown_table(rows: list[dict[str, Any]], keys: tuple[str, ...], level: float = 0.95) -> str:
    """Rows (``report_row`` with the label columns ``keys``) as a Markdown table: ``value [lo,
    hi]`` with the bootstrap interval where there is one, footnotes for small real sets and for
    values outside their interval."""
    headers = [*keys, *(title for _, title in TABLE_COLUMNS)]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    marks: set[str] = set()
    for row in rows:
        cells = [str(row.get(k, "")) for k in keys]
        cells += [_cell(row, name, marks) for name, _ in TABLE_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    notes = []
    if any(f"{name}_lo" in row for row in rows for name, _ in TABLE_COLUMNS):
        notes.append(
            f"[lo, hi]: {level:.0%} bootstrap interval over images (generated and real sets "
            "resampled)."
        )
    references = {
        _product_of(row): row["mask_overlap_real"]
        for row in rows
        if row.get("mask_overlap_real") is not None and _product_of(row) != "Avg"
    }
    if any(row.get("mask_overlap") is not None for row in rows):
        real = ", ".join(f"{p} {v:.3f}".strip() for p, v in references.items())
        notes.append(
            "Mask overlap: mean IoU between the generated masks of two different source images "
            "made the same way (flip, code slot); 1 = the same mask whatever the image (a "
            "collapsed mask branch, which FID does not see)"
            + (f"; the real training masks': {real}." if real else ".")
        )
    if SMALL_SET_MARK in marks:
        sizes = sorted({r["fid2048_n_real"] for r in rows if r.get("fid2048_n_real") is not None})
        notes.append(
            f"{SMALL_SET_MARK} FID (2048-d) and KID against fewer than {SMALL_REAL_SET} real "
            f"images (n = {', '.join(map(str, sizes))}): biased and noisy at this size; compare "
            "runs, not papers (`metrics.real_set=all` adds the training defects)."
        )
    if OUTSIDE_MARK in marks:
        notes.append(
            f"{OUTSIDE_MARK} the value lies outside its interval: the statistic is biased at this "
            "set size (resamples hold fewer distinct images; FID grows as sets shrink)."
        )
    footer = "\n" + "\n".join(f"{note}  " for note in notes) + "\n" if notes else ""
    return "\n".join(lines) + "\n" + footer


def _product_of(row: dict[str, Any]) -> str:
    return str(row.get("product") or row.get("Product (Defect)") or row.get("Product") or "")


def csv_text(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    fields = list(dict.fromkeys(k for row in rows for k in row))
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_reports(out: Path, report: dict[str, Any], label: dict[str, Any]) -> dict[str, Any]:
    """metrics.json (full), metrics.csv (one flat row), metrics.md (a one-row table)."""
    row = {**label, **report_row(report)}
    level = float(report.get("meta", {}).get("bootstrap", {}).get("level", 0.95))
    write_text(json.dumps(report, indent=2, default=str) + "\n", out / "metrics.json")
    write_text(csv_text([row]), out / "metrics.csv")
    write_text(markdown_table([row], tuple(label), level), out / "metrics.md")
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
    defect_train = datamodule.eval_dataset("defect_train")
    real_train, real_masks = _stack(defect_train), _stack(defect_train, "mask")
    real_test = _stack(datamodule.eval_dataset("defect_test"))
    if real_train.shape[-2:] != fakes.images.shape[-2:]:
        raise DataError(
            f"generated images are {tuple(fakes.images.shape[-2:])} but the real defects are "
            f"{tuple(real_train.shape[-2:])}; set data.image_size to the model's size"
        )

    fid64_real = None
    if _choice(cfg.metrics, "fid64_real_source", FID64_REAL_SOURCES) == "original":
        fid64_real = original_resolution_inputs(
            [s.image for s in datamodule.split.defect_train], datamodule.cache
        )
    results, intervals, meta = suite.compute(fakes, real_train, real_test, fid64_real, real_masks)
    label = {
        "product": f"{info['category']} ({info['defect']})",
        "model": _model_name(info),
    }
    report = {
        "metrics": results,
        "intervals": intervals,
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


def original_resolution_inputs(paths: list[Path], cache: ImageCache) -> torch.Tensor:
    """The authors' FID-64 real set: each original file decoded at full resolution, then resized
    to Inception's 299×299 as pytorch-fid does (bilinear, no antialias); (N, 3, 299, 299) in
    [-1, 1]. Sizes may differ, so each image is resized on its own."""
    if not paths:
        raise DataError("metrics.fid64_real_source=original: the split has no training defects")
    size = INCEPTION_INPUT_SIZE
    images = []
    for path in paths:
        array = cache.image(Path(path), None)
        tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None].float()
        tensor = tensor / 127.5 - 1.0
        images.append(
            F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False)[0]
        )
    return torch.stack(images)


def _stack(dataset, key: str = "image") -> torch.Tensor:
    if len(dataset) == 0:
        return torch.empty(0, 3 if key == "image" else 1, 1, 1)
    return torch.stack([dataset[i][key] for i in range(len(dataset))])


def _model_name(info: dict[str, Any]) -> str:
    class_path = info.get("model_class") or "defectsynth.models.defect_gan.DefectGAN"
    name = info.get("model") or class_path.rsplit(".", 1)[-1]
    return f"{name} ({info['ablation']})" if info.get("ablation") else name
