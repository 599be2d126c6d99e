"""What a controllable model's two controls do, in one picture: one source image × ``n_codes``
noise codes × several placements (requested masks), with the masks overlaid.

Each placement is a block of two rows under a caption:

    source, request tinted red | code 0 | code 1 | …            (the synthetic images)
    requested mask (white)     | code 0 | code 1 | …            (predicted mask tinted red)

Along a row only the code changes (what the defect looks like); between blocks only the request
(where it goes). Written by ``make table5`` (src/table5.py) and shown in report.html for a
controllable checkpoint. Built from plain arrays (PIL draws the captions), like every panel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from defectsynth.data.placement import PLACEMENT_MODES
from defectsynth.errors import ConfigError
from defectsynth.utils.visualize import overlay, to_uint8

#: the default rows: drawn anywhere, drawn on the product, a held-out real mask
PLACEMENT_ROWS = ("random", "foreground", "heldout")
HELDOUT = "heldout"
_PAD, _CAPTION = 2, 14


def requested_mask(
    datamodule: Any, mode: str, seed: int, defect_type: int | None = None
) -> tuple[torch.Tensor, str]:
    """One requested mask (1, 1, H, W) in {0, 1} at the data's size, and its caption.

    ``random`` / ``foreground``: drawn by the data's placement from the real training masks
    (``seed``); ``heldout``: the real mask of a held-out test defect (never seen in training),
    chosen by ``seed`` — or a ``random`` draw when the product holds none out."""
    size = int(datamodule.image_size)
    if mode == HELDOUT:
        held_out = datamodule.eval_dataset("defect_test")
        if len(held_out):
            k = seed % len(held_out)
            mask = (held_out[k]["mask"][None] >= 0.5).float()
            return mask, f"held-out test mask {k}"
        mode, suffix = "random", " (no held-out masks)"
    else:
        suffix = ""
    if mode not in PLACEMENT_MODES:
        raise ConfigError(
            f"figure placement {mode!r}; expected one of {[*PLACEMENT_MODES, HELDOUT]}"
        )
    types = None if defect_type is None else [int(defect_type)]
    masks, _ = datamodule.placement(mode).masks(1, size, seed, defect_types=types)
    return masks, f"placement={mode}, seed {seed}{suffix}"


def _upscale(images: np.ndarray, scale: int) -> np.ndarray:
    return images.repeat(scale, axis=1).repeat(scale, axis=2) if scale > 1 else images


def _tile_rows(rows: list[np.ndarray], pad: int) -> np.ndarray:
    """Rows of (n, h, w, 3) uint8 pictures side by side, rows stacked, white gaps."""
    n = max(len(r) for r in rows)
    h, w = rows[0].shape[1:3]
    canvas = np.full((len(rows) * (h + pad) + pad, n * (w + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, picture in enumerate(row):
            top, left = pad + i * (h + pad), pad + j * (w + pad)
            canvas[top : top + h, left : left + w] = picture
    return canvas


def _captioned(block: np.ndarray, caption: str) -> np.ndarray:
    strip = Image.new("RGB", (block.shape[1], _CAPTION), "white")
    ImageDraw.Draw(strip).text((_PAD + 1, 1), caption, fill=(0, 0, 0))
    return np.concatenate([np.asarray(strip), block], axis=0)


@torch.inference_mode()
def codes_by_placements(
    model: Any,
    datamodule: Any,
    source_index: int = 0,
    n_codes: int = 8,
    placements: Sequence[str] = PLACEMENT_ROWS,
    seed: int = 0,
    defect_type: int | None = None,
    threshold: float = 0.5,
    scale: int = 2,
) -> np.ndarray:
    """The figure as an (H, W, 3) uint8 array (see the module docstring). The source is image
    ``source_index`` of the test (else training) defect-free images; code j is
    ``model.codes([seed + j])``, placement row r draws its request with seed ``seed + r``.
    ``defect_type``: the type index of a multi-type model (default: type 0)."""
    if n_codes < 1 or not placements:
        raise ConfigError("the figure needs n_codes >= 1 and at least one placement")
    if not getattr(model, "is_controllable", False):
        raise ConfigError("the codes × placements figure needs a controllable model")
    datamodule.setup()
    split = "normal_test" if datamodule.split.normal_test else "normal_train"
    sources = datamodule.eval_dataset(split)
    x = sources[source_index % len(sources)]["image"][None]
    n_types = int(getattr(model, "n_types", 1))
    chosen = None if n_types == 1 else int(defect_type or 0)
    codes = model.codes([seed + j for j in range(n_codes)])
    blocks = []
    for r, mode in enumerate(placements):
        request, caption = requested_mask(datamodule, str(mode), seed + r, chosen)
        controls: dict[str, Any] = {
            "requested": request.expand(n_codes, -1, -1, -1).to(model.device),
            "z": codes,
        }
        if chosen is not None:
            controls["defect_type"] = torch.full((n_codes,), chosen, device=model.device)
        image, mask = model.synthesize(x.expand(n_codes, -1, -1, -1).to(model.device), **controls)
        synthetic = to_uint8(image)
        want = request[:, 0].cpu().numpy() > 0.5
        first = overlay(to_uint8(x), want)
        request_picture = to_uint8(request.float(), (0.0, 1.0))
        tinted = synthetic
        if mask is not None:
            tinted = overlay(synthetic, (mask[:, 0] >= threshold).cpu().numpy())
        rows = [
            _upscale(np.concatenate([first, synthetic]), scale),
            _upscale(np.concatenate([request_picture, tinted]), scale),
        ]
        caption = f"{caption}: request | codes 0-{n_codes - 1}"
        blocks.append(_captioned(_tile_rows(rows, _PAD), caption))
    return np.concatenate(blocks, axis=0)
