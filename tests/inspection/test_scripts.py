"""src/inspection.py and src/segmentation.py as a user runs them (tiny data, smoke scale), and
the input checks of the study in-process."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from torchmetrics.classification import BinaryAUROC

from defectsynth.errors import ConfigError, DataError
from defectsynth.inspection.data import read_png, real_image
from defectsynth.inspection.sources import Input, product_of
from defectsynth.inspection.study import inspection, prepare, resolve_products
from tests.helpers import REPO, run_script
from tests.inspection.conftest import write_checkpoint


def study_cfg(config: str, out: Path, cache_dir: Path, *overrides: str):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config, overrides=["scale=smoke", "logger=none", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        cfg.paths.cache_dir = str(cache_dir)
    return cfg


def test_inspection_script_writes_table4(tiny_ckpt, cache_dir, tmp_path):
    run = tmp_path / "run"
    proc = run_script(
        "inspection.py",
        f"ckpt={tiny_ckpt}",
        "scale=smoke",
        "logger=none",
        f"hydra.run.dir={run}",
        cache_dir=cache_dir,
    )
    table = (run / "table4.md").read_text()
    assert "Protocol **clean**" in table and "Protocol **clean**" in proc.stdout
    for row in (
        "| Always defect-free | – | Widget (scratch) | 50.00 |",
        "| ResNet-18 | Cut-paste |",
    ):
        assert row in table
    assert "| ResNet-18 | Proposed approach | Widget (scratch) |" in table
    with open(run / "table4.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    synthetic_only = ["–", "Proposed approach", "Cut-paste"]
    # the real-defect rows (README "Real vs synthetic") follow Table 4's own
    real = ["Real defects (reference)", "Real + Proposed approach ×1", "Real + Cut-paste ×1"]
    assert [r["Training defects"] for r in rows] == [*synthetic_only, *real]
    assert all(r["protocol"] == "clean" for r in rows)
    assert "## Real vs synthetic" in table and "## Real vs synthetic" in proc.stdout
    assert (run / "table4_real.csv").is_file()
    assert (run / "widget-scratch_real_vs_synthetic.png").is_file()
    assert {int(r["tn"]) + int(r["fp"]) + int(r["fn"]) + int(r["tp"]) for r in rows} == {4}
    split = json.loads((run / "widget-scratch" / "split0" / "splits.json").read_text())
    assert split["counts"]["defect_test"] == 2 and split["protocol"] == "clean"
    record = json.loads(
        (run / "widget-scratch" / "runs" / "resnet18-cut_paste-seed0" / "metrics.json").read_text()
    )
    assert record["counts"]["test"] == {"defect_free": 2, "defective": 2}
    assert record["image_size"] == 32 and len(record["test_scores"]) == 4
    # the pooled table: one seed, so its confusion matrices are the per-seed ones, with counts
    assert "## Pooled over seeds" in table
    assert "| ResNet-18 | Cut-paste | Widget (scratch) | 1 | 2 / 2 | 2 / 2 |" in table
    with open(run / "table4_pooled.csv", newline="") as fh:
        pooled = list(csv.DictReader(fh))
    assert [r["Training defects"] for r in pooled] == [*synthetic_only, *real]
    for per_seed, row in zip(rows, pooled, strict=True):
        assert [row[k] for k in ("tn", "fp", "fn", "tp")] == [
            per_seed[k] for k in ("tn", "fp", "fn", "tp")
        ]
        assert float(row["accuracy_low"]) <= float(row["accuracy"]) <= float(row["accuracy_high"])
    names = record["test_images"]
    assert len(names) == 4 and names[2:] == split["defect_test"]


def test_segmentation_script_writes_its_table(tiny_ckpt, cache_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")  # the default logger, as a user runs it
    run = tmp_path / "run"
    run_script(
        "segmentation.py",
        f"ckpt={tiny_ckpt}",
        "scale=smoke",
        "protocol=paper",
        f"hydra.run.dir={run}",
        cache_dir=cache_dir,
    )
    table = (run / "segmentation.md").read_text()
    assert "Protocol **paper**" in table
    assert "| U-Net | Proposed approach | Widget (scratch) |" in table
    assert "| U-Net | Cut-paste | Widget (scratch) |" in table
    record = json.loads(
        (
            run / "widget-scratch" / "runs" / "unet-proposed_approach-seed0" / "metrics.json"
        ).read_text()
    )
    assert record["counts"]["test"] == {"defect_free": 2, "defective": 10}  # paper: all defects
    assert 0.0 <= record["metrics"]["pixel_auroc"] <= 1.0
    states = np.load(
        run / "widget-scratch" / "runs" / "unet-proposed_approach-seed0" / record["pixel_states"]
    )
    assert states["hits"].shape == (12, 2, 2) and states["curve"].shape == (12, 201, 2, 2)
    assert states["hits"].sum() == 12 * 32 * 32  # every pixel of every test image, once
    assert "## Pooled over seeds" in table and "Pixel confusion" in table
    with open(run / "segmentation_pooled.csv", newline="") as fh:
        (proposed, _) = list(csv.DictReader(fh))
    assert (proposed["n_defect_free"], proposed["n_defective"]) == ("2", "10")
    # one seed: the pooled IoU is the run's (the same pixels at the same threshold)
    assert float(proposed["iou"]) == pytest.approx(record["metrics"]["iou"])
    assert list((run / "wandb").glob("offline-run-*"))  # the table's W&B run


def test_pretrained_without_weights_stops_with_the_file_name(cache_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    proc = run_script(
        "inspection.py",
        "classifier=densenet121",
        "classifier.pretrained=true",
        "logger=none",
        f"hydra.run.dir={tmp_path / 'run'}",
        cache_dir=cache_dir,
        check=False,
    )
    assert proc.returncode == 2
    assert "densenet121-a639ec97.pth" in proc.stderr
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in proc.stderr


def test_protocols_choose_sources_and_test_sets(tiny_ckpt, cache_dir, tmp_path):
    for protocol, n_test_defects in (("clean", 2), ("paper", 10)):
        cfg = study_cfg("inspection", tmp_path / protocol, cache_dir, f"protocol={protocol}")
        product = product_of(Input("ckpt", tiny_ckpt), {}, str(cache_dir))
        data = prepare(cfg, product, 0, tmp_path / protocol)
        assert len(data.split.defect_test) == n_test_defects
        generated, pasted = data.sets
        assert generated.title == "Proposed approach" and pasted.title == "Cut-paste"
        assert generated.sources == pasted.sources  # the same defect-free images
        assert set(generated.sources) == {str(p) for p in data.split.synthesis_sources}
        if protocol == "clean":
            assert not set(generated.sources) & {str(p) for p in data.split.normal_test}


def test_samples_made_from_test_images_fail_under_clean(tiny_ckpt, cache_dir, tmp_path):
    # a generate.py-style folder made from every test/good image (what the paper protocol
    # does); split.seed=2 puts two of them in the classifier's test pool
    paper_cfg = study_cfg("inspection", tmp_path / "paper", cache_dir, "protocol=paper")
    product = product_of(Input("ckpt", tiny_ckpt), {}, str(cache_dir))
    made = prepare(paper_cfg, product, 2, tmp_path / "paper").sets[0]
    samples = tmp_path / "samples"
    shutil.copytree(made.folder, samples)
    cfg = study_cfg("inspection", tmp_path / "run", cache_dir, f"samples={samples}", "split.seed=2")
    with pytest.raises(DataError, match="2 source image"):
        inspection(cfg)
    # the same folder is accepted under the authors' protocol (checked up to the split)
    cfg = study_cfg("inspection", tmp_path / "p", cache_dir, f"samples={samples}", "protocol=paper")
    product = product_of(Input("samples", samples), {}, str(cache_dir))
    assert prepare(cfg, product, 2, tmp_path / "p").sets[0].folder == samples


def test_input_errors_are_clear(cache_dir, tmp_path, tiny_ckpt):
    cfg = study_cfg("inspection", tmp_path, cache_dir, f"ckpt={tmp_path / 'missing.ckpt'}")
    with pytest.raises(ConfigError, match="does not exist"):
        inspection(cfg)
    cfg = study_cfg("inspection", tmp_path, cache_dir, f"ckpt={tiny_ckpt}", f"samples={tmp_path}")
    with pytest.raises(ConfigError, match="not both"):
        inspection(cfg)
    cfg = study_cfg("inspection", tmp_path, cache_dir, "product=wood")
    with pytest.raises(ConfigError, match=r"products=\[wood\]"):
        inspection(cfg)
    cfg = study_cfg("inspection", tmp_path, cache_dir, f"ckpt={tiny_ckpt}", "backbones=[vgg]")
    with pytest.raises(ConfigError, match="vgg"):
        inspection(cfg)
    for option in ("pooled.level=1.5", "pooled.bins=1", "pooled.bootstrap=-1"):
        cfg = study_cfg("inspection", tmp_path, cache_dir, f"ckpt={tiny_ckpt}", option)
        with pytest.raises(ConfigError, match=option.split("=")[0].replace(".", r"\.")):
            inspection(cfg)


@pytest.mark.parametrize(("model", "title"), [("dcgan4", "DCGAN (4-channel)"), ("cut", "CUT")])
def test_baselines_add_training_sets(tiny_ckpt, study_root, cache_dir, tmp_path, model, title):
    baseline = write_checkpoint(tmp_path / f"{model}.ckpt", study_root, cache_dir, model=model)
    cfg = study_cfg(
        "segmentation", tmp_path, cache_dir, f"ckpt={tiny_ckpt}", f"baselines=[{baseline}]"
    )
    (product,) = resolve_products(cfg)
    data = prepare(cfg, product, 0, tmp_path / "study")
    assert [s.title for s in data.sets] == ["Proposed approach", "Cut-paste", title]
    extra = data.sets[2]
    assert len(extra.images) == len(data.sets[0].images)  # as many items as the generator's
    # DCGAN samples image ‖ mask from latent codes (no source); CUT translates without a mask
    assert (extra.masks is not None) == (model == "dcgan4")
    assert set(extra.sources) == ({""} if model == "dcgan4" else set(data.sets[0].sources))


def test_baseline_trained_on_other_data_is_refused_under_clean(
    tiny_ckpt, study_root, cache_dir, tmp_path
):
    path = write_checkpoint(tmp_path / "other.ckpt", study_root, cache_dir, model="cyclegan4")
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["datamodule_hyper_parameters"]["train_fraction"] = 0.5  # other training defects
    torch.save(checkpoint, path)
    baselines = f"baselines=[{path}]"
    cfg = study_cfg("segmentation", tmp_path, cache_dir, f"ckpt={tiny_ckpt}", baselines)
    with pytest.raises(DataError, match="train_fraction differ"):
        resolve_products(cfg)
    cfg = study_cfg(
        "segmentation", tmp_path, cache_dir, f"ckpt={tiny_ckpt}", baselines, "protocol=paper"
    )
    (product,) = resolve_products(cfg)
    assert [title for _, title in product.baselines] == ["CycleGAN (4-channel)"]


def test_composite_keeps_the_source_outside_the_soft_mask(tiny_ckpt, cache_dir, tmp_path):
    cfg = study_cfg("inspection", tmp_path, cache_dir, f"ckpt={tiny_ckpt}", "composite=true")
    (product,) = resolve_products(cfg)
    generated, composited, _ = prepare(cfg, product, 0, tmp_path / "study").sets
    assert composited.title == "Proposed approach (mask-composited)"
    assert composited.sources == generated.sources
    for index in range(len(generated.images)):
        soft = read_png(folder_of(composited) / f"{index:03d}_soft.png", grayscale=True) / 255
        source = real_image(product.datamodule.cache, Path(composited.sources[index]), 32)
        alpha = soft[..., None]
        expected = source * (1 - alpha) + generated.images[index] * alpha
        assert np.abs(composited.images[index] - expected).max() <= 0.5 + 1e-6  # rounding
        assert np.array_equal(composited.masks[index], generated.masks[index])


def folder_of(made) -> Path:
    return made.folder / "soft_mask" / "widget" / "scratch_synthetic"


def test_two_seeds_are_pooled_into_one_confusion_matrix(tiny_ckpt, cache_dir, tmp_path):
    cfg = study_cfg(
        "inspection",
        tmp_path,
        cache_dir,
        f"ckpt={tiny_ckpt}",
        "cut_paste.enabled=false",
        "seeds=[0,1]",
    )
    inspection(cfg)
    with open(tmp_path / "table4.csv", newline="") as fh:
        per_seed = {r["Training defects"]: r for r in csv.DictReader(fh)}
    with open(tmp_path / "table4_pooled.csv", newline="") as fh:
        pooled = {r["Training defects"]: r for r in csv.DictReader(fh)}
    runs = tmp_path / "widget-scratch" / "runs"
    records = [
        json.loads((runs / f"resnet18-proposed_approach-seed{k}" / "metrics.json").read_text())
        for k in (0, 1)
    ]
    row = pooled["Proposed approach"]
    # one split: both seeds test the same 2 + 2 images, so 4 + 4 predictions of 4 images
    assert (row["n_runs"], row["n_defect_free"], row["n_defective"]) == ("2", "4", "4")
    assert (row["n_images_defect_free"], row["n_images_defective"]) == ("2", "2")
    assert records[0]["test_images"] == records[1]["test_images"]
    summed = np.sum([r["metrics"]["confusion_matrix"] for r in records], axis=0).ravel()
    assert [int(row[k]) for k in ("tn", "fp", "fn", "tp")] == summed.tolist()
    assert [per_seed["Proposed approach"][k] for k in ("tn", "fp", "fn", "tp")] == [
        row[k] for k in ("tn", "fp", "fn", "tp")
    ]
    scores = torch.tensor([s for r in records for s in r["test_scores"]])
    labels = torch.tensor([v for r in records for v in r["test_labels"]])
    assert float(row["auroc"]) == pytest.approx(BinaryAUROC()(scores, labels).item())
    trivial = pooled["–"]
    assert (trivial["n_runs"], trivial["tn"], trivial["fn"]) == ("2", "4", "4")
    table = (tmp_path / "table4.md").read_text()
    assert (
        "| Always defect-free | – | Widget (scratch) | 2 | 4 / 4 | 2 / 2 | [[4, 0], [4, 0]] |"
        in table
    )
