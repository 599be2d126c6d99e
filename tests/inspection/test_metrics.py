"""Metrics against confusion matrices and curves computed by hand."""

from __future__ import annotations

import pytest
import torch

from defectsynth.inspection.metrics import (
    always_defect_free,
    classification_metrics,
    format_mean_std,
    segmentation_metrics,
    summarize,
)


def test_classification_metrics_against_a_hand_computed_confusion_matrix():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    scores = torch.tensor([0.1, 0.2, 0.3, 0.7, 0.4, 0.8, 0.9])
    m = classification_metrics(scores, labels)
    # at 0.5: TN = 3 (0.1, 0.2, 0.3), FP = 1 (0.7), FN = 1 (0.4), TP = 2 (0.8, 0.9)
    assert m["confusion_matrix"] == [[3, 1], [1, 2]]
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["precision"] == pytest.approx(2 / 3)  # TP / (TP + FP)
    assert m["recall"] == pytest.approx(2 / 3)  # TP / (TP + FN)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["precision_macro"] == pytest.approx((3 / 4 + 2 / 3) / 2)  # NPV, PPV
    assert m["recall_macro"] == pytest.approx((3 / 4 + 2 / 3) / 2)  # specificity, sensitivity
    # AUROC: of the 4 × 3 (defect-free, defective) pairs, only (0.7, 0.4) is ranked wrongly
    assert m["auroc"] == pytest.approx(11 / 12)
    assert (m["n_defect_free"], m["n_defective"]) == (4, 3)


def test_classification_metrics_with_a_perfect_and_an_inverted_classifier():
    labels = torch.tensor([0, 0, 1, 1, 1])
    perfect = classification_metrics(labels.float(), labels)
    assert perfect["confusion_matrix"] == [[2, 0], [0, 3]]
    assert perfect["accuracy"] == perfect["f1"] == perfect["auroc"] == 1.0
    inverted = classification_metrics(1.0 - labels.float(), labels)
    assert inverted["confusion_matrix"] == [[0, 2], [3, 0]]
    assert inverted["accuracy"] == inverted["precision"] == inverted["recall"] == 0.0
    assert inverted["auroc"] == 0.0


def test_always_defect_free_reproduces_the_papers_first_group():
    # tile: 53 defect-free test images next to 17 real defects → the paper's 75.71 %, 0.38, 0.50
    labels = torch.cat([torch.zeros(53), torch.ones(17)])
    m = always_defect_free(labels)
    assert m["confusion_matrix"] == [[53, 0], [17, 0]]
    assert round(100 * m["accuracy"], 2) == 75.71
    assert round(m["precision_macro"], 2) == 0.38 and m["recall_macro"] == 0.5
    assert m["precision"] == m["recall"] == m["f1"] == 0.0
    assert m["auroc"] == 0.5


def test_segmentation_metrics_against_hand_computed_values():
    # image 0 defective: 2×2 ground truth [[1, 0], [0, 0]]; image 1 defect-free
    masks = torch.tensor([[[[1, 0], [0, 0]]], [[[0, 0], [0, 0]]]])
    scores = torch.tensor([[[[0.9, 0.6], [0.1, 0.2]]], [[[0.3, 0.1], [0.7, 0.2]]]])
    labels = torch.tensor([1, 0])
    m = segmentation_metrics(scores, masks, labels, threshold=0.5)
    # 8 pixels, one positive scored 0.9 above all 7 negatives
    assert m["pixel_auroc"] == pytest.approx(1.0)
    assert m["pixel_ap"] == pytest.approx(1.0)
    assert m["pixel_f1_max"] == pytest.approx(1.0) and m["f1_max_threshold"] == pytest.approx(0.9)
    # at 0.5: predicted {0.9, 0.6, 0.7} ∩ truth {0.9} = 1, union = 3
    assert m["iou"] == pytest.approx(1 / 3)
    # maxima 0.9 (defective) > 0.7 (defect-free)
    assert m["image_auroc"] == 1.0
    only = segmentation_metrics(scores, masks, labels, threshold=0.5, pixel_set="defective")
    assert only["iou"] == pytest.approx(1 / 2)  # the false alarm at 0.7 is not counted


def test_summary_and_formatting():
    runs = [
        {"accuracy": 0.5, "auroc": None, "confusion_matrix": [[1, 0], [1, 0]]},
        {"accuracy": 0.7, "auroc": 0.8, "confusion_matrix": [[1, 0], [0, 1]]},
    ]
    s = summarize(runs)
    assert s["n_runs"] == 2 and s["confusion_matrix"] == [[2, 0], [1, 1]]
    assert s["accuracy"]["mean"] == pytest.approx(0.6)
    assert s["accuracy"]["std"] == pytest.approx(0.1414, abs=1e-4)  # sample std
    assert s["auroc"]["mean"] == 0.8  # over the runs where it is defined
    assert format_mean_std(s["accuracy"], 100, 2) == "60.00 ± 14.14"
    assert format_mean_std(summarize(runs[:1])["accuracy"], 100, 1) == "50.0"
    assert format_mean_std(None) == "–"


def test_a_score_exactly_at_the_threshold_is_defect_free():
    # torchmetrics thresholds with preds > threshold; the README, config and IoU follow it
    labels = torch.tensor([0, 1, 1])
    m = classification_metrics(torch.tensor([0.1, 0.5, 0.5 + 1e-6]), labels, threshold=0.5)
    assert m["confusion_matrix"] == [[1, 0], [1, 1]]  # 0.5 itself: a false negative
    m = classification_metrics(torch.tensor([0.3, 0.3, 0.9]), labels, threshold=0.3)
    assert m["confusion_matrix"] == [[1, 0], [1, 1]]
    masks = torch.tensor([[[[1, 1]]]])
    seg = segmentation_metrics(torch.tensor([[[[0.5, 0.75]]]]), masks, torch.tensor([1]), 0.5)
    assert seg["iou"] == pytest.approx(1 / 2)  # the pixel scored exactly 0.5 is not predicted
