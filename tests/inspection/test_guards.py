"""Protocol guards of the studies: the generator's own data split, and results cached in a run
folder reused only with the settings that produced them."""

from __future__ import annotations

import shutil

import pytest

from defectsynth.errors import DataError
from defectsynth.inspection.study import resolve_products
from tests.inspection.test_scripts import study_cfg


def test_a_data_override_that_moves_the_generators_training_defects_is_refused(
    tiny_ckpt, cache_dir, tmp_path
):
    # the generator trained on 8 of the 10 defects (train_fraction 0.8); at 0.5 the study's
    # clean test set would be 5 defects, 3 of them its training images
    override = "+data.train_fraction=0.5"
    cfg = study_cfg("inspection", tmp_path, cache_dir, f"ckpt={tiny_ckpt}", override)
    with pytest.raises(DataError, match=r"data\.train_fraction: 0\.8 → 0\.5.*protocol=clean"):
        resolve_products(cfg)
    cfg = study_cfg(
        "inspection", tmp_path, cache_dir, f"ckpt={tiny_ckpt}", override, "protocol=paper"
    )
    (product,) = resolve_products(cfg)  # the authors' protocol tests on every defect anyway
    assert product.datamodule.hparams["train_fraction"] == 0.5


def test_moved_data_is_accepted_but_a_changed_folder_is_not(
    tiny_ckpt, study_root, cache_dir, tmp_path
):
    moved = tmp_path / "moved"
    shutil.copytree(study_root, moved)
    cfg = study_cfg("inspection", tmp_path, cache_dir, f"ckpt={tiny_ckpt}", f"data.root={moved}")
    (product,) = resolve_products(cfg)
    assert product.gan_split.root == moved and len(product.gan_split.defect_test) == 2
    # without its last defect, the name-ordered split of 9 puts 007 (a training image of the
    # generator) into the test set
    changed = tmp_path / "changed"
    shutil.copytree(study_root, changed)
    (changed / "widget" / "test" / "scratch" / "009.png").unlink()
    cfg = study_cfg("inspection", tmp_path, cache_dir, f"ckpt={tiny_ckpt}", f"data.root={changed}")
    with pytest.raises(DataError, match=r"1 real test defect.*007\.png"):
        resolve_products(cfg)
