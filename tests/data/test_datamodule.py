import numpy as np
import pytest
import torch

from defectsynth.data.datamodule import DefectDataModule, UnpairedSampler
from defectsynth.errors import DataError
from tests.helpers import make_mvtec, write_png

SMOKE_SPEC = {"image_size": 64, "n_train_good": 8, "n_test_good": 3, "n_defect": 5}


def procedural_dm(cache_dir, **kwargs) -> DefectDataModule:
    options = {
        "category": "tile",
        "defect": "crack",
        "image_size": 32,
        "batch_size": 2,
        "num_workers": 0,
        "procedural_spec": SMOKE_SPEC,
        "cache_dir": str(cache_dir),
    }
    dm = DefectDataModule(**{**options, **kwargs})
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_sampler_is_reproducible_per_epoch_and_covers_the_normal_side():
    sampler = UnpairedSampler(n_normal=6, n_defect=4, seed=3)
    sampler.set_epoch(0)
    first = list(sampler)
    assert first == list(sampler) and len(first) == 6
    assert sorted(n for n, _, _, _ in first) == list(range(6))
    assert all(0 <= d < 4 for _, d, _, _ in first)
    assert [position for *_, position in first] == list(range(6))
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_epoch_length_is_the_larger_domain():
    sampler = UnpairedSampler(n_normal=3, n_defect=7)
    keys = list(sampler)
    assert len(keys) == 7 and {n for n, _, _, _ in keys} == {0, 1, 2}


def test_procedural_batches_follow_the_contract(cache_dir):
    dm = procedural_dm(cache_dir)
    assert dm.counts() == {"normal_train": 8, "defect_train": 4, "defect_test": 1, "normal_test": 3}
    loader = dm.train_dataloader()
    assert len(loader) == 4  # ceil(max(8, 4) / 2)
    batch = next(iter(loader))
    assert batch["normal"].shape == batch["defect"].shape == (2, 3, 32, 32)
    assert batch["mask"].shape == (2, 1, 32, 32) and batch["mask"].dtype == torch.float32
    assert batch["normal"].min() >= -1 and batch["defect"].max() <= 1
    assert set(batch["mask"].unique().tolist()) <= {0.0, 1.0}


def test_batches_do_not_depend_on_the_number_of_workers(cache_dir):
    def epoch(workers: int) -> list[torch.Tensor]:
        dm = procedural_dm(cache_dir, num_workers=workers, persistent_workers=False)
        return [b["defect"] for b in dm.train_dataloader()]

    assert all(torch.equal(a, b) for a, b in zip(epoch(0), epoch(2), strict=True))


def test_eval_sets_are_unaugmented_at_image_size(cache_dir):
    dm = procedural_dm(cache_dir)
    item = dm.eval_dataset("defect_train")[0]
    assert item["image"].shape == (3, 32, 32) and item["mask"].shape == (1, 32, 32)
    assert torch.equal(
        dm.eval_dataset("normal_test")[1]["image"], dm.eval_dataset("normal_test")[1]["image"]
    )
    assert dm.preview_batch(2).shape == (2, 3, 32, 32)


def test_procedural_data_only_has_its_three_products(cache_dir):
    with pytest.raises(DataError, match=r"procedural data.*\['tile', 'transistor', 'wood'\]"):
        procedural_dm(cache_dir, category="bottle", defect="broken_large")


def test_mask_of_the_wrong_size_is_reported_with_both_files(tmp_path):
    root = make_mvtec(tmp_path, size=16)
    write_png(
        root / "widget" / "ground_truth" / "scratch" / "002_mask.png", np.zeros((8, 8), np.uint8)
    )
    dm = DefectDataModule("widget", "scratch", root=str(root), image_size=8, num_workers=0)
    with pytest.raises(DataError, match=r"002_mask.png is 8x8 but its image .*002.png is 16x16"):
        dm.setup("fit")


def test_real_samples_including_grayscale(mvtec_mini, tmp_path):
    for category, defect in [("tile", "crack"), ("grid", "bent")]:
        dm = DefectDataModule(
            category,
            defect,
            root=str(mvtec_mini),
            image_size=64,
            batch_size=2,
            num_workers=0,
            cache_dir=str(tmp_path),
        )
        dm.setup("fit")
        batch = next(iter(dm.train_dataloader()))
        assert batch["normal"].shape == (2, 3, 64, 64) and batch["mask"].sum() >= 0
        assert dm.load_size == 71
        assert dm.counts()["defect_train"] == 3


