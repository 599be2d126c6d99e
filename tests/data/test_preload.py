"""Parallel start-up decoding (``ImageCache.preload``, ``data.decode_workers``): the same arrays,
cache files and errors as decoding one file after another, with bounded work in flight."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from defectsynth.data import cache as cache_module
from defectsynth.data.cache import (
    IN_FLIGHT_PER_WORKER,
    ImageCache,
    available_cpus,
    decode_image,
    resolve_decode_workers,
)
from defectsynth.data.datamodule import DefectDataModule
from defectsynth.errors import ConfigError, DataError
from tests.helpers import make_mvtec, write_png

REPO = Path(__file__).resolve().parents[2]


def sample_files(folder: Path) -> list[tuple[str, Path, int | None]]:
    """Every kind of file the two decoders treat differently, as (kind, file, size) items."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (30, 20), dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(folder / "rgb.jpg", quality=90)
    Image.fromarray(gray).save(folder / "gray.jpg", quality=90)
    write_png(folder / "rgb.png", rgb)
    write_png(folder / "rgba.png", np.dstack([rgb, rgb[..., :1]]))
    Image.fromarray(gray.astype(np.uint16) * 257).save(folder / "deep.png")  # 16-bit image
    mask8 = np.zeros((24, 40), np.uint8)
    mask8[5:15, 10:30] = 255
    mask16 = np.zeros((24, 40), np.uint16)
    mask16[3:20, 2:9] = 40000
    mask16[20:, 30:] = 20000  # below the 16-bit rule's 32768: background
    write_png(folder / "m8.png", mask8)
    Image.fromarray(mask16).save(folder / "m16.png")
    write_png(folder / "m01.png", (mask8 > 0).astype(np.uint8))
    items: list[tuple[str, Path, int | None]] = []
    for size in (None, 12, 64):  # as stored, down- and up-sized
        items += [("image", folder / n, size) for n in ("rgb.jpg", "gray.jpg", "rgb.png")]
        items += [("image", folder / n, size) for n in ("rgba.png", "deep.png")]
        items += [("mask", folder / n, size) for n in ("m8.png", "m16.png", "m01.png")]
    return items


def get(cache: ImageCache, item: tuple[str, Path, int | None]) -> np.ndarray:
    kind, path, size = item
    return cache.image(path, size) if kind == "image" else cache.mask(path, size)


def cache_files(cache_dir: Path) -> set[str]:
    return {p.name for p in (cache_dir / "images").glob("*.npy")}


@pytest.mark.parametrize("workers", [1, 3])
def test_preload_gives_the_arrays_and_cache_files_of_the_serial_path(tmp_path, workers):
    items = sample_files(tmp_path / "files")
    serial = ImageCache(tmp_path / "serial")
    expected = [get(serial, item) for item in items]
    parallel = ImageCache(tmp_path / "parallel")
    assert parallel.preload(items, workers=workers) == {}
    assert len(parallel._memory) == len(items)  # all in memory: the loop below decodes nothing
    for item, want in zip(items, expected, strict=True):
        got = get(parallel, item)
        assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want)
    assert cache_files(tmp_path / "parallel") == cache_files(tmp_path / "serial")
    assert len(cache_files(tmp_path / "serial")) == len(items)


@pytest.mark.parametrize("name", ["rgb.jpg", "rgb.png"])
@pytest.mark.parametrize("size", [None, 12, 64])
def test_rgb_files_decode_as_the_numpy_round_trip_did(tmp_path, name, size):
    """RGB files skip the copy through numpy; the pixels are those of the old path."""
    sample_files(tmp_path)
    with Image.open(tmp_path / name) as image:
        old = Image.fromarray(np.asarray(image.convert("RGB"))).convert("RGB")
    if size is not None:
        old = old.resize(cache_module._resized_shape(*old.size, size), Image.Resampling.BICUBIC)
    assert np.array_equal(decode_image(tmp_path / name, size), np.asarray(old))


def test_a_second_run_reads_the_disk_cache_without_decoding(tmp_path, monkeypatch):
    items = sample_files(tmp_path / "files")
    first = ImageCache(tmp_path / "cache")
    first.preload(items, workers=2)

    def fail(*_):
        raise AssertionError("decoded again")

    monkeypatch.setattr(cache_module, "decode_image", fail)
    monkeypatch.setattr(cache_module, "decode_mask", fail)
    second = ImageCache(tmp_path / "cache")
    second.preload(items, workers=2)
    for item in items:
        assert np.array_equal(get(second, item), get(first, item))


def test_the_first_unusable_file_in_order_raises_naming_it(tmp_path):
    items = sample_files(tmp_path / "files")[:4]
    for name in ("broken.png", "later.png"):
        (tmp_path / name).write_bytes(b"\x89PNG\r\n\x1a\n not really")
    items[1:1] = [("image", tmp_path / "broken.png", 12)]
    items.append(("image", tmp_path / "later.png", 12))
    cache = ImageCache(tmp_path / "cache")
    with pytest.raises(DataError, match=r"cannot read image file .*broken\.png") as raised:
        cache.preload(items, workers=3)
    with pytest.raises(DataError) as serial:  # the same message as decoding it on its own
        ImageCache(tmp_path / "cache").image(tmp_path / "broken.png", 12)
    assert str(raised.value) == str(serial.value)
    failures = ImageCache(tmp_path / "cache").preload(items, workers=3, errors="collect")
    assert sorted(failures) == [1, len(items) - 1]
    assert "later.png" in str(failures[len(items) - 1])


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"gone\.png"):
        ImageCache(tmp_path / "cache").preload([("image", tmp_path / "gone.png", 8)])


