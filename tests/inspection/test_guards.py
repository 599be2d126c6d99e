"""Protocol guards of the studies: the generator's own data split, and results cached in a run
folder reused only with the settings that produced them."""

from __future__ import annotations

import json
import shutil

import pytest

from defectsynth.errors import ConfigError, DataError
from defectsynth.inspection.sources import Input, product_of
from defectsynth.inspection.study import inspection, prepare, resolve_products
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


def test_a_resumed_split_folder_refuses_sets_made_with_other_settings(
    tiny_ckpt, cache_dir, tmp_path
):
    product = product_of(Input("ckpt", tiny_ckpt), {}, str(cache_dir))
    folder = tmp_path / "widget-scratch" / "split0"
    paper = study_cfg("inspection", tmp_path, cache_dir, "protocol=paper")
    made = prepare(paper, product, 0, folder)
    clean = study_cfg("inspection", tmp_path, cache_dir, "protocol=clean")
    with pytest.raises(
        ConfigError,
        match=r"splits\.json was made with other settings .*"
        r"protocol: 'paper' there, 'clean' now",
    ):
        prepare(clean, product, 0, folder)
    # the refusal came first: the cached split still says what its sets were made with
    assert json.loads((folder / "splits.json").read_text())["protocol"] == "paper"
    again = prepare(paper, product, 0, folder)  # the same settings: reused as they are
    assert [s.sources for s in again.sets] == [s.sources for s in made.sets]
    # same split, other synthesis: the generator's set is stale
    more = study_cfg("inspection", tmp_path, cache_dir, "protocol=paper", "n_per_image=2")
    with pytest.raises(ConfigError, match=r"proposed_approach was made .*n_per_image: 1 there, 2"):
        prepare(more, product, 0, folder)
    # and cut-paste keeps the edge opacity it was pasted with
    edge = study_cfg("inspection", tmp_path, cache_dir, "protocol=paper", "cut_paste.edge_alpha=1")
    with pytest.raises(ConfigError, match=r"cut_paste was made .*cut_paste\.edge_alpha: 0\.75"):
        prepare(edge, product, 0, folder)


def test_a_finished_run_is_reused_only_with_its_settings(tiny_ckpt, cache_dir, tmp_path):
    options = (f"ckpt={tiny_ckpt}", "cut_paste.enabled=false")
    inspection(study_cfg("inspection", tmp_path, cache_dir, *options))
    metrics = tmp_path / "widget-scratch" / "runs" / "resnet18-proposed_approach-seed0"
    metrics = metrics / "metrics.json"
    written = metrics.stat().st_mtime_ns
    # how it runs is not what it computes: a progress bar reuses the run
    inspection(study_cfg("inspection", tmp_path, cache_dir, *options, "train.progress_bar=true"))
    assert metrics.stat().st_mtime_ns == written
    longer = study_cfg("inspection", tmp_path, cache_dir, *options, "train.epochs=3")
    with pytest.raises(ConfigError, match=r"metrics\.json was made .*train\.epochs: 2 there, 3"):
        inspection(longer)
    assert metrics.stat().st_mtime_ns == written
    # a record of an earlier version, without its settings, cannot be checked: refused too
    record = json.loads(metrics.read_text())
    del record["settings"]
    metrics.write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="without the settings that produced it"):
        inspection(study_cfg("inspection", tmp_path, cache_dir, *options))
