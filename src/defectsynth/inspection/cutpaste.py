"""The non-learned baseline: copy a real training defect, with its mask, onto a defect-free image.

For each target image a donor is drawn from the GAN's *training* defects (never a test defect);
the bounding box of the donor's mask is cut out, flipped at random, and pasted at a random
position where it fits entirely. Only pixels inside the donor's mask change; the boundary ring
of the mask is blended at ``edge_alpha`` (a slight feather that hides the hard seam without
touching a pixel outside the mask), the interior is copied. The pasted mask is the new ground
truth, so its area equals the donor's. Item i draws from ``default_rng([seed, i])``: the set is
reproducible and any item can be remade alone.

The result is written in the layout of ``src/generate.py`` (``manifest.csv``, ``synthesis.json``),
so ``src/evaluate.py samples=<folder>`` measures it like any generator.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from defectsynth.errors import DataError
from defectsynth.synthesis import MANIFEST_FIELDS, SynthesisLayout
from defectsynth.utils.io import save_png, write_text

METHOD = "cut-paste"
CUTPASTE_FIELDS = (*MANIFEST_FIELDS, "donor", "top", "left", "flip")


@dataclass(frozen=True)
class Paste:
    """Where and how one donor was pasted."""

    top: int
    left: int
    hflip: bool
    vflip: bool

    @property
    def flip(self) -> str:
        return {(False, False): "none", (True, False): "h", (False, True): "v"}.get(
            (self.hflip, self.vflip), "hv"
        )


class CutPasteLayout(SynthesisLayout):
    """``<out>/<category>/test/<defect>_cutpaste/NNN.png`` and the matching mask folders."""

    @property
    def folder(self) -> str:
        return f"{self.defect}_cutpaste"


def feathered_alpha(mask: np.ndarray, edge_alpha: float) -> np.ndarray:
    """Opacity per pixel: 0 outside ``mask``, ``edge_alpha`` on its boundary ring (mask pixels
    with a 4-neighbour outside it), 1 inside."""
    binary = (mask > 0).astype(np.uint8)
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    interior = cv2.erode(binary, cross, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    alpha = np.where(interior > 0, 1.0, float(edge_alpha)).astype(np.float32)
    return alpha * binary


def paste_defect(
    target: np.ndarray,
    donor: np.ndarray,
    donor_mask: np.ndarray,
    rng: np.random.Generator,
    edge_alpha: float = 0.75,
) -> tuple[np.ndarray, np.ndarray, Paste]:
    """Paste the masked region of ``donor`` (HxWx3 uint8, mask HxW) onto ``target`` (HxWx3
    uint8); returns (image, mask in {0, 1}, where it went)."""
    if not 0.0 < edge_alpha <= 1.0:
        raise ValueError(f"edge_alpha={edge_alpha} must be in (0, 1]")
    ys, xs = np.nonzero(donor_mask)
    if ys.size == 0:
        raise DataError("a cut-paste donor has an empty mask; nothing to paste")
    patch = donor[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    patch_mask = (donor_mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] > 0).astype(np.uint8)
    hflip, vflip = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
    if hflip:
        patch, patch_mask = patch[:, ::-1], patch_mask[:, ::-1]
    if vflip:
        patch, patch_mask = patch[::-1], patch_mask[::-1]
    height, width = target.shape[:2]
    h, w = patch_mask.shape
    if h > height or w > width:
        raise DataError(
            f"a cut-paste donor's defect ({w}x{h}) does not fit the {width}x{height} target"
        )
    top = int(rng.integers(0, height - h + 1))
    left = int(rng.integers(0, width - w + 1))

    alpha = feathered_alpha(patch_mask, edge_alpha)[..., None]
    image = target.copy()
    region = image[top : top + h, left : left + w]
    blended = alpha * patch.astype(np.float32) + (1.0 - alpha) * region.astype(np.float32)
    inside = patch_mask > 0
    # only mask pixels are written: every pixel outside the pasted mask stays bit-identical
    region[inside] = np.clip(np.rint(blended[inside]), 0, 255).astype(np.uint8)
    mask = np.zeros((height, width), np.uint8)
    mask[top : top + h, left : left + w] = patch_mask
    return image, mask, Paste(top, left, hflip, vflip)


def make_cutpaste_set(
    targets: Sequence[np.ndarray],
    target_names: Sequence[str],
    donors: Sequence[tuple[np.ndarray, np.ndarray]],
    donor_names: Sequence[str],
    layout: CutPasteLayout,
    seed: int = 0,
    edge_alpha: float = 0.75,
    info: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One pasted image per target (the same target may appear several times: each item draws
    its own donor and position); writes images, masks, the alpha map as soft mask,
    ``manifest.csv`` and ``synthesis.json``."""
    if not donors:
        raise DataError("cut-paste needs at least one real training defect image (donor)")
    if len(targets) != len(target_names):
        raise ValueError("one name per target image is needed")
    layout.check_writable()
    rows = []
    for index, (target, name) in enumerate(zip(targets, target_names, strict=True)):
        rng = np.random.default_rng([seed, index])
        which = int(rng.integers(len(donors)))
        donor, donor_mask = donors[which]
        image, mask, paste = paste_defect(target, donor, donor_mask, rng, edge_alpha)
        image_path, mask_path, soft_path = layout.files(index)
        soft = np.zeros(mask.shape, np.float32)
        ys, xs = np.nonzero(mask)
        if ys.size:
            top, left = ys.min(), xs.min()
            alpha = feathered_alpha(mask[top : ys.max() + 1, left : xs.max() + 1], edge_alpha)
            soft[top : ys.max() + 1, left : xs.max() + 1] = alpha
        save_png((mask * 255).astype(np.uint8), mask_path)
        save_png(np.rint(soft * 255).astype(np.uint8), soft_path)
        save_png(image, image_path)  # last, as generate.py does: its presence marks the item done
        rows.append(
            {
                "index": index,
                "source": name,
                "variant": "paste",
                "seed": seed,
                "image": str(image_path.relative_to(layout.out)),
                "mask": str(mask_path.relative_to(layout.out)),
                "soft_mask": str(soft_path.relative_to(layout.out)),
                "mask_area": f"{float(mask.mean()):.6f}",
                "donor": donor_names[which],
                "top": paste.top,
                "left": paste.left,
                "flip": paste.flip,
            }
        )
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CUTPASTE_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    write_text(buffer.getvalue(), layout.manifest)
    size = int(targets[0].shape[0]) if len(targets) else None
    meta = {
        "model_class": METHOD,
        "category": layout.category,
        "defect": layout.defect,
        "n_images": len(rows),
        "n_donors": len(donors),
        "seed": seed,
        "edge_alpha": edge_alpha,
        "threshold": 0.5,
        "image_size": size,
        **(info or {}),
    }
    write_text(json.dumps(meta, indent=2, default=str) + "\n", layout.info)
    return rows
