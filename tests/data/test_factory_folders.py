"""Real factory exports (issue 12): masks beside their images, all-black masks of defect-free
parts, soft and noisy masks. A mask is never an image, an empty mask is never a defect, and a
mask is binarised by its value range, not by its own maximum."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from defectsynth.data.cache import ImageCache, decode_mask
from defectsynth.data.datamodule import DefectDataModule
from defectsynth.errors import ConfigError, DataError
from tests.helpers import run_script, write_png

N_OK, N_NOK = 10, 5


def write_jpg(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=95)
    return path


def factory_export(root: Path) -> dict[str, Path]:
    """The issue's layout: ``ok/Imgs`` and ``nok/Imgs`` hold every image as a grayscale .jpg
    of varying size and, beside it, its mask as a .png of the same stem (all black for the
    defect-free parts)."""
    rng = np.random.default_rng(0)
    ok, nok = root / "ok" / "Imgs", root / "nok" / "Imgs"
    for i in range(N_OK):
        h, w = 20 + i % 3, 24
        write_jpg(ok / f"part_{i:03d}.jpg", rng.integers(0, 120, (h, w), dtype=np.uint8))
        write_png(ok / f"part_{i:03d}.png", np.zeros((h, w), np.uint8))
    for i in range(N_NOK):
        image = rng.integers(0, 120, (22, 24), dtype=np.uint8)
        mask = np.zeros((22, 24), np.uint8)
        mask[6:14, 4 + i : 12 + i] = 255
        image[mask > 0] = 240
        write_jpg(nok / f"fail_{i:03d}.jpg", image)
        write_png(nok / f"fail_{i:03d}.png", mask)
    return {"ok": ok, "nok": nok}


def folder_dm(normal: Path, defect: Path, mask: Path, **kwargs) -> DefectDataModule:
    options = {"mask_suffix": "", "image_size": 16, "batch_size": 2, "num_workers": 0}
    options.update(kwargs)
    return DefectDataModule(
        "custom",
        "defect",
        folders={"normal": str(normal), "defect": str(defect), "mask": str(mask)},
        **options,
    )


# ------------------------------------------------------------------- a mask is never an image
def only_jpgs(folder: Path, out: Path) -> Path:
    out.mkdir(parents=True)
    for p in folder.glob("*.jpg"):
        (out / p.name).write_bytes(p.read_bytes())
    return out


def test_masks_beside_the_images_stop_with_the_option_that_resolves_it(tmp_path):
    data = factory_export(tmp_path)
    # the issue's command line: today it trains on twice the images, the masks among them
    with pytest.raises(DataError) as info:
        folder_dm(data["ok"], data["nok"], data["nok"]).setup()
    message = str(info.value)
    assert f"data.folders.normal={str(data['ok'])!r}" in message
    assert "data.image_ext" in message and "data.mask_ext" in message
    # with the defect-free folder clean, the shared defect/mask folder is the next stop
    ok = only_jpgs(data["ok"], tmp_path / "ok_jpg")
    with pytest.raises(DataError, match=r"data.folders.defect=.*fail_000.jpg \+ fail_000.png"):
        folder_dm(ok, data["nok"], data["nok"]).setup()
    # one folder for images and masks, no suffix, no extension: each image its own mask
    for p in data["nok"].glob("*.png"):
        p.unlink()
    with pytest.raises(ConfigError, match=r"same folder .* data.mask_suffix is empty"):
        folder_dm(ok, data["nok"], data["nok"]).setup()


def test_a_folder_with_two_files_of_one_stem_names_the_folder_and_the_stems(tmp_path):
    data = factory_export(tmp_path)
    masks = tmp_path / "masks"
    masks.mkdir()
    for p in data["nok"].glob("*.png"):
        p.rename(masks / p.name)
    # the defect folder is clean now; the defect-free one still holds the black masks
    with pytest.raises(DataError) as info:
        folder_dm(data["ok"], data["nok"], masks).setup()
    message = str(info.value)
    assert f"data.folders.normal={str(data['ok'])!r}" in message
    assert "part_000.jpg + part_000.png" in message and "10 file stem(s)" in message
    assert "data.image_ext=.jpg data.mask_ext=.png" in message


def test_image_and_mask_extensions_tell_them_apart(tmp_path, caplog):
    data = factory_export(tmp_path)
    dm = folder_dm(data["ok"], data["nok"], data["nok"], image_ext=".jpg", mask_ext="png")
    with caplog.at_level(logging.INFO, logger="defectsynth.data.datamodule"):
        dm.setup()
    # 10 defect-free images (1 held out for testing), 5 defective ones: not twice as many
    assert dm.counts() == {"normal_train": 9, "defect_train": 4, "defect_test": 1, "normal_test": 1}
    split = dm.split
    every_image = [*split.normal_train, *split.normal_test]
    every_image += [s.image for s in split.defect_train + split.defect_test]
    assert {p.suffix for p in every_image} == {".jpg"}
    samples = split.defect_train + split.defect_test
    assert all(s.mask == s.image.with_suffix(".png") for s in samples)
    line = next(r.getMessage() for r in caplog.records if "normal_train=9" in r.getMessage())
    assert "10 file(s) in data.folders.normal not data.image_ext=['.jpg']" in line
    assert "5 mask(s) beside the images in data.folders.defect" in line
    batch = next(iter(dm.train_dataloader()))
    assert batch["mask"].sum() > 0


def test_one_folder_spelt_two_ways_is_still_one_folder(tmp_path):
    data = factory_export(tmp_path)
    ok = only_jpgs(data["ok"], tmp_path / "ok_jpg")
    for p in data["nok"].glob("*.png"):
        p.unlink()
    # no masks at all: an image must not be found as its own mask via another spelling
    other = data["nok"].parent / ".." / "nok" / "Imgs"
    dm = folder_dm(ok, data["nok"], other, image_ext=".jpg")
    with pytest.raises(DataError, match=r"fail_000.jpg has no mask"):
        dm.setup()


def test_masks_with_a_suffix_in_the_image_folder_are_not_images(tmp_path, caplog):
    data = factory_export(tmp_path)
    for p in data["nok"].glob("*.png"):
        p.rename(p.with_name(f"{p.stem}_mask.png"))
    ok = tmp_path / "ok_only"
    ok.mkdir()
    for p in data["ok"].glob("*.jpg"):
        p.rename(ok / p.name)
    dm = folder_dm(ok, data["nok"], data["nok"], mask_suffix="_mask")
    with caplog.at_level(logging.INFO, logger="defectsynth.data.datamodule"):
        dm.setup()
    assert dm.counts()["defect_train"] + dm.counts()["defect_test"] == N_NOK
    assert all(s.mask.name == f"{s.image.stem}_mask.png" for s in dm.split.defect_train)
    assert any("5 mask(s) beside the images" in r.getMessage() for r in caplog.records)


def test_an_image_that_is_also_a_mask_stops(tmp_path):
    data = factory_export(tmp_path)
    masks = tmp_path / "masks"
    masks.mkdir()
    for p in data["nok"].glob("*.png"):
        p.rename(masks / p.name)
    # the masks' folder given as the defect-free images by mistake
    with pytest.raises(DataError, match=r"data.folders.normal=.*also masks of defect images"):
        folder_dm(masks, data["nok"], masks).setup()


def test_the_issues_command_line_stops_with_one_error_line(tmp_path, cache_dir):
    data = factory_export(tmp_path / "data")
    proc = run_script(
        "train.py",
        "experiment=smoke",
        "data=folder",
        f"data.folders.normal={data['ok']}",
        f"data.folders.defect={data['nok']}",
        f"data.folders.mask={data['nok']}",
        "data.mask_suffix=''",
        "data.image_size=16",
        f"hydra.run.dir={tmp_path}/r",
        cache_dir=cache_dir,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error: " in proc.stderr and "data.image_ext" in proc.stderr


# ------------------------------------------------------------------- thresholds by value range
def square(size: int = 16) -> np.ndarray:
    """Where the defect is: an 8x8 square with a one-pixel rim around it."""
    inside = np.zeros((size, size), bool)
    inside[4:12, 4:12] = True
    return inside


def rim() -> np.ndarray:
    ring = np.zeros((16, 16), bool)
    ring[3:13, 3:13] = True
    return ring & ~square()


def save(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def test_a_noise_only_mask_is_empty_not_a_full_image_defect(tmp_path):
    noise = np.random.default_rng(0).integers(0, 4, (16, 16), dtype=np.uint8)
    assert noise.max() == 3
    assert not decode_mask(save(tmp_path / "noise.png", noise), None).any()
    rgb_noise = np.stack([noise, noise // 2, np.zeros_like(noise)], axis=-1)
    assert not decode_mask(save(tmp_path / "rgb_noise.png", rgb_noise), None).any()
    sixteen = (noise.astype(np.uint16) * 100).astype(np.uint16)  # max 300 of 65535
    assert not decode_mask(save(tmp_path / "noise16.png", sixteen), None).any()


def test_a_soft_edged_mask_is_cut_at_128(tmp_path):
    soft = np.where(square(), 180, 0).astype(np.uint8)
    soft[rim()] = 100  # anti-aliasing: above half of the peak (180), below half of the range
    out = decode_mask(save(tmp_path / "soft.png", soft), None)
    assert np.array_equal(out, square().astype(np.uint8))


def test_a_0_1_mask_is_taken_as_it_is_in_8_and_16_bit(tmp_path):
    for name, dtype in (("01.png", np.uint8), ("01_16.png", np.uint16)):
        mask = square().astype(dtype)
        out = decode_mask(save(tmp_path / name, mask), None)
        assert np.array_equal(out, square().astype(np.uint8)), name


def test_an_rgb_mask_uses_its_strongest_channel(tmp_path):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[square()] = (0, 0, 150)  # a blue region, darker than full scale
    rgb[rim()] = (90, 0, 0)  # a dim red rim: above half the peak, below 128
    out = decode_mask(save(tmp_path / "rgb.png", rgb), None)
    assert np.array_equal(out, square().astype(np.uint8))


def test_a_16_bit_mask_is_cut_at_32768(tmp_path):
    mask = np.where(square(), 40000, 0).astype(np.uint16)
    mask[rim()] = 25000  # above half the peak, below half the 16-bit range
    path = save(tmp_path / "m16.png", mask)
    assert np.array_equal(decode_mask(path, None), square().astype(np.uint8))
    # a 0/255 mask saved as 16-bit is empty by the rule; data.mask_threshold says otherwise
    low = save(tmp_path / "low16.png", np.where(square(), 255, 0).astype(np.uint16))
    assert not decode_mask(low, None).any()
    assert np.array_equal(decode_mask(low, None, threshold=128), square().astype(np.uint8))


def test_mask_threshold_overrides_the_rule_and_keys_the_cache(tmp_path):
    labels = np.where(square(), 7, 0).astype(np.uint8)  # a label image: class 7 on 0
    path = save(tmp_path / "labels.png", labels)
    assert not ImageCache(tmp_path / "cache").mask(path, None).any()
    override = ImageCache(tmp_path / "cache", mask_threshold=1).mask(path, None)
    assert np.array_equal(override, square().astype(np.uint8))
    with pytest.raises(ConfigError, match=r"data.mask_threshold=0"):
        ImageCache(None, mask_threshold=0)


# ------------------------------------------------------------------------------- empty masks
def with_empty_masks(tmp_path: Path) -> dict[str, Path]:
    """The export with its image extensions told apart, and two defective images whose masks
    mark nothing: one all black, one holding JPEG-like noise (max 3)."""
    data = factory_export(tmp_path)
    write_png(data["nok"] / "fail_000.png", np.zeros((22, 24), np.uint8))
    noise = np.random.default_rng(1).integers(0, 4, (22, 24), dtype=np.uint8)
    write_png(data["nok"] / "fail_001.png", noise)
    return data


def test_an_empty_mask_stops_naming_the_file_and_the_option(tmp_path):
    data = with_empty_masks(tmp_path)
    dm = folder_dm(data["ok"], data["nok"], data["nok"], image_ext=".jpg", mask_ext=".png")
    with pytest.raises(DataError) as info:
        dm.setup()
    message = str(info.value)
    assert "fail_000.png" in message and "no foreground pixel" in message
    assert "data.on_bad_file=skip" in message


def test_empty_and_noise_only_masks_are_skipped_with_a_warning(tmp_path, caplog):
    data = with_empty_masks(tmp_path)
    dm = folder_dm(
        data["ok"], data["nok"], data["nok"], image_ext=".jpg", mask_ext=".png", on_bad_file="skip"
    )
    with caplog.at_level(logging.INFO, logger="defectsynth"):
        dm.setup()
    skipped = sorted(Path(path).name for path, _ in dm.bad_files.skipped)
    assert skipped == ["fail_000.jpg", "fail_001.jpg"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("fail_001.png" in w and "largest value 3" in w for w in warnings)
    used = {s.image.name for s in dm.split.defect_train + dm.split.defect_test}
    assert used == {"fail_002.jpg", "fail_003.jpg", "fail_004.jpg"}
    assert all(dm.cache.mask(s.mask, dm.load_size).any() for s in dm.split.defect_train)
    assert any("2 bad file(s) skipped" in r.getMessage() for r in caplog.records)


def test_generate_input_folder_follows_the_same_rule(tmp_path):
    from defectsynth.generation import folder_sources

    data = factory_export(tmp_path)
    cache = ImageCache(None)
    with pytest.raises(DataError, match=r"input=.*part_000.jpg \+ part_000.png.*data.image_ext"):
        folder_sources(data["ok"], 16, cache)
    images, names = folder_sources(data["ok"], 16, cache, image_ext=".jpg")
    assert images.shape == (N_OK, 3, 16, 16) and all(n.endswith(".jpg") for n in names)
