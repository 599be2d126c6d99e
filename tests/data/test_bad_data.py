"""Fuzz-style bad-data suite: every odd file a factory camera folder may hold either works
(with a documented conversion) or fails early, naming the file and the problem; with
``data.on_bad_file=skip`` the bad file is logged and dropped instead."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from defectsynth.data.datamodule import DefectDataModule
from defectsynth.errors import DataError
from tests.helpers import make_mvtec, run_script, write_png

Corruption = Callable[[Path], None]
GOOD = Path("widget/train/good")
DEFECT = Path("widget/test/scratch")
MASKS = Path("widget/ground_truth/scratch")


def datamodule(root: Path, **kwargs) -> DefectDataModule:
    dm = DefectDataModule(
        "widget", "scratch", root=str(root), image_size=16, batch_size=2, num_workers=0, **kwargs
    )
    dm.setup("fit")
    return dm


def first_batch(dm: DefectDataModule) -> dict[str, torch.Tensor]:
    batch = next(iter(dm.train_dataloader()))
    assert batch["normal"].shape == batch["defect"].shape == (2, 3, 16, 16)
    assert set(batch["mask"].unique().tolist()) <= {0.0, 1.0}
    return batch


# ----------------------------------------------------------------------- inputs that fail
def truncate(root: Path) -> None:
    path = root / GOOD / "002.png"
    path.write_bytes(path.read_bytes()[:60])


def zero_bytes(root: Path) -> None:
    (root / GOOD / "003.png").write_bytes(b"")


def text_as_png(root: Path) -> None:
    (root / GOOD / "004.png").write_text("not an image, a note from the line operator")


def wrong_mask_size(root: Path) -> None:
    write_png(root / MASKS / "005_mask.png", np.zeros((10, 10), np.uint8))


def missing_mask(root: Path) -> None:
    (root / MASKS / "006_mask.png").unlink()


def broken_symlink(root: Path) -> None:
    os.symlink(root / "nowhere.png", root / GOOD / "010.png")


BAD = {
    "truncated png": (truncate, "002.png", "cannot read image file"),
    "zero-byte file": (zero_bytes, "003.png", "cannot read image file"),
    "text file named .png": (text_as_png, "004.png", "cannot read image file"),
    "mask of the wrong size": (wrong_mask_size, "005_mask.png", "expected equal sizes"),
    "missing mask": (missing_mask, "006_mask.png", "has no mask"),
    "broken symlink": (broken_symlink, "010.png", "broken symbolic link"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_file_fails_early_naming_the_file_and_the_problem(tmp_path, case):
    corrupt, name, problem = BAD[case]
    root = make_mvtec(tmp_path, size=24)
    corrupt(root)
    with pytest.raises(DataError) as info:
        datamodule(root)
    assert name in str(info.value) and problem in str(info.value)


@pytest.mark.parametrize("case", list(BAD))
def test_bad_file_is_skipped_and_logged_with_on_bad_file_skip(tmp_path, case, caplog):
    corrupt, name, _ = BAD[case]
    root = make_mvtec(tmp_path, size=24)
    corrupt(root)
    dm = datamodule(root, on_bad_file="skip")
    assert len(dm.bad_files.skipped) == 1 and name in dm.bad_files.skipped[0][1]
    assert any(name in record.getMessage() for record in caplog.records)
    counts = dm.counts()
    assert counts["normal_train"] + counts["defect_train"] + counts["defect_test"] == 7 + 10 - (
        0 if "symlink" in case else 1
    )
    first_batch(dm)


def test_empty_defect_folder_fails_early(tmp_path):
    root = make_mvtec(tmp_path, size=24)
    for f in (root / DEFECT).iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"scratch holds 0 usable image"):
        datamodule(root)


def test_bad_file_through_the_command_line_is_one_line_without_traceback(tmp_path, cache_dir):
    root = make_mvtec(tmp_path / "data", size=24)
    truncate(root)
    proc = run_script(
        "train.py",
        "experiment=smoke",
        f"data.root={root}",
        "data.category=widget",
        "data.defect=scratch",
        "data.image_size=16",
        f"hydra.run.dir={tmp_path}/r",
        cache_dir=cache_dir,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error: cannot read image file" in proc.stderr and "002.png" in proc.stderr


# ----------------------------------------------------------------------- inputs that work
def sixteen_bit(root: Path) -> None:
    Image.fromarray(np.full((24, 24), 40000, np.uint16)).save(root / GOOD / "000.png")


def rgba(root: Path) -> None:
    Image.fromarray(np.full((24, 24, 4), 200, np.uint8), "RGBA").save(root / GOOD / "001.png")


def palette(root: Path) -> None:
    Image.fromarray(np.full((24, 24, 3), 90, np.uint8)).convert("P").save(root / GOOD / "002.png")


def jpeg_defect(root: Path) -> None:
    image = np.asarray(Image.open(root / DEFECT / "004.png"))
    (root / DEFECT / "004.png").unlink()
    Image.fromarray(image).save(root / DEFECT / "004.jpg", quality=95)


def mixed_sizes(root: Path) -> None:
    write_png(root / GOOD / "003.png", np.full((40, 30, 3), 70, np.uint8))


def soft_and_01_masks(root: Path) -> None:
    soft = np.zeros((24, 24), np.uint8)
    soft[4:12, 4:12] = 180
    soft[3, 3:13] = 60  # an anti-aliased rim below 128
    write_png(root / MASKS / "000_mask.png", soft)
    write_png(
        root / MASKS / "001_mask.png",
        (np.asarray(Image.open(root / MASKS / "001_mask.png")) > 0).astype(np.uint8),
    )


def extra_files(root: Path) -> None:
    (root / GOOD / ".DS_Store").write_bytes(b"\x00\x01")
    (root / GOOD / "Thumbs.db").write_bytes(b"\x00\x01")
    (root / GOOD / "._000.png").write_bytes(b"resource fork")
    (root / DEFECT / "desktop.ini").write_text("[.ShellClassInfo]")


def valid_symlink(root: Path) -> None:
    os.symlink(root / GOOD / "000.png", root / GOOD / "011.png")


def non_ascii_names(root: Path) -> None:
    (root / GOOD / "005.png").rename(root / GOOD / "träd_ö_検査.png")
    (root / DEFECT / "007.png").rename(root / DEFECT / "ñandú.png")
    (root / MASKS / "007_mask.png").rename(root / MASKS / "ñandú_mask.png")


def rgb_mask(root: Path) -> None:
    mask = np.asarray(Image.open(root / MASKS / "002_mask.png"))
    write_png(root / MASKS / "002_mask.png", np.stack([mask] * 3, axis=-1))


GOOD_CASES = {
    "16-bit png": (sixteen_bit, 7, 10),
    "rgba png": (rgba, 7, 10),
    "palette png": (palette, 7, 10),
    "jpeg defect": (jpeg_defect, 7, 10),
    "mixed sizes": (mixed_sizes, 7, 10),
    "soft and 0/1 masks": (soft_and_01_masks, 7, 10),
    "extra files": (extra_files, 7, 10),
    "symlink": (valid_symlink, 8, 10),
    "non-ascii names": (non_ascii_names, 7, 10),
    "rgb mask": (rgb_mask, 7, 10),
}


@pytest.mark.parametrize("case", list(GOOD_CASES))
def test_odd_but_valid_inputs_work(tmp_path, case):
    change, n_normal, n_defect = GOOD_CASES[case]
    root = make_mvtec(tmp_path, size=24)
    change(root)
    dm = datamodule(root)
    counts = dm.counts()
    assert counts["normal_train"] == n_normal
    assert counts["defect_train"] + counts["defect_test"] == n_defect
    first_batch(dm)
    assert dm.eval_dataset("defect_test")[0]["image"].shape == (3, 16, 16)


def test_conversions_are_the_documented_ones(tmp_path):
    root = make_mvtec(tmp_path, size=24)
    sixteen_bit(root)
    rgba(root)
    soft_and_01_masks(root)
    dm = datamodule(root)
    sixteen = dm.cache.image(root / GOOD / "000.png", 16)
    assert sixteen.shape == (16, 16, 3) and int(sixteen[0, 0, 0]) == round(40000 / 65535 * 255)
    assert int(dm.cache.image(root / GOOD / "001.png", 16)[0, 0, 0]) == 200  # alpha dropped
    soft = dm.cache.mask(root / MASKS / "000_mask.png", None)
    assert soft[3, 5] == 0 and soft[5, 5] == 1  # 8-bit: foreground from 128


def test_mixed_sizes_with_one_shared_draw(tmp_path):
    root = make_mvtec(tmp_path, size=24)
    mixed_sizes(root)
    dm = datamodule(root, augment={"same_for_normal": True})
    for batch in dm.train_dataloader():
        assert batch["normal"].shape == (2, 3, 16, 16)
