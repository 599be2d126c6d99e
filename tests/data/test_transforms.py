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
