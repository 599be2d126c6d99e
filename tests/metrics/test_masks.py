"""Mask/change coherence on tiny tensors checked by hand."""

from __future__ import annotations

import pytest
import torch

from defectsynth.metrics import (
    changed_outside_mask,
    changed_outside_statistics,
    changed_region,
    mask_coherence,
    mask_overlap,
    pairwise_mask_iou,
    placement_statistics,
    pooled_ratio,
)


def _case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three 2×2 images.

    0: (0,0) changed by 1.0 in [-1,1] (0.5 on [0,1]); (0,1) by 0.1 (0.05: below threshold);
       (1,0) by 0.6 in one channel only (channel mean 0.2 -> 0.1: not above threshold).
       mask ≥ 0.5 at (0,0) and (1,1) -> intersection 1, union 2.
    1: nothing changed, mask empty -> union 0 (left out of the per-image mean).
    2: every pixel changed by -1.0, mask full -> intersection 4, union 4.
    """
    source = torch.zeros(3, 3, 2, 2)
    synthetic = source.clone()
    synthetic[0, :, 0, 0] = 1.0
    synthetic[0, :, 0, 1] = 0.1
    synthetic[0, 0, 1, 0] = 0.6
    synthetic[2] = -1.0
    mask = torch.zeros(3, 1, 2, 2)
    mask[0, 0] = torch.tensor([[0.9, 0.2], [0.2, 0.5]])
    mask[2] = 0.7
    return source, synthetic, mask


def test_changed_region_by_hand() -> None:
    source, synthetic, _ = _case()
    changed = changed_region(source, synthetic)
    assert changed.dtype == torch.bool and changed.shape == (3, 2, 2)
    assert changed[0].tolist() == [[True, False], [False, False]]
    assert not changed[1].any() and changed[2].all()
    # a lower threshold also catches the 0.05 and 0.1 changes
    assert changed_region(source, synthetic, threshold=0.04)[0].tolist() == [
        [True, True],
        [True, False],
    ]


def test_mask_coherence_by_hand() -> None:
    result = mask_coherence(*_case())
    assert result["iou"] == pytest.approx((1 + 4) / (2 + 4))
    assert result["iou_per_image_mean"] == pytest.approx((0.5 + 1.0) / 2)
    assert result["mask_area"] == pytest.approx((2 + 0 + 4) / 12)
    assert result["changed_area"] == pytest.approx((1 + 0 + 4) / 12)


def test_mask_coherence_empty_regions_give_none() -> None:
    images = torch.zeros(2, 3, 4, 4)
    result = mask_coherence(images, images, torch.zeros(2, 1, 4, 4))
    assert result == {
        "iou": None,
        "iou_per_image_mean": None,
        "mask_area": 0.0,
        "changed_area": 0.0,
    }


def test_mask_coherence_checks_shapes() -> None:
    images = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        mask_coherence(images, images, torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="equal shape"):
        changed_region(images, torch.zeros(2, 4, 4, 4))


def test_changed_outside_mask_counts_only_the_background() -> None:
    source = torch.zeros(1, 3, 4, 4)
    synthetic = source.clone()
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 0.8  # top half is the defect (soft values at or above the threshold)
    synthetic[..., 0, :] = 1.0  # changed inside the mask: not counted
    synthetic[..., 3, :2] = 1.0  # 2 of the 8 background pixels changed
    synthetic[..., 3, 2] = 0.1  # below the change threshold (0.05 on [0, 1])
    assert changed_outside_mask(source, synthetic, mask) == pytest.approx(2 / 8)
    # the 0.05 change counts from a lower change threshold on
    assert changed_outside_mask(source, synthetic, mask, change_threshold=0.04) == pytest.approx(
        3 / 8
    )
    # a mask below its threshold is no mask: every changed pixel is then outside
    assert changed_outside_mask(source, synthetic, mask, mask_threshold=0.9) == pytest.approx(
        (4 + 2) / 16
    )


def test_changed_outside_mask_pools_images_and_is_none_without_outside() -> None:
    source = torch.zeros(2, 3, 2, 2)
    synthetic = source.clone()
    synthetic[0] = 1.0  # image 0: all changed, mask empty → 4 of 4 outside changed
    mask = torch.zeros(2, 1, 2, 2)
    mask[1, 0, 0, 0] = 1.0  # image 1: nothing changed, 3 outside pixels
    stats = changed_outside_statistics(source, synthetic, mask)
    assert stats["changed_outside"].tolist() == [4.0, 0.0]
    assert stats["outside"].tolist() == [4.0, 3.0]
    assert changed_outside_mask(source, synthetic, mask) == pytest.approx(4 / 7)
    assert changed_outside_mask(source, synthetic, torch.ones(2, 1, 2, 2)) is None
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        changed_outside_mask(source, synthetic, torch.ones(2, 2, 2))


def _request() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 4×4 sources and a requested 2×2 square in the top-left corner of each."""
    source = torch.zeros(2, 3, 4, 4)
    requested = torch.zeros(2, 1, 4, 4)
    requested[..., :2, :2] = 1.0
    return source, requested


