"""Test-set metrics of the studies (torchmetrics) and their mean ± std over seeds.

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