def test_work_in_flight_stays_bounded(monkeypatch):
    """Decoding may not run ahead of the files taken into the cache: a slow first file must
    not let the other threads decode (and hold) the rest of thousands of files."""
    cache, workers = ImageCache(None), 2
    lock = threading.Lock()
    state = {"started": 0, "running": 0, "max_ahead": 0, "max_running": 0}

    def slow_decode(path: Path, size: int | None) -> np.ndarray:
        with lock:
            state["started"] += 1
            state["running"] += 1
            ahead = state["started"] - len(cache._memory)  # decoding or waiting to be taken
            state["max_ahead"] = max(state["max_ahead"], ahead)
            state["max_running"] = max(state["max_running"], state["running"])
        time.sleep(0.15 if path.name == "0.png" else 0.002)
        with lock:
            state["running"] -= 1
        return np.zeros((2, 2, 3), np.uint8)

    monkeypatch.setattr(cache_module, "decode_image", slow_decode)
    items = [("image", Path(f"{i}.png"), 8) for i in range(40)]
    cache.preload(items, workers=workers)
    assert state["started"] == len(items) == len(cache._memory)
    assert state["max_running"] <= workers
    assert state["max_ahead"] <= IN_FLIGHT_PER_WORKER * workers


def test_files_already_in_memory_or_listed_twice_decode_once(tmp_path, monkeypatch):
    path = write_png(tmp_path / "a.png", np.full((8, 8, 3), 7, np.uint8))
    cache = ImageCache(None)
    calls = []
    real = cache_module.decode_image
    monkeypatch.setattr(cache_module, "decode_image", lambda p, s: calls.append(p) or real(p, s))
    cache.preload([("image", path, 4), ("image", str(path), 4)], workers=2)
    cache.preload([("image", path, 4)], workers=2)
    assert len(calls) == 1 and cache.image(path, 4).shape == (4, 4, 3)


def test_many_files_log_one_line_and_print_no_bar_off_a_terminal(monkeypatch, caplog, capfd):
    monkeypatch.setattr(cache_module, "decode_image", lambda p, s: np.zeros((1, 1, 3), np.uint8))
    items = [("image", Path(f"{i}.png"), 8) for i in range(cache_module.PROGRESS_MIN_ITEMS)]
    with caplog.at_level("INFO", logger=cache_module.__name__):
        ImageCache(None).preload(items, workers=2, description="decoding test images")
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["decoding test images"]
    assert capfd.readouterr().err == ""


def test_decode_workers_option(tmp_path):
    assert resolve_decode_workers("auto") == available_cpus() >= 1
    assert resolve_decode_workers(3) == 3
    options = yaml.safe_load((REPO / "conf" / "data" / "mvtec.yaml").read_text())
    assert options["decode_workers"] == "auto"
    root = make_mvtec(tmp_path / "mvtec", size=16, n_train=3, n_defect=4, n_test_good=1)
    dm = DefectDataModule("widget", "scratch", root=str(root), image_size=8, decode_workers=2)
    assert dm.decode_workers == 2
    assert "decode_workers" not in dm.hparams  # how this machine decodes: not in checkpoints


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "many", "4", None])
def test_a_bad_decode_workers_is_a_config_error_naming_the_option(bad):
    with pytest.raises(ConfigError, match=r"data\.decode_workers=.*expected auto .* >= 1"):
        DefectDataModule("widget", "scratch", root="unused", decode_workers=bad)


def test_datamodule_sets_do_not_depend_on_the_number_of_threads(tmp_path):
    root = make_mvtec(tmp_path / "mvtec", size=24, n_train=5, n_defect=6, n_test_good=2)
    sets = []
    for workers in (1, 2):
        dm = DefectDataModule(
            "widget",
            "scratch",
            root=str(root),
            image_size=16,
            num_workers=0,
            cache_dir=str(tmp_path / f"cache{workers}"),
            decode_workers=workers,
        )
        dm.setup("fit")
        assert dm.train_set is not None
        train = [dm.train_set.normal, dm.train_set.defect, dm.train_set.mask]
        test = dm.eval_dataset("defect_test")
        sets.append((train, test.images, test.masks, dm.split))
    (train1, images1, masks1, split1), (train2, images2, masks2, split2) = sets
    assert split1 == split2
    for one, two in zip([*train1, images1, masks1], [*train2, images2, masks2], strict=True):
        assert len(one) == len(two)
        assert all(np.array_equal(a, b) for a, b in zip(one, two, strict=True))


def test_a_bad_file_is_still_reported_or_skipped_in_the_loops_order(tmp_path):
    root = make_mvtec(tmp_path / "mvtec", size=16, n_train=4, n_defect=4, n_test_good=1)
    good = root / "widget" / "train" / "good"
    (good / "001.png").write_bytes(b"not an image")
    (good / "003.png").write_bytes(b"not an image either")
    options = dict(root=str(root), image_size=8, num_workers=0, decode_workers=2)
    with pytest.raises(DataError, match=r"001\.png"):
        DefectDataModule("widget", "scratch", **options).setup("fit")
    dm = DefectDataModule("widget", "scratch", on_bad_file="skip", **options)
    dm.setup("fit")
    assert [Path(p).name for p, _ in dm.bad_files.skipped] == ["001.png", "003.png"]
    assert [p.name for p in dm.split.normal_train] == ["000.png", "002.png"]
