"""Mask/change coherence on tiny tensors checked by hand."""

from __future__ import annotations

import pytest
import torch

from defectsynth.metrics import changed_region, mask_coherence


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
