"""Test-set metrics of the studies (torchmetrics): per run, their mean ± std over seeds, and
pooled over seeds (one confusion matrix / AUROC of every seed's predictions, with intervals from
resampling the test images).

Classification — the defective class is the positive one:
  accuracy, precision, recall, F1 (defective when P(defective) > ``threshold``, strictly: the rule
  torchmetrics applies, ``preds > threshold``), AUROC of the scores, the
  confusion matrix [[TN, FP], [FN, TP]], and the macro (two-class mean) precision and recall.
  The paper's Table 4 reports the macro values: its "always defect-free" rows (precision =
  accuracy / 2, recall 0.50) only fit that reading.

Segmentation — per pixel, over the chosen test images:
  AUROC, average precision, the best F1 over all thresholds (with that threshold; an oracle
  choice, as in the anomaly-detection literature), and the IoU of the mask thresholded at a fixed
  ``threshold`` (0.5, the sigmoid's natural cut: no test label picks it; a pixel counts as
  defective when its score is strictly above it, as for the classifier). Image AUROC ranks the
  images by their maximum pixel score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryAveragePrecision,
    BinaryConfusionMatrix,
    BinaryF1Score,
    BinaryPrecision,
    BinaryPrecisionRecallCurve,
    BinaryRecall,
)
from torchmetrics.functional.classification import binary_auroc, binary_confusion_matrix


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def _auroc(scores: torch.Tensor, labels: torch.Tensor) -> float | None:
    if labels.min() == labels.max():  # one class only: the ranking is undefined
        return None
    return float(BinaryAUROC()(scores, labels))


def classification_metrics(
    scores: torch.Tensor, labels: torch.Tensor, threshold: float = 0.5
) -> dict[str, Any]:
    """Metrics of P(defective) ``scores`` (N,) in [0, 1] against ``labels`` (N,) in {0, 1}."""
    scores = scores.detach().float().cpu().clamp(0.0, 1.0)
    target = labels.detach().cpu().long()
    (tn, fp), (fn, tp) = BinaryConfusionMatrix(threshold)(scores, target).tolist()
    return {
        "accuracy": float(BinaryAccuracy(threshold)(scores, target)),
        "precision": float(BinaryPrecision(threshold)(scores, target)),
        "recall": float(BinaryRecall(threshold)(scores, target)),
        "f1": float(BinaryF1Score(threshold)(scores, target)),
        "auroc": _auroc(scores, target),
        "precision_macro": (_ratio(tn, tn + fn) + _ratio(tp, tp + fp)) / 2,
        "recall_macro": (_ratio(tn, tn + fp) + _ratio(tp, tp + fn)) / 2,
        "confusion_matrix": [[tn, fp], [fn, tp]],
        "n_defect_free": tn + fp,
        "n_defective": fn + tp,
    }


def always_defect_free(labels: torch.Tensor) -> dict[str, Any]:
    """The trivial classifier of Table 4's first group: P(defective) = 0 for every image."""
    return classification_metrics(torch.zeros(len(labels)), labels)


