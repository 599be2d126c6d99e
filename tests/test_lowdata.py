"""The low-data study (src/lowdata.py, `make table6`): its extra metric and its table."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from defectsynth import lowdata
from defectsynth.errors import ConfigError
from defectsynth.evaluation import SampleSet
from tests.helpers import run_script


def test_changed_outside_of_a_samples_folder_uses_its_predicted_masks(monkeypatch):
    source = torch.zeros(1, 3, 4, 4)
    synthetic = source.clone()
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 0.6  # top half predicted as defect at the folder's threshold 0.5
    synthetic[..., 0, :] = 1.0  # changed inside the mask: not counted
    synthetic[..., 3, :2] = 1.0  # 2 of the 8 background pixels changed
    samples = SampleSet(synthetic, mask, source, {"threshold": 0.5})
    monkeypatch.setattr(lowdata, "load_samples", lambda folder, cache: samples)
    assert lowdata.changed_outside_folder(Path("x"), None, threshold=0.1) == pytest.approx(2 / 8)
    # the folder's own threshold binarises the soft masks: at 0.7 nothing is predicted
    samples.info["threshold"] = 0.7
    assert lowdata.changed_outside_folder(Path("x"), None) == pytest.approx(6 / 16)
    # other masks (a controllable model's requests) replace the predicted ones
    everywhere = torch.ones(1, 1, 4, 4)
    assert lowdata.samples_changed_outside(samples, masks=everywhere) is None
    monkeypatch.setattr(
        lowdata, "load_samples", lambda folder, cache: SampleSet(synthetic, None, None)
    )
    assert lowdata.changed_outside_folder(Path("x"), None) is None


def test_rows_are_aggregated_over_seeds_per_variant_and_product():
    cfg = OmegaConf.create(
        {
            "products": ["tile"],
            "run": ["paper", "low_data"],
            "variants": {"paper": {"label": "Paper"}, "low_data": {"label": "Low"}},
        }
    )
    rows = [
        {"variant": "paper", "product": "tile", "seed": 0, "identity_l1": 0.4, "mask_iou": 0.01},
        {"variant": "paper", "product": "tile", "seed": 1, "identity_l1": 0.2, "mask_iou": None},
        {
            "variant": "low_data",
            "product": "tile",
            "seed": 0,
            "identity_l1": 0.1,
            "kid_mean": 0.02,
            "kid_std": 0.005,
        },
    ]
    table = lowdata.aggregate(rows, cfg)
    assert [r["Variant"] for r in table] == ["Paper", "Low"]
    assert table[0]["identity_l1"] == pytest.approx(0.3)
    assert table[0]["identity_l1_std"] == pytest.approx(0.1414, abs=1e-4)
    assert table[0]["mask_iou"] == pytest.approx(0.01) and table[0]["mask_iou_std"] is None
    assert table[1]["kid_mean_std"] == 0.005  # one seed: KID's own subset std
    text = lowdata.markdown(table, "T")
    assert "0.300 ± 0.141" in text and "| Low | tile | 1 |" in text


@pytest.mark.slow
def test_table6_smoke_runs_both_presets_and_writes_the_table(tmp_path, cache_dir):
    run_script(
        "lowdata.py",
        "preset=smoke",
        "seeds=[0]",
        "real_products=[]",
        "jobs=2",  # one worker process per variant
        f"hydra.run.dir={tmp_path}",
        cache_dir=cache_dir,
    )
    with open(tmp_path / "table6.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["Variant"] for r in table] == ["Paper preset", "Data-efficient (experiment=low_data)"]
    for row in table:
        assert 0.0 <= float(row["changed_outside"]) <= 1.0
        assert float(row["identity_l1"]) > 0
    low = tmp_path / "low_data-tile-seed0" / "train" / ".hydra" / "config.yaml"
    assert "mode: ada" in low.read_text()
    assert (tmp_path / "grids-tile.png").is_file()
    # each worker trained its own cell and said so in its log
    logs = [(tmp_path / f"shard{i}.log").read_text() for i in range(2)]
    assert "paper-tile-seed0" in logs[0] and "low_data-tile-seed0" not in logs[0]
    assert "low_data-tile-seed0" in logs[1]


def test_study_products_adds_the_real_ones_only_from_an_existing_folder(tmp_path, caplog):
    cfg = OmegaConf.create(
        {"products": ["tile", "wood"], "real_products": ["tile"], "data_root": str(tmp_path)}
    )
    assert [p.key for p in lowdata.study_products(cfg)] == ["tile", "wood", "tile@mvtec"]
    assert lowdata.study_products(cfg)[2].data_root == str(tmp_path)
    cfg.data_root = str(tmp_path / "absent")
    with caplog.at_level("WARNING"):
        assert [p.key for p in lowdata.study_products(cfg)] == ["tile", "wood"]
    assert "absent" in caplog.text and "real_products" in caplog.text


def test_an_unknown_variant_is_a_config_error_naming_it():
    cfg = OmegaConf.create({"run": ["paper", "paperr"], "variants": {"paper": {}}})
    with pytest.raises(ConfigError, match="paperr"):
        lowdata.lowdata(cfg)
