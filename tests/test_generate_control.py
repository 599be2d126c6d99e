"""End to end, as a user types it: train ``model=defect_gan_control`` on two defect types of
the procedural tile (smoke size), then ``generate.py`` with several codes per image, each
placement and a chosen type."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from defectsynth.synthesis import CONTROL_FIELDS, MANIFEST_FIELDS
from tests.helpers import load, run_script, write_png


@pytest.fixture(scope="module")
def control_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    run = tmp_path_factory.mktemp("control") / "run"
    run_script(
        "train.py",
        "model=defect_gan_control",
        "experiment=smoke",
        "product=tile",
        "data.defect=[crack,glue_strip]",
        "trainer.limit_train_batches=2",
        "logger=csv",
        f"hydra.run.dir={run}",
        cache_dir=cache_dir,
    )
    return run / "checkpoints" / "last.ckpt"


def generate(ckpt: Path, out: Path, *args: str, cache_dir: Path, check: bool = True):
    return run_script(
        "generate.py", f"ckpt={ckpt}", f"out={out}", "logger=csv", *args,
        cache_dir=cache_dir, check=check,
    )  # fmt: skip


def manifest(out: Path) -> list[dict[str, str]]:
    with open(out / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_training_stores_types_and_masks_in_the_checkpoint(control_run):
    checkpoint = load(control_run)
    assert checkpoint["defectsynth"]["model_name"] == "defect_gan_control"
    assert checkpoint["hyper_parameters"]["control"]["n_types"] == 2
    bank = checkpoint["state_dict"]["mask_bank"]
    assert bank.ndim == 4 and bank.shape[1:] == (1, 32, 32) and bank.any()
    assert set(checkpoint["state_dict"]["mask_bank_types"].tolist()) == {0, 1}
    # the model config's low-data defaults were used
    assert checkpoint["hyper_parameters"]["d_augment"]["mode"] == "ada"
    assert checkpoint["hyper_parameters"]["stabilize"]["coherence_view"] == "masked_image"


def test_several_codes_per_image_with_random_placement(control_run, cache_dir, tmp_path):
    out = tmp_path / "random"
    generate(control_run, out, "n_per_image=5", "placement=random", cache_dir=cache_dir)
    rows = manifest(out)
    assert list(rows[0]) == [*MANIFEST_FIELDS, *CONTROL_FIELDS]
    assert len(rows) == 5 * 3  # 3 defect-free test images in the smoke data
    assert [int(r["seed"]) for r in rows] == list(range(15))
    assert {r["defect_type"] for r in rows} == {"crack", "glue_strip"}
    for row in rows:
        assert json.loads(row["placement"])["placement"] == "random"
        for key in ("image", "mask", "requested_mask"):
            assert (out / row[key]).is_file()
        assert 0.0 <= float(row["request_iou"]) <= 1.0
    first = {(out / r["image"]).read_bytes() for r in rows[:5]}
    assert len(first) == 5  # five codes, five different images of one source
    info = json.loads((out / "synthesis.json").read_text())
    assert info["defect_types"] == ["crack", "glue_strip"] and info["seed"] == 0


def test_a_folder_of_masks_and_a_chosen_type(control_run, cache_dir, tmp_path):
    masks = tmp_path / "masks"
    drawn = np.zeros((64, 64), np.uint8)
    drawn[8:24, 30:50] = 255
    write_png(masks / "a.png", drawn)
    out = tmp_path / "folder"
    generate(
        control_run,
        out,
        "placement=folder",
        f"placement.mode={masks}",
        "defect_type=glue_strip",
        "n_per_image=2",
        cache_dir=cache_dir,
    )
    rows = manifest(out)
    assert {r["defect_type"] for r in rows} == {"glue_strip"}
    assert rows[0]["image"].startswith("tile/test/glue_strip_synthetic/")
    # the drawn mask, taken to the model's 32 px: exactly where the user drew
    requested = np.array(Image.open(out / rows[0]["requested_mask"])) > 0
    expected = np.zeros((32, 32), bool)
    expected[4:12, 15:25] = True
    assert np.array_equal(requested, expected)
    assert json.loads(rows[0]["placement"])["source"] == str(masks / "a.png")


def test_an_unknown_type_lists_the_types(control_run, cache_dir, tmp_path):
    proc = generate(
        control_run, tmp_path / "bad", "defect_type=hole", cache_dir=cache_dir, check=False
    )
    assert proc.returncode != 0
    assert "defect_type='hole'" in proc.stderr + proc.stdout
    assert "glue_strip" in proc.stderr + proc.stdout


def test_evaluate_accepts_the_controllable_model(control_run, cache_dir, tmp_path):
    from tests.test_evaluation import evaluate, evaluate_cfg, tiny_networks

    cfg = evaluate_cfg(tmp_path, cache_dir, f"ckpt={control_run}")
    numbers = evaluate(cfg, tiny_networks())
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["meta"]["n_fake"] > 0
    assert np.isfinite(numbers["fid64"])
    # the masks G made from the stored real masks are scored like the paper model's
    assert report["metrics"]["mask_coherence"]["mask_area"] is not None