def segmentation_metrics(
    scores: torch.Tensor,
    masks: torch.Tensor,
    labels: torch.Tensor,
    threshold: float = 0.5,
    pixel_set: str = "all",
) -> dict[str, Any]:
    """Pixel scores (N, 1, H, W) in [0, 1] against masks (N, 1, H, W) in {0, 1}; ``labels``
    (N,) marks the defective images. ``pixel_set``: ``all`` test images (the MVTec AD
    convention: false alarms on defect-free images count) or only the ``defective`` ones."""
    if pixel_set not in ("all", "defective"):
        raise ValueError(f"pixel_set={pixel_set!r}; expected 'all' or 'defective'")
    scores = scores.detach().float().cpu().clamp(0.0, 1.0)
    masks = masks.detach().cpu().long()
    labels = labels.detach().cpu().long()
    chosen = torch.ones_like(labels, dtype=torch.bool) if pixel_set == "all" else labels == 1
    pixel_scores, pixel_target = scores[chosen].flatten(), masks[chosen].flatten()
    results: dict[str, Any] = {
        "pixel_auroc": _auroc(pixel_scores, pixel_target),
        "pixel_ap": None,
        "pixel_f1_max": None,
        "f1_max_threshold": None,
    }
    if pixel_target.any():
        results["pixel_ap"] = float(BinaryAveragePrecision()(pixel_scores, pixel_target))
        precision, recall, thresholds = BinaryPrecisionRecallCurve()(pixel_scores, pixel_target)
        # the curve's last point (precision 1, recall 0) has no threshold
        f1 = (2 * precision * recall / (precision + recall).clamp_min(1e-12))[:-1]
        best = int(torch.argmax(f1))
        results["pixel_f1_max"] = float(f1[best])
        results["f1_max_threshold"] = float(thresholds[best])
    # strictly above, as torchmetrics thresholds the classification scores
    predicted = pixel_scores > threshold
    truth = pixel_target.bool()
    union = int((predicted | truth).sum())
    results["iou"] = _ratio(int((predicted & truth).sum()), union) if union else None
    results["iou_threshold"] = threshold
    image_scores = scores.flatten(1).amax(dim=1)
    results["image_auroc"] = _auroc(image_scores, labels)
    results["pixel_set"] = pixel_set
    results["n_defect_free"] = int((labels == 0).sum())
    results["n_defective"] = int((labels == 1).sum())
    return results


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean, sample standard deviation (0 for one run) and values of every numeric metric over
    ``runs`` (one per seed); confusion matrices are summed."""
    summary: dict[str, Any] = {"n_runs": len(runs)}
    if not runs:
        return summary
    for key in runs[0]:
        values = [r.get(key) for r in runs]
        if key == "confusion_matrix":
            summary[key] = np.sum(np.array(values), axis=0).tolist()
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            array = np.array(values, dtype=float)
            std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
            summary[key] = {"mean": float(array.mean()), "std": std, "values": array.tolist()}
        elif any(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            # a metric undefined in some runs (e.g. AUROC with one class): over the defined ones
            defined = [float(v) for v in values if isinstance(v, (int, float))]
            array = np.array(defined)
            std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
            summary[key] = {"mean": float(array.mean()), "std": std, "values": values}
    return summary


def mean_of(summary: dict[str, Any], key: str) -> float | None:
    entry = summary.get(key)
    return entry["mean"] if isinstance(entry, dict) else None


def format_mean_std(entry: Any, scale: float = 1.0, digits: int = 3) -> str:
    """``mean ± std`` (just the mean for one run, – when undefined)."""
    if not isinstance(entry, dict) or entry.get("mean") is None or math.isnan(entry["mean"]):
        return "–"
    mean = entry["mean"] * scale
    if len(entry.get("values", [])) > 1:
        return f"{mean:.{digits}f} ± {entry['std'] * scale:.{digits}f}"
    return f"{mean:.{digits}f}"


# ------------------------------------------------------------------------------ pooled over seeds
# With 2–3 real defects per product the per-seed mean ± std rests on a handful of images: the
# tables also pool every seed's test predictions into one confusion matrix and one AUROC, with
# percentile intervals from resampling the test *images*. With one split (split.seed fixed)
# every seed tests the same images, so a resample takes an image with all its seeds'
# predictions: the interval reflects how few distinct images there are, not the prediction count.

CLASSIFICATION_POOLED = (
    "accuracy",
    "precision",
    "recall",
    "f1",
    "auroc",
    "precision_macro",
    "recall_macro",
)
SEGMENTATION_POOLED = ("pixel_auroc", "pixel_ap", "pixel_f1_max", "iou", "image_auroc")


@dataclass(frozen=True)
class Predictions:
    """One run's test predictions: a score per image (P(defective), or the maximum pixel score),
    its label and its name. A segmentation run adds, per image, the pixel confusion matrix at
    the fixed threshold (``hits``, (N, 2, 2)) and over ``bins`` evenly spaced thresholds
    (``curve``, (N, bins, 2, 2): the state of torchmetrics' binned curves, which adds up over
    images and runs, where exact pixel curves would need every pixel score kept)."""

    scores: torch.Tensor
    labels: torch.Tensor
    images: tuple[str, ...]
    hits: torch.Tensor | None = None
    curve: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if not len(self.scores) == len(self.labels) == len(self.images):
            raise ValueError(
                f"{len(self.scores)} scores, {len(self.labels)} labels and {len(self.images)} "
                "image names: expected one of each per test image"
            )


def pixel_states(
    scores: torch.Tensor, masks: torch.Tensor, threshold: float, bins: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: the pixel confusion matrix [[TN, FP], [FN, TP]] at ``threshold`` (score >
    threshold) and the binned-curve state (bins, 2, 2) of torchmetrics (score ≥ each of
    ``bins`` thresholds evenly spaced over [0, 1])."""
    scores = scores.detach().float().cpu().clamp(0.0, 1.0).flatten(1)
    masks = masks.detach().cpu().long().flatten(1)
    hits, curve = [], []
    for image_scores, image_mask in zip(scores, masks, strict=True):
        hits.append(binary_confusion_matrix(image_scores, image_mask, threshold))
        binned = BinaryPrecisionRecallCurve(thresholds=bins)
        binned.update(image_scores, image_mask)
        curve.append(binned.confmat.clone())
    return torch.stack(hits), torch.stack(curve)


