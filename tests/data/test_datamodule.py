import cv2
import numpy as np
import pytest
import torch

from defectsynth.data.datamodule import DefectDataModule, UnpairedSampler
from defectsynth.errors import ConfigError, DataError
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


# ------------------------------------------------------------------------------- defect types


def test_one_defect_type_keeps_the_papers_batch_keys(cache_dir):
    batch = next(iter(procedural_dm(cache_dir).train_dataloader()))
    assert set(batch) == {"normal", "defect", "mask", "position"}


def test_several_defect_types_split_per_type_and_label_each_item(cache_dir):
    dm = procedural_dm(cache_dir, defect=["glue_strip", "crack"], batch_size=4)
    assert dm.defect_types == ["glue_strip", "crack"] and dm.defect == "glue_strip+crack"
    # 5 images per type: round(0.8 * 5) = 4 of each train, 1 of each tests
    assert dm.counts() == {"normal_train": 8, "defect_train": 8, "defect_test": 2, "normal_test": 3}
    train = dm.split.defect_train
    assert [s.defect for s in train] == ["glue_strip"] * 4 + ["crack"] * 4
    assert [s.image.name for s in train[:4]] == ["000.png", "001.png", "002.png", "003.png"]
    assert {s.image.parent.name for s in dm.split.defect_test} == {"glue_strip", "crack"}
    seen = set()
    for batch in dm.train_dataloader():
        assert batch["defect_type"].dtype == torch.long and batch["defect_type"].shape == (4,)
        seen |= set(batch["defect_type"].tolist())
    assert seen == {0, 1}
    assert dm.describe()["defect_types"] == ["glue_strip", "crack"]


def test_defect_type_matches_the_image_it_labels(cache_dir):
    dm = procedural_dm(cache_dir, defect=["crack", "glue_strip"])
    types = dm.train_set.defect_types
    masks = dm.train_set.mask
    # widest point of each training mask: glue strips are bands, cracks are lines
    widths = [float(cv2.distanceTransform(m, cv2.DIST_L2, 3).max()) for m in masks]
    crack = [w for w, t in zip(widths, types, strict=True) if t == 0]
    glue = [w for w, t in zip(widths, types, strict=True) if t == 1]
    assert len(crack) == len(glue) == 4 and max(crack) < min(glue)


def test_the_papers_type_alone_keeps_its_cached_dataset(cache_dir):
    single = procedural_dm(cache_dir)
    both = procedural_dm(cache_dir, defect=["crack", "glue_strip"])
    assert single.split.root != both.split.root  # the paper's cache is not rewritten
    assert "glue_strip" not in {p.name for p in (single.split.root / "tile" / "test").iterdir()}
    # one string of a second type is served like the paper's pair, without defect_type
    glue = procedural_dm(cache_dir, defect="glue_strip")
    assert set(next(iter(glue.train_dataloader()))) == {"normal", "defect", "mask", "position"}


def test_unknown_defect_types_list_the_available_ones(cache_dir, tiny_mvtec):
    with pytest.raises(DataError, match=r"Available defects: \['crack', 'glue_strip'\]"):
        procedural_dm(cache_dir, defect=["crack", "stain"])
    dm = DefectDataModule(
        "widget", ["scratch", "dent"], root=str(tiny_mvtec), image_size=8, num_workers=0
    )
    with pytest.raises(
        DataError, match=r"\['dent'\] not found .* Available defects: \['scratch'\]"
    ):
        dm.setup()
    with pytest.raises(ConfigError, match="names a type twice"):
        DefectDataModule("tile", ["crack", "crack"])
    with pytest.raises(ConfigError, match="non-empty list"):
        DefectDataModule("tile", [])
    folders = {"normal": "a", "defect": "b", "mask": "c"}
    with pytest.raises(ConfigError, match="data=folder holds one defect type"):
        DefectDataModule("widget", ["x", "y"], folders=folders).setup()


# ------------------------------------------------------------------------------- requested masks


