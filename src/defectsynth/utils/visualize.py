"""Sample panels as plain uint8 arrays (never through a plotting library)."""

from __future__ import annotations

import numpy as np
import torch

OVERLAY_COLOR = (255, 40, 40)


def to_uint8(images: torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """(B, C, H, W) tensor in ``value_range`` → (B, H, W, 3) uint8; 1-channel becomes gray."""
    lo, hi = value_range
    x = ((images.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return (x.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1)).numpy()


def overlay(images: np.ndarray, masks: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Tint the pixels where ``masks`` (B, H, W) is set; images (B, H, W, 3) uint8."""
    out = images.astype(np.float32)
    color = np.array(OVERLAY_COLOR, np.float32)
    m = masks[..., None].astype(bool)
    out = np.where(m, (1 - alpha) * out + alpha * color, out)
    return out.round().astype(np.uint8)


def sample_panel(
    source: torch.Tensor | None,
    synthetic: torch.Tensor,
    mask: torch.Tensor | None,
    threshold: float = 0.5,
    pad: int = 2,
) -> np.ndarray:
    """One row per sample: source | synthetic | soft mask | synthetic, binary mask tinted.
    ``source`` None (a model that samples, e.g. DCGAN): a blank source column; ``mask`` None (a
    model without mask output, e.g. CUT): source | synthetic only."""
    syn = to_uint8(synthetic)
    src = np.full_like(syn, 255) if source is None else to_uint8(source)
    columns = [src, syn]
    if mask is not None:
        tinted = overlay(syn, (mask[:, 0] >= threshold).cpu().numpy())
        columns += [to_uint8(mask, (0.0, 1.0)), tinted]
    b, h, w, _ = src.shape
    panel = np.full((b * (h + pad) + pad, len(columns) * (w + pad) + pad, 3), 255, np.uint8)
    for row in range(b):
        for col, images in enumerate(columns):
            top, left = pad + row * (h + pad), pad + col * (w + pad)
            panel[top : top + h, left : left + w] = images[row]
    return panel