def _from_confusion(tn: int, fp: int, fn: int, tp: int) -> dict[str, float]:
    # torchmetrics' definitions (a zero denominator gives 0)
    return {
        "accuracy": _ratio(tn + tp, tn + fp + fn + tp),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "precision_macro": (_ratio(tn, tn + fn) + _ratio(tp, tp + fp)) / 2,
        "recall_macro": (_ratio(tn, tn + fp) + _ratio(tp, tp + fn)) / 2,
    }


def _classification_values(
    scores: torch.Tensor, labels: torch.Tensor, threshold: float
) -> dict[str, float | None]:
    """The pooled metrics of one bootstrap resample (functional torchmetrics: thousands of
    calls, where the metric classes' set-up would dominate)."""
    (tn, fp), (fn, tp) = binary_confusion_matrix(scores, labels, threshold).tolist()
    values: dict[str, float | None] = dict(_from_confusion(tn, fp, fn, tp))
    values["auroc"] = None if labels.min() == labels.max() else float(binary_auroc(scores, labels))
    return values


class _Binned:
    """torchmetrics' binned AUROC, AP and precision-recall curve of a summed state. The
    instances are reused over thousands of bootstrap resamples: setting one up costs more than
    computing it."""

    def __init__(self, bins: int) -> None:
        self.metrics = {
            "auroc": BinaryAUROC(thresholds=bins),
            "ap": BinaryAveragePrecision(thresholds=bins),
            "curve": BinaryPrecisionRecallCurve(thresholds=bins),
        }

    def __call__(self, name: str, confmat: torch.Tensor) -> Any:
        metric = self.metrics[name]
        metric.reset()
        # an empty update marks the metric as fed; its state then comes from the sum
        metric.update(torch.empty(0), torch.empty(0, dtype=torch.long))
        metric.merge_state({"confmat": confmat})
        return metric.compute()

    def values(self, hits: torch.Tensor, curve: torch.Tensor) -> dict[str, float | None]:
        """Pixel AUROC, AP, F1-max (binned) and IoU (at the fixed threshold) of summed
        states."""
        (_, fp), (fn, tp) = hits.tolist()
        union = tp + fp + fn
        values: dict[str, float | None] = {
            "pixel_auroc": None,
            "pixel_ap": None,
            "pixel_f1_max": None,
            "iou": _ratio(tp, union) if union else None,
        }
        positives, negatives = int(curve[0, 1].sum()), int(curve[0, 0].sum())
        if positives and negatives:
            values["pixel_auroc"] = float(self("auroc", curve))
        if positives:
            values["pixel_ap"] = float(self("ap", curve))
            precision, recall, _ = self("curve", curve)
            f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
            # a threshold above every score predicts nothing: precision 0/0 (nan), F1 0
            values["pixel_f1_max"] = float(torch.nan_to_num(f1[:-1], nan=0.0).max())
        return values


