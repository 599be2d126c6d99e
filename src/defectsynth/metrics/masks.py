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


def _binary(mask: torch.Tensor, like: torch.Tensor, threshold: float, name: str) -> torch.Tensor:
    """(B, H, W) bool from a (B, 1, H, W) soft or binary mask (pixel ≥ ``threshold``)."""
    expected = (like.shape[0], 1, *like.shape[2:])
    if tuple(mask.shape) != expected:
        raise ValueError(f"{name} has shape {tuple(mask.shape)}; expected {expected} (B, 1, H, W)")
    return mask[:, 0] >= threshold


def changed_outside_statistics(
    source: torch.Tensor,
    synthetic: torch.Tensor,
    mask: torch.Tensor,
    mask_threshold: float = 0.5,
    change_threshold: float = 0.1,
) -> dict[str, torch.Tensor]:
    """Per-image (B,) float64 counts behind :func:`changed_outside_mask`: ``changed_outside``
    (pixels outside the mask that the generator changed) and ``outside`` (pixels outside it)."""
    changed = changed_region(source, synthetic, change_threshold)
    outside = ~_binary(mask, source, mask_threshold, "mask")
    return {
        "changed_outside": (changed & outside).flatten(1).sum(dim=1).double(),
        "outside": outside.flatten(1).sum(dim=1).double(),
    }


def changed_outside_mask(
    source: torch.Tensor,
    synthetic: torch.Tensor,
    mask: torch.Tensor,
    mask_threshold: float = 0.5,
    change_threshold: float = 0.1,
) -> float | None:
    """Share of the pixels *outside* ``mask`` (≥ ``mask_threshold``: the predicted mask, or the
    requested one of a controllable model) that the generator changed (as :func:`changed_region`),
    pooled over the set: Σ changed outside / Σ outside. None when the masks cover every pixel.

    A generator that keeps the defect-free background scores 0; one that repaints the whole
    image scores about its changed share of the image."""
    stats = changed_outside_statistics(source, synthetic, mask, mask_threshold, change_threshold)
    outside = float(stats["outside"].sum())
    return float(stats["changed_outside"].sum()) / outside if outside > 0 else None


def placement_statistics(
    source: torch.Tensor,
    synthetic: torch.Tensor,
    requested: torch.Tensor,
    predicted: torch.Tensor | None = None,
    foreground: torch.Tensor | None = None,
    mask_threshold: float = 0.5,
    change_threshold: float = 0.1,
) -> dict[str, torch.Tensor]:
    """Per-image (B,) float64 counts: is the defect drawn where it was requested?

    ``request_changed_*``: intersection / union of the requested mask (≥ 0.5) with the pixels
    the generator *changed* — the image, not the mask output, so a model that copies the request
    into its mask without drawing there scores 0. ``request_predicted_*`` (with ``predicted``):
    the same for the generator's mask output ≥ ``mask_threshold``. ``changed`` and
    ``changed_off_foreground`` (with ``foreground``, (H, W) or (B, 1, H, W), nonzero = object):
    changed pixels, and those of them off the product."""
    want = _binary(requested, source, 0.5, "requested")
    changed = changed_region(source, synthetic, change_threshold)
    stats = {
        "request_changed_intersection": (want & changed).flatten(1).sum(dim=1).double(),
        "request_changed_union": (want | changed).flatten(1).sum(dim=1).double(),
        "changed": changed.flatten(1).sum(dim=1).double(),
    }
    if predicted is not None:
        got = _binary(predicted, source, mask_threshold, "predicted")
        stats["request_predicted_intersection"] = (want & got).flatten(1).sum(dim=1).double()
        stats["request_predicted_union"] = (want | got).flatten(1).sum(dim=1).double()
    if foreground is not None:
        fg = foreground.bool()
        if fg.ndim == 2:
            fg = fg.expand(len(source), *fg.shape)
        else:
            fg = _binary(fg.float(), source, 0.5, "foreground")
        if fg.shape[-2:] != changed.shape[-2:]:
            raise ValueError(
                f"foreground is {tuple(fg.shape[-2:])}; the images are {tuple(changed.shape[-2:])}"
            )
        stats["changed_off_foreground"] = (changed & ~fg).flatten(1).sum(dim=1).double()
    return stats


def pooled_ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> float | None:
    """Σ numerator / Σ denominator over the set (None when the denominator sums to 0)."""
    total = float(denominator.sum())
    return float(numerator.sum()) / total if total > 0 else None


def pairwise_mask_iou(masks: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """(N, N) float64 IoU between every two masks (B, 1, H, W) ≥ ``threshold``. Two empty masks
    are the same mask (IoU 1): a generator that draws nothing has collapsed too."""
    if masks.ndim != 4 or masks.shape[1] != 1:
        raise ValueError(f"masks must be (N, 1, H, W); got {tuple(masks.shape)}")
    flat = (masks[:, 0] >= threshold).flatten(1).double()
    intersection = flat @ flat.T
    area = flat.sum(dim=1)
    union = area[:, None] + area[None, :] - intersection
    return torch.where(union > 0, intersection / union.clamp_min(1), torch.ones_like(union))


def mask_overlap(masks: torch.Tensor, threshold: float = 0.5) -> float | None:
    """Mean IoU over the distinct pairs of a set of masks: ~0 for defects that land in different
    places, 1 when every image gets the same mask (a collapsed mask branch: FID alone does not
    see it). Compare with the real masks' own value. None for fewer than 2 masks."""
    n = len(masks)
    if n < 2:
        return None
    matrix = pairwise_mask_iou(masks, threshold)
    return float((matrix.sum() - matrix.diagonal().sum()) / (n * (n - 1)))