def test_ddp_ranks_get_disjoint_equal_shards_of_one_epoch_plan():
    full = [key[:3] for key in UnpairedSampler(n_normal=7, n_defect=3, seed=5)]
    shards = [
        [key[:3] for key in UnpairedSampler(7, 3, seed=5, rank=r, world_size=3)] for r in range(3)
    ]
    assert [len(s) for s in shards] == [3, 3, 3]  # 7 items padded to 9
    interleaved = [shards[r][i] for i in range(3) for r in range(3)]
    assert interleaved[:7] == full and interleaved[7:] == full[:2]
    with pytest.raises(ValueError, match="rank 3"):
        UnpairedSampler(7, 3, rank=3, world_size=3)


def test_sampler_resumes_mid_epoch_once():
    sampler = UnpairedSampler(n_normal=6, n_defect=2, seed=1)
    sampler.set_epoch(3)
    full = list(sampler)
    sampler.resume_from(epoch=3, position=4)
    assert list(sampler) == full[4:]
    assert list(sampler) == full  # one-shot: the next pass is complete again
    sampler.resume_from(epoch=2, position=4)  # a finished epoch: nothing to skip
    assert list(sampler) == full


def test_datamodule_state_records_the_next_unseen_position(cache_dir):
    dm = procedural_dm(cache_dir)

    class FakeTrainer:
        training, current_epoch, global_rank, world_size = True, 5, 0, 1

    dm.trainer = FakeTrainer()
    loader = dm.train_dataloader()
    dm.sampler.set_epoch(5)
    batches = iter(loader)
    for _ in range(2):
        dm.on_before_batch_transfer(next(batches), 0)
    state = dm.state_dict()
    assert state == {"epoch": 5, "position": 4}  # two batches of 2 consumed
    fresh = procedural_dm(cache_dir)
    fresh.trainer = FakeTrainer()
    fresh.load_state_dict(state)
    fresh_loader = fresh.train_dataloader()
    fresh.sampler.set_epoch(5)
    remaining = [b["position"].tolist() for b in fresh_loader]
    assert remaining == [[4, 5], [6, 7]]


def folder_product(tmp_path, suffix: str = "_label") -> dict[str, str]:
    """A product in plain folders with camera-style names and a custom mask suffix."""
    rng = np.random.default_rng(0)
    ok, nok, masks = tmp_path / "ok", tmp_path / "nok", tmp_path / "labels"
    for i in range(10):
        write_png(ok / f"cam1_{i:04d}.png", rng.integers(0, 255, (20, 20, 3), dtype=np.uint8))
    for i in range(5):
        write_png(nok / f"cam1_fail_{i}.png", rng.integers(0, 255, (20, 20, 3), dtype=np.uint8))
        mask = np.zeros((20, 20), np.uint8)
        mask[5:9, 5:9] = 255
        write_png(masks / f"cam1_fail_{i}{suffix}.png", mask)
    return {"normal": str(ok), "defect": str(nok), "mask": str(masks)}


def test_folder_layout_matches_masks_by_stem_and_suffix(tmp_path):
    folders = folder_product(tmp_path)
    dm = DefectDataModule(
        "widget",
        "scratch",
        folders=folders,
        mask_suffix="_label",
        image_size=16,
        batch_size=2,
        num_workers=0,
    )
    dm.setup()
    assert dm.counts() == {
        "normal_train": 9,
        "defect_train": 4,
        "defect_test": 1,
        "normal_test": 1,
    }  # the last 10 % of ok/ is held out
    assert dm.split.defect_train[0].mask.name == "cam1_fail_0_label.png"
    batch = next(iter(dm.train_dataloader()))
    assert batch["mask"].sum() > 0


def test_folder_layout_with_the_wrong_suffix_names_the_expected_mask(tmp_path):
    folders = folder_product(tmp_path)
    dm = DefectDataModule("widget", "scratch", folders=folders, image_size=16, num_workers=0)
    with pytest.raises(DataError, match=r"cam1_fail_0_mask\.png \(data\.mask_suffix='_mask'\)"):
        dm.setup()