def _cluster_bootstrap(
    images: Sequence[str],
    labels: torch.Tensor,
    statistic: Any,
    n_boot: int,
    level: float,
    seed: int,
) -> dict[str, list[float] | None]:
    """Percentile intervals of ``statistic(indices)`` (a dict of values) over ``n_boot``
    resamples of the distinct test images, drawn with replacement within each class (so every
    resample keeps the class sizes); an image brings all its predictions."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"pooled.level={level}; expected a probability in (0, 1)")
    members: dict[str, list[int]] = {}
    for index, name in enumerate(images):
        members.setdefault(name, []).append(index)
    by_class: dict[int, list[np.ndarray]] = {}
    for indices in members.values():
        by_class.setdefault(int(labels[indices[0]]), []).append(np.array(indices))
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(max(0, n_boot)):
        chosen = [
            groups[i]
            for groups in by_class.values()
            for i in rng.integers(0, len(groups), len(groups))
        ]
        for key, value in statistic(torch.from_numpy(np.concatenate(chosen))).items():
            if value is not None:
                draws.setdefault(key, []).append(value)
    tail = (1.0 - level) / 2
    intervals: dict[str, list[float] | None] = {}
    for key, values in draws.items():
        # a value undefined in most resamples has no meaningful interval
        if len(values) >= n_boot / 2:
            low, high = np.quantile(values, [tail, 1.0 - tail])
            intervals[key] = [float(low), float(high)]
    return intervals


def _pool(runs: Sequence[Predictions]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    if not runs:
        raise ValueError("no runs to pool")
    scores = torch.cat([r.scores.detach().float().cpu().clamp(0.0, 1.0) for r in runs])
    labels = torch.cat([r.labels.detach().cpu().long() for r in runs])
    return scores, labels, [name for r in runs for name in r.images]


def _counts(labels: torch.Tensor, images: Sequence[str], n_runs: int) -> dict[str, int]:
    distinct = {name: int(label) for name, label in zip(images, labels.tolist(), strict=True)}
    return {
        "n_runs": n_runs,
        "n_defect_free": int((labels == 0).sum()),
        "n_defective": int((labels == 1).sum()),
        "n_images_defect_free": sum(1 for v in distinct.values() if v == 0),
        "n_images_defective": sum(1 for v in distinct.values() if v == 1),
    }


def pooled_classification(
    runs: Sequence[Predictions],
    threshold: float = 0.5,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Every run's test predictions pooled: one confusion matrix, AUROC and rates over all of
    them, the prediction and distinct-image counts of each class, and ``level`` intervals
    (``intervals[metric] = [low, high]``) from resampling the distinct images."""
    scores, labels, images = _pool(runs)
    pooled = classification_metrics(scores, labels, threshold)
    pooled.update(_counts(labels, images, len(runs)))
    pooled["intervals"] = _cluster_bootstrap(
        images,
        labels,
        lambda idx: _classification_values(scores[idx], labels[idx], threshold),
        n_boot,
        level,
        seed,
    )
    pooled["level"] = level
    return pooled