def test_requested_masks_join_the_batch_drawn_independently(cache_dir):
    dm = procedural_dm(cache_dir, requested_masks=True, batch_size=4)
    batches = list(dm.train_dataloader())
    for batch in batches:
        requested = batch["requested_mask"]
        assert requested.shape == (4, 1, 32, 32) and requested.dtype == torch.float32
        assert set(requested.unique().tolist()) <= {0.0, 1.0}
        assert (requested.flatten(1).sum(1) > 0).all()
    requested = torch.cat([b["requested_mask"] for b in batches])
    real = torch.cat([b["mask"] for b in batches])
    assert not any(torch.equal(r, m) for r, m in zip(requested, real, strict=True))
    # reproducible, whatever the number of workers
    again = procedural_dm(
        cache_dir, requested_masks=True, batch_size=4, num_workers=2, persistent_workers=False
    )
    assert torch.equal(
        requested, torch.cat([b["requested_mask"] for b in again.train_dataloader()])
    )
    assert dm.describe()["requested_masks"]["on_foreground"] is False


def test_requested_masks_follow_the_items_defect_type(cache_dir):
    dm = procedural_dm(cache_dir, defect=["crack", "glue_strip"], requested_masks=True)
    sampler = dm.requested_sampler
    for seed in range(10):
        for t, folder in ((0, "crack"), (1, "glue_strip")):
            assert f"/{folder}/" in sampler.sample(seed, t).description["source"]


def test_requested_masks_on_the_estimated_foreground(cache_dir, tmp_path):
    spec = {**SMOKE_SPEC, "image_size": 96}
    png = tmp_path / "run" / "foreground.png"
    dm = procedural_dm(
        cache_dir,
        category="transistor",
        defect="cut_lead",
        image_size=64,
        procedural_spec=spec,
        requested_masks=True,
        placement={"on_foreground": True, "min_on_foreground": 0.9},
        foreground_png=str(png),
    )
    fg = dm.foreground_mask()
    assert fg.is_object and 0.15 < fg.coverage < 0.8
    masks = [dm.requested_sampler.sample(s).mask for s in range(40)]
    shares = [(m & fg.mask).sum() / m.sum() for m in masks]
    assert np.mean(np.array(shares) >= 0.9) >= 0.9
    dm.train_dataloader()
    assert png.is_file()


def test_a_given_foreground_is_used_and_validated(cache_dir, tmp_path):
    mask = np.zeros((40, 40), np.uint8)
    mask[:, :20] = 255
    write_png(tmp_path / "fg.png", mask)
    dm = procedural_dm(
        cache_dir,
        requested_masks=True,
        placement={"on_foreground": True},
        foreground=str(tmp_path / "fg.png"),
    )
    assert dm.foreground_mask().mask[:, :16].all() and not dm.foreground_mask().mask[:, 16:].any()
    with pytest.raises(ConfigError, match=r"data.placement=\{'rotation': 5\} cannot be used"):
        DefectDataModule("tile", "crack", placement={"rotation": 5})
    with pytest.raises(ConfigError, match=r"scale a pair"):
        DefectDataModule("tile", "crack", placement={"scale": [0.5, 1.0, 2.0]})
    with pytest.raises(ConfigError, match=r"placement.rotate=270"):
        DefectDataModule("tile", "crack", placement={"rotate": 270})


def test_generation_placement_from_the_datamodule(cache_dir, tmp_path):
    dm = procedural_dm(cache_dir)
    masks, descriptions = dm.placement("random").masks(5, 32, seed=1)
    assert masks.shape == (5, 1, 32, 32) and len(descriptions) == 5
    assert all("ground_truth/crack" in d["source"] for d in descriptions)
    assert dm.requested_sampler is None  # generation does not switch training draws on


def test_defect_train_limit_keeps_the_first_training_defects_and_the_same_test_set(tiny_mvtec):
    def dm(**kwargs) -> DefectDataModule:
        module = DefectDataModule(
            category="widget",
            defect="scratch",
            root=str(tiny_mvtec),
            image_size=32,
            num_workers=0,
            **kwargs,
        )
        module.setup()
        return module

    full, small = dm(), dm(defect_train_limit=3)
    assert full.split is not None and small.split is not None
    # 10 defects: 8 train the GAN; the limit keeps the first 3 by name and drops the other 5
    assert [s.image.name for s in small.split.defect_train] == ["000.png", "001.png", "002.png"]
    assert small.split.defect_test == full.split.defect_test
    assert len(small.train_set.defect) == 3  # what training batches draw from
    assert small.hparams["defect_train_limit"] == 3  # recorded in checkpoints
    assert dm(defect_train_limit=20).split.defect_train == full.split.defect_train
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="defect_train_limit"):
            dm(defect_train_limit=bad)
