"""Sample grids of several runs side by side, one picture per product."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image


def side_by_side(
    rows: list[dict[str, Any]],
    products: Sequence[str],
    variants: Sequence[str],
    out: Path,
    key: str = "product",
) -> list[Path]:
    """Per product (``row[key]``), the first seed's sample grids (``row["grid"]``) of every
    variant next to each other, in ``variants`` order: ``out/grids-<product>.png``."""
    written = []
    for product in products:
        grids = []
        for variant in variants:
            match = [r for r in rows if r["variant"] == variant and r[key] == product]
            if match and Path(match[0]["grid"]).is_file():
                grids.append(Image.open(match[0]["grid"]).convert("RGB"))
        if len(grids) < 2:
            continue
        width = sum(g.width for g in grids) + 8 * (len(grids) - 1)
        canvas = Image.new("RGB", (width, max(g.height for g in grids)), "white")
        x = 0
        for grid in grids:
            canvas.paste(grid, (x, 0))
            x += grid.width + 8
        path = out / f"grids-{product}.png"
        canvas.save(path)
        written.append(path)
    return written