def pooled_segmentation(
    runs: Sequence[Predictions],
    pixel_set: str = "all",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Every run's pixel states summed: pixel AUROC, AP and F1-max over the binned curve, IoU of
    the summed confusion matrix at the fixed threshold (all over ``pixel_set``), image AUROC of
    the pooled maximum scores; counts and image-resampling intervals as for classification."""
    if pixel_set not in ("all", "defective"):
        raise ValueError(f"pixel_set={pixel_set!r}; expected 'all' or 'defective'")
    if any(r.hits is None or r.curve is None for r in runs):
        raise ValueError("pooled segmentation metrics need the pixel states of every run")
    scores, labels, images = _pool(runs)
    hits = torch.cat([r.hits for r in runs if r.hits is not None])
    curve = torch.cat([r.curve for r in runs if r.curve is not None])
    in_pixels = torch.ones_like(labels, dtype=torch.bool) if pixel_set == "all" else labels == 1
    binned = _Binned(int(curve.shape[1]))

    def values(idx: torch.Tensor) -> dict[str, float | None]:
        chosen = idx[in_pixels[idx]]
        result = binned.values(hits[chosen].sum(0), curve[chosen].sum(0))
        picked = labels[idx]
        defined = picked.min() != picked.max()
        result["image_auroc"] = float(binary_auroc(scores[idx], picked)) if defined else None
        return result

    pooled: dict[str, Any] = dict(values(torch.arange(len(labels))))
    (tn, fp), (fn, tp) = hits[in_pixels].sum(0).tolist()
    pooled["pixel_confusion_matrix"] = [[tn, fp], [fn, tp]]
    pooled.update(_counts(labels, images, len(runs)))
    pooled.update(pixel_set=pixel_set, bins=int(curve.shape[1]), level=level)
    pooled["intervals"] = _cluster_bootstrap(images, labels, values, n_boot, level, seed)
    return pooled


def format_interval(
    value: float | None, interval: Sequence[float] | None, scale: float = 1.0, digits: int = 3
) -> str:
    """``value [low, high]`` (– when undefined)."""
    if value is None or math.isnan(value):
        return "–"
    text = f"{value * scale:.{digits}f}"
    if interval:
        text += f" [{interval[0] * scale:.{digits}f}, {interval[1] * scale:.{digits}f}]"
    return text


# ------------------------------------------------------------------------------ over seeds
def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (p in [0.5, 1)) of Student's t with ``df`` degrees of freedom: the CDF
    integrated numerically (Simpson, in u = atan t, where the integrand is smooth and bounded)
    and inverted by bisection. Accurate to ~1e-6 — plenty for an interval's half-width — with
    no SciPy at run time."""
    if not 0.5 <= p < 1.0 or df < 1:
        raise ValueError(f"t_quantile(p={p}, df={df}): expected 0.5 ≤ p < 1 and df ≥ 1")
    if p == 0.5:
        return 0.0
    nu = float(df)
    log_c = math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)

    def cdf_upper(u_max: float) -> float:  # P(0 ≤ T ≤ tan u_max)
        u = np.linspace(0.0, u_max, 2049)
        t2 = np.tan(u) ** 2
        # density · dt/du, with sec² u = 1 + tan² u; in logs, so large t cannot overflow
        g = np.exp(log_c - (nu + 1) / 2 * np.log1p(t2 / nu) + np.log1p(t2))
        h = u_max / (len(u) - 1)
        return float(h / 3 * (g[0] + g[-1] + 4 * g[1:-1:2].sum() + 2 * g[2:-1:2].sum()))

    target, low, high = p - 0.5, 0.0, math.pi / 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if cdf_upper(mid) < target else (low, mid)
    return math.tan((low + high) / 2)


def seed_interval(
    values: Sequence[float | None], level: float = 0.95, bounds: tuple[float, float] = (0.0, 1.0)
) -> list[float] | None:
    """The Student-t ``level`` confidence interval of the mean of per-seed ``values`` (mean ±
    t·s/√n), clipped to ``bounds`` (the metric's range); None with fewer than two defined
    values. It reflects the training randomness of the seeds, not the size of the test set —
    the pooled table's image-resampling intervals do that."""
    defined = np.array([float(v) for v in values if v is not None and not math.isnan(v)])
    if len(defined) < 2:
        return None
    half = t_quantile((1 + level) / 2, len(defined) - 1) * defined.std(ddof=1)
    half /= math.sqrt(len(defined))
    mean = float(defined.mean())
    return [float(max(bounds[0], mean - half)), float(min(bounds[1], mean + half))]
