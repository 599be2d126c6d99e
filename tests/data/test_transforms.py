from collections import Counter

import numpy as np
import pytest
import torch

from defectsynth.data.transforms import AugmentConfig, EvalTransform, TrainAugment

NO_ELASTIC = {"elastic_p": 0.0}


def marked_pair(size: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A defect image that is white exactly where its (asymmetric) mask is set."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 100, (size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), np.uint8)
    mask[3:12, 5:30] = 1
    mask[12:30, 5:9] = 1  # an "L": any flip or crop moves it distinguishably
    image[mask > 0] = 255
    return image, mask


def white(image: torch.Tensor) -> torch.Tensor:
    return (image == 1.0).all(dim=0)


@pytest.mark.parametrize("seed", range(8))
def test_image_and_mask_receive_the_same_geometry(seed):
    image, mask = marked_pair()
    augment = TrainAugment(32, AugmentConfig(**NO_ELASTIC))
    out = augment(image, image, mask, seed)
    assert out["defect"].shape == (3, 32, 32) and out["mask"].shape == (1, 32, 32)
    assert torch.equal(white(out["defect"]), out["mask"][0].bool())


def test_a_forced_flip_moves_image_and_mask_together():
    image, mask = marked_pair()
    config = AugmentConfig(hflip_p=1.0, vflip_p=0.0, elastic_p=0.0)
    out = TrainAugment(40, config)(image, image, mask, seed=3)  # crop = full image
    expected = torch.from_numpy(mask[:, ::-1].copy()).bool()
    assert torch.equal(out["mask"][0].bool(), expected)
    assert torch.equal(white(out["defect"]), expected)


def test_elastic_transform_keeps_image_and_mask_aligned():
    image, mask = marked_pair(64)
    config = AugmentConfig(elastic_p=1.0, elastic_alpha=30.0, elastic_sigma=4.0)
    out = TrainAugment(64, config)(image, image, mask, seed=1)
    bright = (out["defect"] > 0.9).all(dim=0)
    m = out["mask"][0].bool()
    iou = (bright & m).sum() / (bright | m).sum()
    assert iou > 0.85
    assert not torch.equal(m, torch.from_numpy(mask).bool())  # the deformation did something


def test_outputs_are_normalised_and_reproducible_by_seed():
    image, mask = marked_pair()
    augment = TrainAugment(32)
    a, b = augment(image, image, mask, 11), augment(image, image, mask, 11)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["defect"].min() >= -1 and a["defect"].max() <= 1
    assert set(a["mask"].unique().tolist()) <= {0.0, 1.0}
    c = augment(image, image, mask, 12345)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_normal_image_gets_an_independent_draw_unless_shared():
    image, mask = marked_pair()
    seeds = range(6)
    independent = TrainAugment(24, AugmentConfig(**NO_ELASTIC))
    shared = TrainAugment(24, AugmentConfig(same_for_normal=True, **NO_ELASTIC))
    outs = [independent(image, image, mask, s) for s in seeds]
    assert any(not torch.equal(o["normal"], o["defect"]) for o in outs)
    for s in seeds:
        o = shared(image, image, mask, s)
        assert torch.equal(o["normal"], o["defect"])


def test_eval_transform_centre_crops_and_normalises():
    image = np.zeros((32, 48, 3), np.uint8)
    image[:, 8:40] = 255
    out = EvalTransform(32)(image)
    assert out["image"].shape == (3, 32, 32) and (out["image"] == 1).all()


# ---------------------------------------------------------------- the distribution of the draws
STRONG_ELASTIC = {"elastic_alpha": 30.0, "elastic_sigma": 4.0}
N_DRAWS = 400


def coordinate_image(size: int = 48) -> np.ndarray:
    """Red encodes the row, green the column: a crop and flips stay readable in the output."""
    rows, cols = np.mgrid[0:size, 0:size]
    return np.stack([rows * 5, cols * 5, np.zeros_like(rows)], axis=-1).astype(np.uint8)


def read_draw(image: torch.Tensor) -> dict[str, int | bool]:
    """Which flips, crop offset and (strong) elastic warp produced ``image`` from a coordinate
    image: without the warp every row has one red value and every column one green value."""
    pixels = ((image + 1) * 127.5).round().long()
    red, green = pixels[0], pixels[1]
    return {
        "hflip": bool(green[0, 0] > green[0, -1]),
        "vflip": bool(red[0, 0] > red[-1, 0]),
        "top": int(red.min()) // 5,
        "left": int(green.min()) // 5,
        "elastic": not (bool((red == red[:, :1]).all()) and bool((green == green[:1]).all())),
    }


def draws(config: AugmentConfig, key: str = "defect") -> list[dict[str, int | bool]]:
    image, mask = coordinate_image(), np.zeros((48, 48), np.uint8)
    augment = TrainAugment(32, config)
    return [read_draw(augment(image, image, mask, seed)[key]) for seed in range(N_DRAWS)]


def flip_state(draw: dict[str, int | bool]) -> tuple[bool, bool]:
    return bool(draw["hflip"]), bool(draw["vflip"])


def test_all_four_flip_states_occur_at_equal_rates():
    counts = Counter(flip_state(d) for d in draws(AugmentConfig(**NO_ELASTIC)))
    assert set(counts) == {(False, False), (False, True), (True, False), (True, True)}
    # 400 draws at p = 1/4: the standard deviation of a count is ≈ 8.7, so ±35 is 4σ
    assert all(abs(n - N_DRAWS / 4) < 35 for n in counts.values()), counts


def test_elastic_is_drawn_independently_of_the_flips():
    sample = draws(AugmentConfig(elastic_p=0.5, **STRONG_ELASTIC))
    counts = Counter((*flip_state(d), d["elastic"]) for d in sample)
    assert len(counts) == 8, counts  # every (hflip, vflip, elastic) combination happens
    assert all(abs(n - N_DRAWS / 8) < 28 for n in counts.values()), counts


def test_the_crop_offset_does_not_follow_the_flips():
    sample = draws(AugmentConfig(**NO_ELASTIC))
    offsets = {(d["top"], d["left"]) for d in sample}
    assert len(offsets) > 100  # 17 × 17 possible offsets
    by_state: dict[tuple[bool, bool], list[int]] = {}
    for d in sample:
        by_state.setdefault(flip_state(d), []).append(int(d["top"]))
    for tops in by_state.values():
        assert len(set(tops)) >= 10  # each flip state sees many offsets
        assert abs(np.mean(tops) - 8) < 2.5  # and centred ones: uniform over 0..16
    tops = np.array([d["top"] for d in sample], float)
    lefts = np.array([d["left"] for d in sample], float)
    hflips = np.array([d["hflip"] for d in sample], float)
    assert abs(np.corrcoef(tops, lefts)[0, 1]) < 0.2
    assert abs(np.corrcoef(lefts, hflips)[0, 1]) < 0.2


def test_the_normal_image_draw_is_independent_of_the_defect_draw():
    image, mask = coordinate_image(), np.zeros((48, 48), np.uint8)
    augment = TrainAugment(32, AugmentConfig(**NO_ELASTIC))
    agree = 0
    for seed in range(N_DRAWS):
        out = augment(image, image, mask, seed)
        agree += flip_state(read_draw(out["normal"])) == flip_state(read_draw(out["defect"]))
    assert abs(agree - N_DRAWS / 4) < 35  # chance agreement of two independent flip states


def test_one_seed_gives_one_sample_across_instances():
    image, mask = marked_pair()
    a = TrainAugment(32)(image, image, mask, seed=7)
    b = TrainAugment(32)(image, image, mask, seed=7)
    assert all(torch.equal(a[k], b[k]) for k in a)
