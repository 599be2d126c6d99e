"""Metrics against confusion matrices and curves computed by hand."""

from __future__ import annotations

import pytest
import torch

from defectsynth.inspection.metrics import (
    Predictions,
    always_defect_free,
    classification_metrics,
    format_interval,
    format_mean_std,
    pixel_states,
    pooled_classification,
    pooled_segmentation,
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


def test_pooling_seeds_gives_one_confusion_matrix_and_one_auroc():
    # two seeds test the same three images (one split): a, b defect-free, c defective
    names = ("a", "b", "c")
    labels = torch.tensor([0, 0, 1])
    first = Predictions(torch.tensor([0.2, 0.6, 0.9]), labels, names)
    second = Predictions(torch.tensor([0.1, 0.3, 0.4]), labels, names)
    # each seed alone ranks c first (AUROC 1.0 twice); pooled, 0.4 < 0.6: 7 of 8 pairs right
    assert classification_metrics(first.scores, labels)["auroc"] == 1.0
    assert classification_metrics(second.scores, labels)["auroc"] == 1.0
    pooled = pooled_classification([first, second], n_boot=200)
    assert pooled["auroc"] == pytest.approx(7 / 8)
    assert pooled["confusion_matrix"] == [[3, 1], [1, 1]]  # FP 0.6 (seed 0), FN 0.4 (seed 1)
    assert pooled["accuracy"] == pytest.approx(4 / 6)
    assert (pooled["n_defect_free"], pooled["n_defective"], pooled["n_runs"]) == (4, 2, 2)
    assert (pooled["n_images_defect_free"], pooled["n_images_defective"]) == (2, 1)
    low, high = pooled["intervals"]["auroc"]
    assert low <= pooled["auroc"] <= high and 0.0 <= low < high <= 1.0


def test_pooled_intervals_resample_images_not_predictions():
    # the same predictions repeated by three seeds are not three times the evidence: the
    # interval is that of one seed, where resampling predictions would narrow it
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    scores = torch.tensor([0.1, 0.7, 0.3, 0.2, 0.4, 0.8, 0.9])
    run = Predictions(scores, labels, tuple("abcdefg"))
    once = pooled_classification([run], n_boot=300, seed=1)
    thrice = pooled_classification([run] * 3, n_boot=300, seed=1)
    assert thrice["intervals"] == once["intervals"]
    assert thrice["auroc"] == once["auroc"] == pytest.approx(11 / 12)
    assert thrice["n_defective"] == 9 and thrice["n_images_defective"] == 3
    assert once["intervals"]["accuracy"][0] < once["accuracy"] < once["intervals"]["accuracy"][1]
    # other seeds' images (split.seed=null) are other images: more evidence, a narrower interval
    other = Predictions(scores, labels, tuple("hijklmn"))
    two = pooled_classification([run, other], n_boot=300, seed=1)
    width = [b - a for a, b in (once["intervals"]["accuracy"], two["intervals"]["accuracy"])]
    assert width[1] < width[0]
    assert format_interval(0.5, [0.25, 0.75], 100, 1) == "50.0 [25.0, 75.0]"
    assert format_interval(None, None) == "–"


def test_pooled_pixel_metrics_sum_the_states_of_every_run():
    generator = torch.Generator().manual_seed(0)
    masks = (torch.rand(4, 1, 8, 8, generator=generator) > 0.7).long()
    masks[2:] = 0  # images 2 and 3 are defect-free
    labels = torch.tensor([1, 1, 0, 0])
    # scores on the grid of 5 bins, below 1: the binned curves are then exact
    runs, states = [], []
    for _ in range(2):
        scores = (torch.rand(4, 1, 8, 8, generator=generator) * 3).round() / 4
        hits, curve = pixel_states(scores, masks, 0.5, bins=5)
        assert hits.shape == (4, 2, 2) and curve.shape == (4, 5, 2, 2)
        states.append(scores)
        runs.append(Predictions(scores.flatten(1).amax(1), labels, tuple("abcd"), hits, curve))
    single = pooled_segmentation(runs[:1], n_boot=0)
    exact = segmentation_metrics(states[0], masks, labels, threshold=0.5)
    for key in ("pixel_auroc", "pixel_ap", "pixel_f1_max", "iou", "image_auroc"):
        assert single[key] == pytest.approx(exact[key], abs=1e-6), key
    pooled = pooled_segmentation(runs, n_boot=100)
    both = segmentation_metrics(
        torch.cat(states), torch.cat([masks, masks]), torch.cat([labels, labels]), 0.5
    )
    for key in ("pixel_auroc", "pixel_ap", "iou", "image_auroc"):
        assert pooled[key] == pytest.approx(both[key], abs=1e-6), key
    predicted, truth = torch.cat(states) > 0.5, torch.cat([masks, masks]).bool()
    assert pooled["pixel_confusion_matrix"][1][1] == int((predicted & truth).sum())
    assert (pooled["n_defective"], pooled["n_images_defective"]) == (4, 2)
    assert set(pooled["intervals"]) == {
        "pixel_auroc",
        "pixel_ap",
        "pixel_f1_max",
        "iou",
        "image_auroc",
    }
    # pixel_set=defective: the false alarms on the defect-free images 2, 3 (6, 7) drop out
    only = pooled_segmentation(runs, pixel_set="defective", n_boot=0)
    defective = torch.tensor([0, 1, 4, 5])
    false_alarms = int((predicted[defective] & ~truth[defective]).sum())
    assert only["pixel_confusion_matrix"][0][1] == false_alarms
    assert only["image_auroc"] == pooled["image_auroc"]  # images are ranked over all of them
