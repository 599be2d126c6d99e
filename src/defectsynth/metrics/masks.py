"""Does the predicted defect mask cover the pixels the generator actually changed?

The generator edits a defect-free image and predicts where it put the defect. Comparing that mask
with the region where source and synthetic image differ measures the image/mask coherence the
paper's D_C is meant to enforce, without any ground truth for synthetic defects.
"""

from __future__ import annotations

import torch


def _check_pair(source: torch.Tensor, synthetic: torch.Tensor) -> None:
    if source.ndim != 4 or source.shape[1] != 3 or source.shape != synthetic.shape:
        raise ValueError(
            "expected source and synthetic images (B, 3, H, W) of equal shape; got "
            f"{tuple(source.shape)} and {tuple(synthetic.shape)}"
        )


def changed_region(
    source: torch.Tensor, synthetic: torch.Tensor, threshold: float = 0.1
) -> torch.Tensor:
    """(B, H, W) bool: the channel-mean absolute difference, on the [0, 1] scale, exceeds
    ``threshold`` (images are in [-1, 1], so their difference is halved)."""
    _check_pair(source, synthetic)
    difference = (synthetic.float() - source.float()).abs().mean(dim=1) / 2.0
    return difference > threshold


def mask_statistics(
    source: torch.Tensor,
    synthetic: torch.Tensor,
    mask: torch.Tensor,
    mask_threshold: float = 0.5,
    change_threshold: float = 0.1,
) -> dict[str, torch.Tensor]:
    """Per-image (B,) float64 counts behind :func:`mask_coherence`: ``intersection`` and ``union``
    of the predicted defect (mask ≥ ``mask_threshold``) and the changed region, and the fractions
    ``mask_area`` / ``changed_area`` of pixels predicted / changed."""
    changed = changed_region(source, synthetic, change_threshold)
    expected = (source.shape[0], 1, *source.shape[2:])
    if tuple(mask.shape) != expected:
        raise ValueError(f"mask has shape {tuple(mask.shape)}; expected {expected} (B, 1, H, W)")
    predicted = mask[:, 0] >= mask_threshold
    return {
        "intersection": (predicted & changed).flatten(1).sum(dim=1).double(),
        "union": (predicted | changed).flatten(1).sum(dim=1).double(),
        "mask_area": predicted.flatten(1).double().mean(dim=1),
        "changed_area": changed.flatten(1).double().mean(dim=1),
    }


def coherence_from_statistics(stats: dict[str, torch.Tensor]) -> dict[str, float | None]:
    """The set-level numbers of :func:`mask_coherence` from :func:`mask_statistics`."""
    intersection, union = stats["intersection"], stats["union"]
    total_union = float(union.sum())
    non_empty = union > 0
    return {
        "iou": float(intersection.sum()) / total_union if total_union > 0 else None,
        "iou_per_image_mean": (
            float((intersection[non_empty] / union[non_empty]).mean()) if non_empty.any() else None
        ),
        "mask_area": float(stats["mask_area"].mean()),
        "changed_area": float(stats["changed_area"].mean()),
    }


def mask_coherence(
    source: torch.Tensor,
    synthetic: torch.Tensor,
    mask: torch.Tensor,
    mask_threshold: float = 0.5,
    change_threshold: float = 0.1,
) -> dict[str, float | None]:
    """IoU between the predicted defect (mask ≥ ``mask_threshold``) and the changed region.

    ``iou`` pools the set: Σ intersections / Σ unions (None if both regions are empty everywhere).
    ``iou_per_image_mean`` averages per-image IoUs over images where either region is non-empty
    (None if there are none). ``mask_area`` / ``changed_area``: mean fraction of pixels predicted
    as defect / changed.
    """
    return coherence_from_statistics(
        mask_statistics(source, synthetic, mask, mask_threshold, change_threshold)
    )
