"""The cut-paste baseline: only mask pixels change, the mask keeps its area, seeded."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from defectsynth.inspection.cutpaste import (
    CutPasteLayout,
    feathered_alpha,
    make_cutpaste_set,
    paste_defect,
)
from defectsynth.synthesis import read_manifest


def donor_pair(size: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), np.uint8)
    mask[5:12, 3:9] = 1
    mask[12:15, 8] = 1  # an irregular, thin tail
    return image, mask


@pytest.mark.parametrize("seed", range(8))
def test_only_pixels_inside_the_pasted_mask_change(seed):
    target = np.full((24, 24, 3), 7, np.uint8)
    donor, donor_mask = donor_pair()
    image, mask, paste = paste_defect(target, donor, donor_mask, np.random.default_rng(seed))
    assert image.dtype == np.uint8 and image.shape == target.shape
    assert mask.sum() == donor_mask.sum()  # the area of the source defect
    outside = mask == 0
    assert np.array_equal(image[outside], target[outside])
    assert set(np.unique(mask)) <= {0, 1}
    ys, xs = np.nonzero(mask)
    assert (ys.min(), xs.min()) == (paste.top, paste.left)


def test_hard_paste_copies_the_donor_pixels_with_their_flips():
    target = np.zeros((24, 24, 3), np.uint8)
    donor, donor_mask = donor_pair()
    image, _, paste = paste_defect(
        target, donor, donor_mask, np.random.default_rng(1), edge_alpha=1.0
    )
    ys, xs = np.nonzero(donor_mask)
    patch = donor[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    patch_mask = donor_mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    if paste.hflip:
        patch, patch_mask = patch[:, ::-1], patch_mask[:, ::-1]
    if paste.vflip:
        patch, patch_mask = patch[::-1], patch_mask[::-1]
    h, w = patch_mask.shape
    region = image[paste.top : paste.top + h, paste.left : paste.left + w]
    assert np.array_equal(region[patch_mask > 0], patch[patch_mask > 0])


def test_feathering_softens_only_the_boundary_ring():
    mask = np.zeros((7, 7), np.uint8)
    mask[1:6, 1:6] = 1
    alpha = feathered_alpha(mask, 0.75)
    assert alpha[3, 3] == 1.0 and alpha[1, 1] == 0.75 and alpha[1, 3] == 0.75
    assert alpha[0, 0] == 0.0 and alpha[mask == 0].max() == 0.0


def test_cutpaste_set_is_seeded_and_in_generate_layout(tmp_path: Path):
    targets = [np.full((24, 24, 3), v, np.uint8) for v in (10, 60, 110)]
    donors = [donor_pair(seed=0), donor_pair(seed=1)]
    names = ["/d/a.png", "/d/b.png"]

    def make(out: Path, seed: int) -> list[dict]:
        layout = CutPasteLayout(out, "widget", "scratch")
        return make_cutpaste_set(targets, ["t0", "t1", "t1"], donors, names, layout, seed)

    rows = make(tmp_path / "a", seed=5)
    assert rows == make(tmp_path / "b", seed=5)  # relative paths: equal rows, equal draws
    assert rows != make(tmp_path / "c", seed=6)
    manifest = read_manifest(tmp_path / "a")
    assert [r["source"] for r in manifest] == ["t0", "t1", "t1"]
    assert {r["donor"] for r in manifest} <= set(names)
    assert (tmp_path / "a" / "widget" / "test" / "scratch_cutpaste" / "000.png").is_file()
    assert (tmp_path / "a" / "synthesis.json").is_file()
    a = (tmp_path / "a" / rows[1]["image"]).read_bytes()
    assert a == (tmp_path / "b" / rows[1]["image"]).read_bytes()


def test_flips_and_positions_are_drawn_independently():
    """The Paste of each seeded item must cover all four flip states and many positions, and
    the position must not follow the flips (one shared draw would tie them together)."""
    target = np.zeros((40, 40, 3), np.uint8)
    donor, donor_mask = donor_pair()
    pastes = [
        paste_defect(target, donor, donor_mask, np.random.default_rng([3, i]))[2]
        for i in range(400)
    ]
    flips = Counter(p.flip for p in pastes)
    assert set(flips) == {"none", "h", "v", "hv"}
    assert all(abs(n - 100) < 35 for n in flips.values()), flips
    for state in flips:
        tops = [p.top for p in pastes if p.flip == state]
        assert len(set(tops)) >= 10
