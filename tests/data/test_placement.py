"""Requested masks (defectsynth.data.placement): the sampler's distribution, determinism and
foreground restriction, foreground estimation on real and procedural products, user masks."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from defectsynth.data import procedural
from defectsynth.data.cache import decode_image, decode_mask
from defectsynth.data.mvtec import list_images
from defectsynth.data.placement import (
    Foreground,
    Placement,
    PlacementConfig,
    RequestedMaskSampler,
    estimate_foreground,
    load_foreground,
    save_foreground,
)
from defectsynth.errors import ConfigError, DataError

SIZE = 64


def bar(size: int = SIZE) -> np.ndarray:
    """An elongated bar in the top-left corner: orientation and position are easy to read."""
    mask = np.zeros((size, size), np.uint8)
    mask[4:8, 4:28] = 1
    return mask


def orientation(mask: np.ndarray) -> float:
    """Angle of the principal axis in degrees, in [0, 180)."""
    m = cv2.moments(mask, binaryImage=True)
    return float(np.degrees(0.5 * np.arctan2(2 * m["mu11"], m["mu20"] - m["mu02"])) % 180)


def centre(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(ys.mean()), float(xs.mean())


# ------------------------------------------------------------------------------- sampler


def test_draws_vary_in_position_and_rotation_and_keep_a_plausible_area() -> None:
    sampler = RequestedMaskSampler([bar()], ["bar"], SIZE)
    draws = [sampler.sample(seed) for seed in range(200)]
    masks = [d.mask for d in draws]
    assert all(m.shape == (SIZE, SIZE) and m.dtype == np.uint8 for m in masks)
    assert all(m.any() for m in masks), "a requested mask is never empty"
    assert set(np.unique(np.stack(masks)).tolist()) == {0, 1}
    centres = np.array([centre(m) for m in masks])
    # positions spread over the image: every quadrant is used, not only the source's corner
    quadrants = {(y >= SIZE / 2, x >= SIZE / 2) for y, x in centres}
    assert len(quadrants) == 4
    assert centres.std(axis=0).min() > 0.12 * SIZE
    angles = np.array([orientation(m) for m in masks])
    # the source is horizontal (0°): rotations reach every orientation bin
    hist, _ = np.histogram(angles, bins=6, range=(0, 180))
    assert (hist > 5).all(), hist
    ratio = np.array([m.sum() for m in masks]) / bar().sum()
    assert ratio.min() > 0.3 and ratio.max() < 2.5
    assert 0.7 < np.median(ratio) < 1.4
    params = [d.description for d in draws]
    assert {p["source"] for p in params} == {"bar"}
    assert np.ptp([p["scale"] for p in params]) > 0.5
    assert any(p["hflip"] for p in params) and not all(p["hflip"] for p in params)


def test_draws_are_a_pure_function_of_the_seed() -> None:
    a = RequestedMaskSampler([bar()], ["bar"], SIZE)
    b = RequestedMaskSampler([bar()], ["bar"], SIZE)
    for seed in (0, 7, 123456):
        x, y = a.sample(seed), b.sample(seed)
        assert np.array_equal(x.mask, y.mask) and x.description == y.description
    b.sample(99)  # another draw in between changes nothing
    assert np.array_equal(a.sample(5).mask, b.sample(5).mask)
    distinct = {a.sample(seed).mask.tobytes() for seed in range(20)}
    assert len(distinct) == 20


def test_without_rotation_scale_and_warp_a_draw_is_the_source_translated() -> None:
    """Alignment: the geometry is exactly the described one (no hidden offsets or flips)."""
    config = PlacementConfig(rotate=0, scale=(1, 1), flip=False, elastic_p=0)
    sampler = RequestedMaskSampler([bar()], ["bar"], SIZE, config=config)
    for seed in range(20):
        drawn = sampler.sample(seed)
        ys, xs = np.nonzero(drawn.mask)
        crop = drawn.mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        assert crop.shape == (4, 24) and crop.all()
        assert abs(drawn.description["centre_y"] * SIZE - (ys.min() + ys.max()) / 2) <= 0.5
        assert abs(drawn.description["centre_x"] * SIZE - (xs.min() + xs.max()) / 2) <= 0.5


def test_sources_are_resized_to_the_output_size() -> None:
    big = cv2.resize(bar(), (256, 256), interpolation=cv2.INTER_NEAREST)
    config = PlacementConfig(rotate=0, scale=(1, 1), flip=False, elastic_p=0)
    drawn = RequestedMaskSampler([big], ["big"], SIZE, config=config).sample(0)
    assert drawn.mask.shape == (SIZE, SIZE) and drawn.mask.sum() == bar().sum()


def test_foreground_restriction_keeps_masks_on_the_foreground() -> None:
    foreground = np.zeros((SIZE, SIZE), np.uint8)
    foreground[:, : SIZE // 2] = 1  # the left half
    small = np.zeros((SIZE, SIZE), np.uint8)
    small[10:16, 10:18] = 1
    free = RequestedMaskSampler([small], ["s"], SIZE)
    held = RequestedMaskSampler([small], ["s"], SIZE, foreground=foreground)
    share = lambda m: (m & foreground).sum() / m.sum()  # noqa: E731
    free_shares = np.array([share(free.sample(s).mask) for s in range(150)])
    held_shares = np.array([share(held.sample(s).mask) for s in range(150)])
    assert (free_shares < 0.5).mean() > 0.3, "unrestricted draws land on both halves"
    assert (held_shares >= 0.9).all()
    assert held.fallbacks == 0
    assert all(held.sample(s).description["on_foreground"] >= 0.9 for s in range(10))


def test_impossible_restriction_falls_back_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    foreground = np.zeros((SIZE, SIZE), np.uint8)
    foreground[30:33, 30:33] = 1  # far smaller than the mask
    config = PlacementConfig(max_attempts=5)
    sampler = RequestedMaskSampler([bar()], ["bar"], SIZE, foreground=foreground, config=config)
    with caplog.at_level(logging.WARNING):
        draws = [sampler.sample(s) for s in range(4)]
    assert sampler.fallbacks == 4 and sampler.draws == 4
    assert all(d.mask.any() and d.description["fallback"] for d in draws)
    assert "found no placement" in caplog.text
    # the best attempt is used: it touches the foreground
    assert all((d.mask & foreground).any() for d in draws)


def test_each_type_draws_from_its_own_masks() -> None:
    a, b = bar(), np.zeros((SIZE, SIZE), np.uint8)
    b[20:40, 20:40] = 1
    sampler = RequestedMaskSampler([a, b, a], ["a1", "b", "a2"], SIZE, types=[0, 1, 0])
    assert {sampler.sample(s, 1).description["source"] for s in range(20)} == {"b"}
    assert {sampler.sample(s, 0).description["source"] for s in range(40)} == {"a1", "a2"}
    with pytest.raises(ValueError, match=r"type 2"):
        sampler.sample(0, 2)


def test_empty_source_mask_is_named() -> None:
    with pytest.raises(DataError, match=r"gt/007_mask.png is empty"):
        RequestedMaskSampler([bar(), np.zeros((8, 8), np.uint8)], ["a", "gt/007_mask.png"], SIZE)


def test_bad_placement_settings_name_the_option() -> None:
    with pytest.raises(ConfigError, match=r"placement.min_on_foreground"):
        PlacementConfig(min_on_foreground=1.5)
    with pytest.raises(ConfigError, match=r"placement.scale"):
        PlacementConfig(scale=(2.0, 1.0))


def test_real_procedural_masks_keep_their_character() -> None:
    """Crack masks stay thin and long after the warp; draws of hole masks stay compact."""
    cracks = [procedural.render_sample("tile", 64, s, True)[2] for s in range(4)]
    sampler = RequestedMaskSampler(cracks, [f"c{i}" for i in range(4)], 64)
    for seed in range(20):
        m = sampler.sample(seed).mask
        assert cv2.distanceTransform(m, cv2.DIST_L2, 3).max() < 5
        assert m.mean() < 0.25


# ------------------------------------------------------------------------------- foreground


def real_images(root: Path, category: str, size: int = 128) -> list[np.ndarray]:
    return [decode_image(p, size) for p in list_images(root / category / "train" / "good")]


def real_masks(root: Path, category: str, size: int = 128) -> list[np.ndarray]:
    return [decode_mask(p, size) for p in sorted((root / category / "ground_truth").rglob("*.png"))]


def inside(mask: np.ndarray, foreground: np.ndarray) -> float:
    return float((mask & foreground).sum() / mask.sum())


def test_foreground_of_a_bottle_holds_its_defects(mvtec_mini: Path) -> None:
    fg = estimate_foreground(real_images(mvtec_mini, "bottle"), 128)
    assert fg.is_object and fg.mask.shape == (128, 128)
    assert 0.4 < fg.coverage < 0.92
    assert min(inside(m, fg.mask) for m in real_masks(mvtec_mini, "bottle")) >= 0.9
    # the corners are background
    assert not fg.mask[:8, :8].any() and not fg.mask[-8:, -8:].any()


def test_foreground_of_a_transistor_covers_the_component(mvtec_mini: Path) -> None:
    images = real_images(mvtec_mini, "transistor")
    fg = estimate_foreground(images, 128)
    assert fg.is_object and 0.2 < fg.coverage < 0.75
    # the black package (the largest dark region; board holes are small) lies inside
    dark = (np.median([im.mean(axis=2) for im in images], axis=0) < 40).astype(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(dark)
    package = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    assert package.sum() > 800 and inside(package.astype(np.uint8), fg.mask) > 0.97
    # bent leads: most of every defect lies on it (the tips entering the holes are darkest)
    shares = [inside(m, fg.mask) for m in real_masks(mvtec_mini, "transistor")]
    assert min(shares) >= 0.6 and np.mean(shares) >= 0.75


@pytest.mark.parametrize("category", ["tile", "wood", "carpet", "grid"])
def test_textures_have_no_object_the_whole_image_is_foreground(
    mvtec_mini: Path, category: str
) -> None:
    fg = estimate_foreground(real_images(mvtec_mini, category), (96, 128))
    assert not fg.is_object and fg.mask.shape == (96, 128) and fg.mask.all()


def test_foreground_of_procedural_products() -> None:
    for category in ("tile", "wood"):
        images = [procedural.render_sample(category, 64, s, False)[0] for s in range(6)]
        assert not estimate_foreground(images, 64).is_object
        grey = [im.mean(axis=2).astype(np.uint8) for im in images]  # grey inputs work too
        assert not estimate_foreground(grey, 64).is_object
    images = [procedural.render_sample("transistor", 128, s, False)[0] for s in range(8)]
    fg = estimate_foreground(images, 128)
    assert fg.is_object and 0.2 < fg.coverage < 0.75
    cut = [procedural.render_sample("transistor", 128, 50 + s, True)[2] for s in range(6)]
    assert np.mean([inside(m, fg.mask) for m in cut]) >= 0.6
    # a defect-free board corner is background
    assert not fg.mask[:10, :10].any()


def test_foreground_needs_images() -> None:
    with pytest.raises(DataError, match=r"zero defect-free images"):
        estimate_foreground([], 64)


def write_mask(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def test_user_foreground_is_validated_and_resized(tmp_path: Path) -> None:
    good = np.zeros((40, 40), np.uint8)
    good[10:30, 10:30] = 255
    fg = load_foreground(write_mask(tmp_path / "fg.png", good), 20)
    assert fg.mask.shape == (20, 20) and fg.mask.sum() == 100 and fg.source.endswith("fg.png")
    # grey levels are binarised as every user mask is: 8-bit from 128
    grey = good.copy()
    grey[10:30, 8:10] = 127
    grey[10:30, 30:32] = 128
    fg = load_foreground(write_mask(tmp_path / "grey.png", grey), 40)
    assert np.array_equal(fg.mask, (grey >= 128).astype(np.uint8))
    with pytest.raises(DataError, match=r"empty.png is empty"):
        load_foreground(write_mask(tmp_path / "empty.png", np.zeros((8, 8), np.uint8)), 20)
    with pytest.raises(DataError, match=r"noise.png is empty.*largest value 3"):
        load_foreground(write_mask(tmp_path / "noise.png", np.full((8, 8), 3, np.uint8)), 20)
    with pytest.raises(ConfigError, match=r"data.foreground='.*missing.png' does not exist"):
        load_foreground(tmp_path / "missing.png", 20)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"broken.png cannot be read"):
        load_foreground(tmp_path / "broken.png", 20)


def test_saved_foreground_is_a_png_written_atomically(tmp_path: Path) -> None:
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 1
    path = save_foreground(Foreground(mask, True, "estimated"), tmp_path / "run" / "fg.png")
    with Image.open(path) as im:
        assert im.mode == "L" and np.array_equal(np.asarray(im), mask * 255)
    assert sorted(p.name for p in path.parent.iterdir()) == ["fg.png"]  # no temporary left


# ------------------------------------------------------------------------------- generation


def test_random_and_foreground_placements_return_described_masks() -> None:
    foreground = np.zeros((SIZE, SIZE), np.uint8)
    foreground[SIZE // 2 :, :] = 1
    sampler = RequestedMaskSampler([bar()], ["gt/000_mask.png"], SIZE, foreground=foreground)
    placement = Placement("foreground", sampler)
    masks, descriptions = placement.masks(6, SIZE, seed=3)
    assert masks.shape == (6, 1, SIZE, SIZE) and masks.dtype == torch.float32
    assert set(masks.unique().tolist()) == {0.0, 1.0}
    assert len(descriptions) == 6
    for d, m in zip(descriptions, masks, strict=True):
        assert d["placement"] == "foreground" and d["source"] == "gt/000_mask.png"
        assert {"rotate", "scale", "hflip", "centre_x", "centre_y"} <= d.keys()
        assert (m[0].numpy().astype(np.uint8) & foreground).sum() >= 0.9 * m.sum()
    again, _ = placement.masks(6, SIZE, seed=3)
    other, _ = placement.masks(6, SIZE, seed=4)
    assert torch.equal(masks, again) and not torch.equal(masks, other)
    with pytest.raises(ValueError, match=r"needs a sampler with a foreground"):
        Placement("foreground", RequestedMaskSampler([bar()], ["b"], SIZE))


def test_folder_placement_matches_by_stem_or_cycles(tmp_path: Path) -> None:
    for i, name in enumerate(["a_mask.png", "b.png", "c_mask.png"]):
        m = np.zeros((32, 32), np.uint8)
        m[i : i + 5, :5] = 255
        write_mask(tmp_path / "masks" / name, m)
    placement = Placement(str(tmp_path / "masks"))
    masks, descriptions = placement.masks(3, 16, seed=0, stems=["c", "a", "b"])
    assert [Path(d["source"]).name for d in descriptions] == ["c_mask.png", "a_mask.png", "b.png"]
    assert masks.shape == (3, 1, 16, 16) and masks[0, 0, 1, 0] == 1 and masks[1, 0, 0, 0] == 1
    # none of the stems has a mask: cycled in name order
    _, cycled = placement.masks(4, 16, seed=0, stems=["x", "y", "z", "w"])
    names = [Path(d["source"]).name for d in cycled]
    assert names == ["a_mask.png", "b.png", "c_mask.png", "a_mask.png"]
    # some have one, some not: ambiguous, so an error naming the missing ones
    with pytest.raises(DataError, match=r"not for \['zz'\]"):
        placement.masks(2, 16, seed=0, stems=["a", "zz"])


def test_folder_placement_names_the_bad_file(tmp_path: Path) -> None:
    good = np.zeros((8, 8), np.uint8)
    good[2:4, 2:4] = 255
    write_mask(tmp_path / "m" / "ok.png", good)
    soft = cv2.GaussianBlur(good, (3, 3), 1)
    write_mask(tmp_path / "m" / "soft.png", soft)
    placement = Placement(str(tmp_path / "m"))  # soft edges: binarised from 128
    assert np.array_equal(placement.user_masks[tmp_path / "m" / "soft.png"], soft >= 128)
    (tmp_path / "m" / "soft.png").unlink()
    write_mask(tmp_path / "m" / "blank.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match=r"blank.png is empty"):
        Placement(str(tmp_path / "m"))
    with pytest.raises(ConfigError, match=r"neither one of \['random', 'foreground'\]"):
        Placement(str(tmp_path / "nowhere"))
    (tmp_path / "none").mkdir()
    with pytest.raises(ConfigError, match=r"holds no mask images"):
        Placement(str(tmp_path / "none"))


def test_folder_masks_follow_the_source_images_geometry(tmp_path: Path) -> None:
    """A 40x20 (w x h) mask of a 40x20 source: shorter side to 16, centre crop, like the image."""
    wide = np.zeros((20, 40), np.uint8)
    wide[5:15, 15:25] = 255  # a square in the middle
    write_mask(tmp_path / "m" / "img_mask.png", wide)
    placement = Placement(str(tmp_path / "m"))
    masks, _ = placement.masks(1, 16, seed=0, stems=["img"], source_sizes=[(20, 40)])
    m = masks[0, 0].numpy()
    ys, xs = np.nonzero(m)
    # square, centred: not squashed into a 2:1 rectangle as a plain resize would do
    assert np.ptp(ys) == np.ptp(xs) and abs(xs.mean() - 7.5) < 1 and abs(ys.mean() - 7.5) < 1
    with pytest.raises(DataError, match=r"img_mask.png is 40x20 but its source image .* 30x30"):
        placement.masks(1, 16, seed=0, stems=["img"], source_sizes=[(30, 30)])
    edge = np.zeros((20, 40), np.uint8)
    edge[:, :4] = 255  # only in the part the centre crop drops
    write_mask(tmp_path / "e" / "img.png", edge)
    with pytest.raises(DataError, match=r"img.png has its region outside the centre crop"):
        Placement(str(tmp_path / "e")).masks(1, 16, seed=0, stems=["img"])
