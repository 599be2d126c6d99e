"""generate.py's output read by the field's standard library (issue 12). Optional: anomalib is
never part of this project's install; where it is installed (a separate environment), its MVTec
AD reader and its generic folder reader must take the synthetic images as anomalous samples with
their own masks, and the product's good images as normal ones without masks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from defectsynth.synthesis import SynthesisLayout, read_manifest, synthesize
from tests.helpers import write_png
from tests.test_synthesis import Darken, sources


def records(frame: Any) -> list[dict[str, Any]]:
    """Rows of anomalib's sample table, pandas (older releases) or polars (newer)."""
    if hasattr(frame, "to_dicts"):
        return frame.to_dicts()
    return frame.to_dict("records")


@pytest.fixture
def category(tmp_path: Path) -> Path:
    """A synthetic set written next to the product's train/good and test/good."""
    out = tmp_path / "out"
    names = [f"src{i}.png" for i in range(3)]
    synthesize(Darken(), sources(), names, SynthesisLayout(out, "tile", "crack"), n_per_image=2)
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for i in range(3):
            image = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
            write_png(out / "tile" / split / "good" / f"{i:03d}.png", image)
    return out / "tile"


def pixels(path: str | Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def check(rows: list[dict[str, Any]], out: Path) -> None:
    written = {
        (out / r["image"]).resolve(): (out / r["mask"]).resolve() for r in read_manifest(out)
    }
    anomalous = [r for r in rows if int(r["label_index"]) == 1]
    normal = [r for r in rows if int(r["label_index"]) == 0]
    assert {Path(r["image_path"]).resolve() for r in anomalous} == set(written)
    for r in anomalous:
        mask = written[Path(r["image_path"]).resolve()]
        assert np.array_equal(pixels(r["mask_path"]), pixels(mask))
    assert len(normal) == 6 and all(Path(r["image_path"]).parent.name == "good" for r in normal)
    assert all(not r.get("mask_path") for r in normal)


def test_anomalib_mvtec_reader_loads_the_synthetic_category(category):
    pytest.importorskip("anomalib", reason="anomalib is not installed (optional, never required)")
    from anomalib.data.datasets.image.mvtecad import make_mvtec_ad_dataset

    check(records(make_mvtec_ad_dataset(category)), category.parent)


def test_anomalib_folder_reader_loads_the_synthetic_set(category):
    pytest.importorskip("anomalib", reason="anomalib is not installed (optional, never required)")
    from anomalib.data.datasets.image.folder import make_folder_dataset

    frame = make_folder_dataset(
        normal_dir=category / "train" / "good",
        abnormal_dir=category / "test" / "crack_synthetic",
        normal_test_dir=category / "test" / "good",
        mask_dir=category / "ground_truth" / "crack_synthetic",
    )
    check(records(frame), category.parent)