def test_placement_fails_a_model_that_copies_the_request_without_drawing_it() -> None:
    source, requested = _request()
    # the stub: its mask output is the request, its image the untouched source
    stats = placement_statistics(source, source.clone(), requested, predicted=requested.clone())
    assert pooled_ratio(stats["request_changed_intersection"], stats["request_changed_union"]) == 0
    assert pooled_ratio(
        stats["request_predicted_intersection"], stats["request_predicted_union"]
    ) == pytest.approx(1.0)


def test_placement_iou_of_a_model_that_draws_where_asked_and_elsewhere() -> None:
    source, requested = _request()
    synthetic = source.clone()
    synthetic[..., :2, :2] = 1.0  # drawn exactly in the request
    stats = placement_statistics(source, synthetic, requested)
    assert pooled_ratio(
        stats["request_changed_intersection"], stats["request_changed_union"]
    ) == pytest.approx(1.0)
    assert "request_predicted_intersection" not in stats  # no mask output given
    synthetic[1, :, 3, :] = -1.0  # image 1 also paints its bottom row: union 4 + 4
    stats = placement_statistics(source, synthetic, requested)
    assert stats["request_changed_union"].tolist() == [4.0, 8.0]
    assert pooled_ratio(
        stats["request_changed_intersection"], stats["request_changed_union"]
    ) == pytest.approx(8 / 12)


def test_changed_pixels_off_the_foreground() -> None:
    source, requested = _request()
    synthetic = source.clone()
    synthetic[..., :2, :2] = 1.0  # 4 changed pixels per image, 2 of them in column 0
    foreground = torch.ones(4, 4)
    foreground[:, 0] = 0  # column 0 is background
    stats = placement_statistics(source, synthetic, requested, foreground=foreground)
    assert stats["changed"].tolist() == [4.0, 4.0]
    assert stats["changed_off_foreground"].tolist() == [2.0, 2.0]
    # per-image foregrounds (B, 1, H, W) work too; a whole-image foreground gives 0
    whole = placement_statistics(source, synthetic, requested, foreground=torch.ones(2, 1, 4, 4))
    assert whole["changed_off_foreground"].sum() == 0
    with pytest.raises(ValueError, match="foreground"):
        placement_statistics(source, synthetic, requested, foreground=torch.ones(3, 3))
    assert pooled_ratio(torch.zeros(2), torch.zeros(2)) is None


def test_mask_overlap_is_one_for_a_collapsed_set_and_low_for_scattered_masks() -> None:
    same = torch.zeros(5, 1, 8, 8)
    same[..., 2:4, :] = 0.9  # the same band on every image (soft values above the threshold)
    assert mask_overlap(same) == pytest.approx(1.0)
    scattered = torch.zeros(4, 1, 8, 8)
    for i in range(4):
        scattered[i, 0, 2 * i : 2 * i + 2, :] = 1  # four disjoint rows
    assert mask_overlap(scattered) == pytest.approx(0.0)
    # by hand: a 2×2 square vs the same square shifted by one column: 2 / 6
    a = torch.zeros(2, 1, 4, 4)
    a[0, 0, :2, :2] = 1
    a[1, 0, :2, 1:3] = 1
    matrix = pairwise_mask_iou(a)
    assert matrix.flatten().tolist() == pytest.approx([1.0, 1 / 3, 1 / 3, 1.0])
    assert mask_overlap(a) == pytest.approx(1 / 3)
    # a soft mask below the threshold is empty; two empty masks are the same (collapse to nothing)
    assert mask_overlap(torch.full((3, 1, 4, 4), 0.4)) == pytest.approx(1.0)
    assert mask_overlap(same[:1]) is None
    with pytest.raises(ValueError, match="masks"):
        pairwise_mask_iou(torch.zeros(2, 4, 4))
