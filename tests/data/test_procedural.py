"""Tests of the embedded procedural dataset (defectsynth.data.procedural)."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import FrozenInstanceError, asdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from defectsynth.data import procedural
from defectsynth.data.procedural import (
    PRODUCTS,
    ProceduralSpec,
    ensure_dataset,
    render_sample,
    write_dataset,
)

CATEGORIES = sorted(PRODUCTS)
SIZE = 96


def small_spec(category: str, **overrides: int) -> ProceduralSpec:
    fields = {"image_size": 64, "n_train_good": 3, "n_test_good": 2, "n_defect": 2}
    fields.update(overrides)
    return ProceduralSpec.for_category(category, **fields)


def luminance(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32).mean(axis=2)


def redness(image: np.ndarray, where: np.ndarray) -> float:
    return float((image[..., 0].astype(float) - image[..., 2])[where].mean())


# ------------------------------------------------------------------------------- spec


def test_products_are_the_papers_pairs() -> None:
    assert PRODUCTS == {"tile": "crack", "wood": "hole", "transistor": "cut_lead"}


@pytest.mark.parametrize(
    ("category", "counts"),
    [("tile", (230, 33, 17)), ("wood", (247, 19, 10)), ("transistor", (213, 60, 10))],
)
def test_spec_defaults_are_real_mvtec_counts(category: str, counts: tuple[int, int, int]) -> None:
    spec = ProceduralSpec.for_category(category)
    assert (spec.n_train_good, spec.n_test_good, spec.n_defect) == counts
    assert spec.image_size == 512 and spec.seed == 0
    assert ProceduralSpec(category) == spec


def test_spec_overrides_and_is_frozen() -> None:
    spec = ProceduralSpec.for_category("tile", image_size=64, n_train_good=12)
    assert (spec.image_size, spec.n_train_good, spec.n_test_good, spec.n_defect) == (64, 12, 33, 17)
    with pytest.raises(FrozenInstanceError):
        spec.seed = 3  # type: ignore[misc]


def test_fingerprint_is_stable_and_sensitive_to_every_field() -> None:
    spec = small_spec("wood")
    assert spec.fingerprint() == small_spec("wood").fingerprint()
    assert len(spec.fingerprint()) <= 16
    int(spec.fingerprint(), 16)  # hexadecimal
    variants = [
        small_spec("tile"),
        small_spec("wood", image_size=65),
        small_spec("wood", n_train_good=4),
        small_spec("wood", n_test_good=3),
        small_spec("wood", n_defect=3),
        small_spec("wood", seed=1),
    ]
    prints = {v.fingerprint() for v in variants}
    assert len(prints) == len(variants) and spec.fingerprint() not in prints


def test_fingerprint_depends_on_generator_version(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = small_spec("tile")
    before = spec.fingerprint()
    monkeypatch.setattr(procedural, "GENERATOR_VERSION", procedural.GENERATOR_VERSION + "-next")
    assert spec.fingerprint() != before


@pytest.mark.parametrize(
    "call",
    [
        lambda: ProceduralSpec("carpet"),
        lambda: ProceduralSpec.for_category("carpet", image_size=64),
        lambda: render_sample("carpet", 64, 0, False),
    ],
)
def test_unknown_category_names_it_and_lists_the_available_ones(call) -> None:
    with pytest.raises(ValueError, match="carpet") as info:
        call()
    for category in PRODUCTS:
        assert category in str(info.value)


@pytest.mark.parametrize(
    "overrides", [{"image_size": 8}, {"n_defect": -1}, {"seed": -1}, {"n_train_good": 1.5}]
)
def test_spec_rejects_bad_values(overrides: dict) -> None:
    with pytest.raises(ValueError):
        ProceduralSpec.for_category("tile", **overrides)


# ------------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("category", CATEGORIES)
def test_render_is_deterministic(category: str) -> None:
    a = render_sample(category, SIZE, 7, True)
    b = render_sample(category, SIZE, 7, True)
    for x, y in zip(a, b, strict=True):
        assert x is not None and y is not None
        assert x.tobytes() == y.tobytes()
    # the clean instance does not depend on whether a defect is also rendered
    clean, defect, mask = render_sample(category, SIZE, 7, False)
    assert defect is None and mask is None
    assert clean.tobytes() == a[0].tobytes()
    other = render_sample(category, SIZE, 8, True)
    assert other[0].tobytes() != a[0].tobytes()
    assert other[2].tobytes() != a[2].tobytes()


@pytest.mark.parametrize("category", CATEGORIES)
def test_output_types_and_shapes(category: str) -> None:
    clean, defect, mask = render_sample(category, 80, 3, True)
    assert clean.shape == (80, 80, 3) and clean.dtype == np.uint8
    assert defect is not None and defect.shape == (80, 80, 3) and defect.dtype == np.uint8
    assert mask is not None and mask.shape == (80, 80) and mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) == {0, 1}


@pytest.mark.parametrize("category", CATEGORIES)
@pytest.mark.parametrize("size", [64, 128])
def test_defect_changes_only_pixels_inside_a_tight_mask(category: str, size: int) -> None:
    for seed in range(6):
        clean, defect, mask = render_sample(category, size, seed, True)
        assert defect is not None and mask is not None
        inside = mask.astype(bool)
        changed = np.any(clean != defect, axis=2)
        assert inside.any(), "every defect needs a non-empty mask"
        assert changed.any(), "a defect image must differ from its clean instance"
        # pixel-exact outside the mask, and the mask covers every changed pixel
        assert np.array_equal(clean[~inside], defect[~inside])
        assert not (changed & ~inside).any()
        # not grossly larger than the change: every mask pixel is within a few pixels of it
        margin = 2 + round(4 * size / 512)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1,) * 2)
        near_change = cv2.dilate(changed.astype(np.uint8), kernel).astype(bool)
        assert not (inside & ~near_change).any()
        assert inside.mean() < 0.4
        # the change is visible, not just quantisation noise
        diff = np.abs(clean.astype(int) - defect.astype(int)).max(axis=2)
        assert diff[changed].mean() > 12


@pytest.mark.parametrize("category", ["tile", "wood"])
def test_mask_follows_the_defect_shape_not_its_bounding_box(category: str) -> None:
    for seed in range(6):
        _, _, mask = render_sample(category, 128, seed, True)
        assert mask is not None
        ys, xs = np.nonzero(mask)
        bbox_area = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        assert mask.sum() < 0.9 * bbox_area


def test_crack_is_a_thin_dark_line_spanning_the_tile() -> None:
    for seed in range(6):
        clean, defect, mask = render_sample("tile", 256, seed, True)
        assert defect is not None and mask is not None
        inside = mask.astype(bool)
        assert luminance(defect)[inside].mean() < luminance(clean)[inside].mean() - 15
        ys, xs = np.nonzero(mask)
        extent = max(ys.max() - ys.min(), xs.max() - xs.min())
        assert extent > 0.3 * 256, "cracks cross a large part of the tile"
        assert inside.mean() < 0.12, "cracks are thin"


def test_hole_is_a_small_dark_blob() -> None:
    for seed in range(6):
        clean, defect, mask = render_sample("wood", 256, seed, True)
        assert defect is not None and mask is not None
        inside = mask.astype(bool)
        assert luminance(defect)[inside].mean() < luminance(clean)[inside].mean() - 25
        assert 0.0005 < inside.mean() < 0.05
        assert luminance(defect)[inside].min() < 40, "the hole's interior is near black"


def test_cut_lead_reveals_copper_board_below_the_package() -> None:
    for seed in range(6):
        clean, defect, mask = render_sample("transistor", 256, seed, True)
        assert defect is not None and mask is not None
        inside = mask.astype(bool)
        ys, _ = np.nonzero(mask)
        assert ys.mean() > 0.5 * 256, "leads are in the lower part of the image"
        assert inside.mean() < 0.06, "a single lead is a small part of the image"

        # grey metal replaced by reddish copper / dark holes: redness rises in the mask
        assert redness(defect, inside) > redness(clean, inside) + 5


@pytest.mark.parametrize("category", CATEGORIES)
def test_good_images_are_distinct_instances(category: str) -> None:
    images = [render_sample(category, SIZE, seed, False)[0].astype(np.int16) for seed in range(4)]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert np.abs(images[i] - images[j]).mean() > 3


def test_colours_resemble_the_real_products() -> None:
    tile = render_sample("tile", 128, 0, False)[0].reshape(-1, 3).mean(axis=0)
    assert 90 < tile.mean() < 160 and tile[1] >= tile[0] - 2 and tile[1] >= tile[2] - 2
    wood = render_sample("wood", 128, 0, False)[0].reshape(-1, 3).mean(axis=0)
    assert wood[0] > wood[1] + 20 > wood[2] + 30
    transistor = render_sample("transistor", 128, 0, False)[0]
    body = transistor[30:55, 45:85].reshape(-1, 3).mean(axis=0)
    board_edge = transistor[:, :8].reshape(-1, 3).mean(axis=0)
    assert body.mean() < 45, "the package is black"
    assert board_edge[0] > board_edge[2] + 15, "the board is copper coloured"


def test_image_seeds_never_repeat_across_splits() -> None:
    seeds = {
        procedural._image_seed(0, split, index)
        for split in ("train_good", "test_good", "test_defect")
        for index in range(300)
    }
    assert len(seeds) == 900
    assert procedural._image_seed(0, "train_good", 5) != procedural._image_seed(1, "train_good", 5)


# ------------------------------------------------------------------------------- files


def read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "RGB"
        return np.asarray(im)


@pytest.mark.parametrize("category", CATEGORIES)
def test_written_layout_matches_mvtec(tmp_path: Path, category: str) -> None:
    spec = small_spec(category, n_train_good=4, n_test_good=3, n_defect=2)
    assert write_dataset(spec, tmp_path) == tmp_path
    defect = PRODUCTS[category]
    folder = tmp_path / category
    assert sorted(p.name for p in tmp_path.iterdir()) == [category]  # no temporary leftovers
    dirs = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_dir()}
    assert dirs == {
        "train",
        "train/good",
        "test",
        "test/good",
        f"test/{defect}",
        "ground_truth",
        f"ground_truth/{defect}",
    }
    names = lambda sub: sorted(p.name for p in (folder / sub).iterdir())  # noqa: E731
    assert names("train/good") == ["000.png", "001.png", "002.png", "003.png"]
    assert names("test/good") == ["000.png", "001.png", "002.png"]
    assert names(f"test/{defect}") == ["000.png", "001.png"]
    assert names(f"ground_truth/{defect}") == ["000_mask.png", "001_mask.png"]
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == ["procedural.json"]
    for image in folder.rglob("*.png"):
        with Image.open(image) as im:
            assert im.size == (64, 64)
            if image.name.endswith("_mask.png"):
                assert im.mode == "L"
                assert set(np.unique(np.asarray(im)).tolist()) == {0, 255}
            else:
                assert im.mode == "RGB"
    meta = json.loads((folder / "procedural.json").read_text())
    assert meta["fingerprint"] == spec.fingerprint()
    assert meta["spec"] == asdict(spec)


def test_written_files_match_render_sample(tmp_path: Path) -> None:
    spec = small_spec("tile", seed=5)
    write_dataset(spec, tmp_path)
    folder = tmp_path / "tile"
    seed = procedural._image_seed(5, "test_defect", 1)
    _, defect, mask = render_sample("tile", 64, seed, True)
    assert np.array_equal(read_rgb(folder / "test/crack/001.png"), defect)
    with Image.open(folder / "ground_truth/crack/001_mask.png") as im:
        assert np.array_equal(np.asarray(im), mask * 255)
    good = read_rgb(folder / "train/good/002.png")
    seed = procedural._image_seed(5, "train_good", 2)
    assert np.array_equal(good, render_sample("tile", 64, seed, False)[0])


def test_datasets_are_reproducible_and_splits_distinct(tmp_path: Path) -> None:
    spec = small_spec("wood")
    write_dataset(spec, tmp_path / "a")
    write_dataset(spec, tmp_path / "b")
    for path in sorted((tmp_path / "a" / "wood").rglob("*.png")):
        twin = tmp_path / "b" / path.relative_to(tmp_path / "a")
        with Image.open(path) as x, Image.open(twin) as y:
            assert np.array_equal(np.asarray(x), np.asarray(y))
    folder = tmp_path / "a" / "wood"
    train0 = read_rgb(folder / "train/good/000.png")
    assert not np.array_equal(train0, read_rgb(folder / "test/good/000.png"))
    assert not np.array_equal(train0, read_rgb(folder / "train/good/001.png"))
    write_dataset(small_spec("wood", seed=1), tmp_path / "c")
    assert not np.array_equal(train0, read_rgb(tmp_path / "c/wood/train/good/000.png"))


def test_write_refuses_to_overwrite(tmp_path: Path) -> None:
    spec = small_spec("transistor", n_train_good=1, n_test_good=1, n_defect=1)
    write_dataset(spec, tmp_path)
    with pytest.raises(FileExistsError):
        write_dataset(spec, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["transistor"]


def test_interrupted_write_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = procedural.render_sample
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(procedural, "render_sample", flaky)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(small_spec("tile"), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_ensure_dataset_generates_once_and_reuses(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = small_spec("tile")
    with caplog.at_level(logging.INFO, logger=procedural.__name__):
        root = ensure_dataset(spec, tmp_path)
    assert root == tmp_path / "procedural" / f"tile-{spec.fingerprint()}"
    logs = [r for r in caplog.records if r.name == procedural.__name__]
    assert len(logs) == 1 and "7 images" in logs[0].getMessage()
    folder = root / "tile"
    probe = folder / "train/good/000.png"
    stamps = (probe.stat().st_mtime_ns, (folder / "procedural.json").stat().st_mtime_ns)

    caplog.clear()
    with caplog.at_level(logging.INFO, logger=procedural.__name__):
        assert ensure_dataset(spec, tmp_path) == root
    assert not [r for r in caplog.records if r.name == procedural.__name__]
    assert (probe.stat().st_mtime_ns, (folder / "procedural.json").stat().st_mtime_ns) == stamps

    other = ensure_dataset(small_spec("tile", seed=1), tmp_path)
    assert other != root and (other / "tile" / "train/good/000.png").exists()
    assert not np.array_equal(read_rgb(probe), read_rgb(other / "tile/train/good/000.png"))


def test_ensure_dataset_regenerates_a_foreign_folder(tmp_path: Path) -> None:
    spec = small_spec("wood")
    root = ensure_dataset(spec, tmp_path)
    meta_path = root / "wood" / "procedural.json"
    meta = json.loads(meta_path.read_text())
    meta["spec"]["seed"] = 99
    meta_path.write_text(json.dumps(meta))
    assert ensure_dataset(spec, tmp_path) == root
    assert json.loads(meta_path.read_text())["spec"] == asdict(spec)
    assert sorted(p.name for p in root.iterdir()) == ["wood"]


def test_ensure_dataset_is_safe_under_concurrency(tmp_path: Path) -> None:
    spec = small_spec("transistor")
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(ensure_dataset(spec, tmp_path))
        except BaseException as err:  # surfaced by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(results)) == 1
    root = results[0]
    assert sorted(p.name for p in root.iterdir()) == ["transistor"]
    assert len(list((root / "transistor" / "train" / "good").iterdir())) == 3


# ------------------------------------------------------------------------------- second types

SECOND_TYPES = [("tile", "glue_strip"), ("wood", "scratch"), ("transistor", "misplaced")]


def test_every_product_has_a_second_defect_type_after_the_papers() -> None:
    assert {c: types[0] for c, types in procedural.DEFECT_TYPES.items()} == PRODUCTS
    assert dict(SECOND_TYPES) == {c: types[1] for c, types in procedural.DEFECT_TYPES.items()}


@pytest.mark.parametrize(("category", "defect"), SECOND_TYPES)
@pytest.mark.parametrize("size", [64, 128])
def test_second_type_changes_only_pixels_inside_its_mask(
    category: str, defect: str, size: int
) -> None:
    for seed in range(4):
        clean, image, mask = render_sample(category, size, seed, True, defect)
        assert image is not None and mask is not None
        assert set(np.unique(mask).tolist()) == {0, 1}
        inside = mask.astype(bool)
        changed = np.any(clean != image, axis=2)
        assert changed.any() and np.array_equal(clean[~inside], image[~inside])
        margin = 2 + round(4 * size / 512)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1,) * 2)
        assert not (inside & ~cv2.dilate(changed.astype(np.uint8), kernel).astype(bool)).any()
        assert inside.mean() < (0.5 if defect == "misplaced" else 0.2)
        diff = np.abs(clean.astype(int) - image.astype(int)).max(axis=2)
        assert diff[changed].mean() > 12


@pytest.mark.parametrize(("category", "defect"), SECOND_TYPES)
def test_second_type_is_deterministic_and_keeps_the_clean_instance(
    category: str, defect: str
) -> None:
    a = render_sample(category, SIZE, 11, True, defect)
    b = render_sample(category, SIZE, 11, True, defect)
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b, strict=True))
    first = render_sample(category, SIZE, 11, True)
    assert a[0].tobytes() == first[0].tobytes()  # same part, another defect
    assert a[2].tobytes() != first[2].tobytes()
    # the explicit name of the paper's type is the default
    assert render_sample(category, SIZE, 11, True, PRODUCTS[category])[1].tobytes() == (
        first[1].tobytes()
    )


def test_unknown_defect_type_lists_the_available_ones() -> None:
    with pytest.raises(ValueError, match="glue_strip") as info:
        render_sample("tile", 64, 0, True, "scratch")
    assert "crack" in str(info.value) and "scratch" in str(info.value)


def test_glue_strip_is_a_wide_darker_band() -> None:
    for seed in range(5):
        clean, image, mask = render_sample("tile", 256, seed, True, "glue_strip")
        inside = mask.astype(bool)
        assert luminance(image)[inside].mean() < luminance(clean)[inside].mean() - 8
        # far wider than a crack: its distance-transform ridge is several pixels
        assert cv2.distanceTransform(mask, cv2.DIST_L2, 3).max() > 4
        ys, xs = np.nonzero(mask)
        assert max(np.ptp(ys), np.ptp(xs)) > 0.25 * 256


def test_scratch_is_a_thin_long_line() -> None:
    for seed in range(6):
        _, _, mask = render_sample("wood", 256, seed, True, "scratch")
        ys, xs = np.nonzero(mask)
        assert max(np.ptp(ys), np.ptp(xs)) > 0.15 * 256
        assert cv2.distanceTransform(mask, cv2.DIST_L2, 3).max() < 7  # a few px wide
        assert mask.mean() < 0.04


def test_misplaced_moves_the_black_package() -> None:
    for seed in range(4):
        clean, image, mask = render_sample("transistor", 128, seed, True, "misplaced")
        package = luminance(clean) < 40
        moved = luminance(image) < 40
        # the package left some of its pixels and covers new ones, all inside the mask
        assert (package & ~moved).sum() > 20 and (moved & ~package).sum() > 20
        assert mask.astype(bool)[package ^ moved].all()


def test_all_defects_spec_writes_both_types_and_keeps_the_papers_files(tmp_path: Path) -> None:
    plain = small_spec("wood")
    both = small_spec("wood", all_defects=True)
    assert both.defects == ("hole", "scratch") and plain.defects == ("hole",)
    assert both.fingerprint() != plain.fingerprint()
    write_dataset(plain, tmp_path / "a")
    write_dataset(both, tmp_path / "b")
    folder = tmp_path / "b" / "wood"
    assert sorted(p.name for p in (folder / "test").iterdir()) == ["good", "hole", "scratch"]
    assert sorted(p.name for p in (folder / "ground_truth/scratch").iterdir()) == [
        "000_mask.png",
        "001_mask.png",
    ]
    for path in sorted((tmp_path / "a" / "wood").rglob("*.png")):
        twin = folder / path.relative_to(tmp_path / "a" / "wood")
        assert path.read_bytes() == twin.read_bytes()
    hole = read_rgb(folder / "test/hole/000.png")
    assert not np.array_equal(hole, read_rgb(folder / "test/scratch/000.png"))
    meta = json.loads((folder / "procedural.json").read_text())
    assert meta["defects"] == ["hole", "scratch"] and meta["spec"]["all_defects"] is True


def test_caches_written_before_all_defects_existed_are_reused(tmp_path: Path) -> None:
    spec = small_spec("tile")
    root = ensure_dataset(spec, tmp_path)
    meta_path = root / "tile" / "procedural.json"
    meta = json.loads(meta_path.read_text())
    del meta["spec"]["all_defects"]  # what an older version wrote
    meta_path.write_text(json.dumps(meta))
    stamp = (root / "tile/train/good/000.png").stat().st_mtime_ns
    assert ensure_dataset(spec, tmp_path) == root
    assert (root / "tile/train/good/000.png").stat().st_mtime_ns == stamp
