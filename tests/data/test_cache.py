import numpy as np
import pytest
from PIL import Image

from defectsynth.data import cache as cache_module
from defectsynth.data.cache import ImageCache, decode_image, decode_mask
from defectsynth.errors import DataError
from tests.helpers import write_png


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
    out = decode_image(write_png(tmp_path / "g.png", gray), None)
    assert out.shape == (8, 8, 3) and (out[..., 0] == gray).all() and (out[..., 2] == gray).all()


def test_shorter_side_is_resized_keeping_aspect(tmp_path):
    image = np.zeros((40, 80, 3), np.uint8)
    assert decode_image(write_png(tmp_path / "w.png", image), 20).shape == (20, 40, 3)


@pytest.mark.parametrize("peak", [255, 1, 128])
def test_masks_become_binary_whatever_their_peak(tmp_path, peak):
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 2:5] = peak
    out = decode_mask(write_png(tmp_path / "m.png", mask), None)
    assert out.dtype == np.uint8 and set(np.unique(out)) == {0, 1}
    assert (out == (mask > 0)).all()


def test_mask_downscale_is_nearest_and_stays_binary(tmp_path):
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    out = decode_mask(write_png(tmp_path / "m.png", mask), 16)
    assert out.shape == (16, 16) and set(np.unique(out)) == {0, 1}
    assert out.sum() == 64  # the 32² square becomes exactly 8²


def test_sixteen_bit_images_are_rescaled_not_clipped(tmp_path):
    array = np.full((4, 4), 65535, np.uint16)
    array[0, 0] = 0
    path = tmp_path / "d.png"
    Image.fromarray(array).save(path)
    out = decode_image(path, None)
    assert out[1, 1, 0] == 255 and out[0, 0, 0] == 0


def test_unreadable_file_names_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match=r"cannot read image file .*broken.png"):
        decode_image(bad, None)


def test_disk_cache_is_reused_across_instances(tmp_path, monkeypatch):
    path = write_png(tmp_path / "a.png", np.full((16, 16, 3), 9, np.uint8))
    first = ImageCache(tmp_path / "cache").image(path, 8)

    def fail(*_):
        raise AssertionError("decoded again")

    monkeypatch.setattr(cache_module, "decode_image", fail)
    second = ImageCache(tmp_path / "cache").image(path, 8)
    assert np.array_equal(first, second)


def test_disk_cache_notices_an_edited_file(tmp_path):
    path = write_png(tmp_path / "a.png", np.full((16, 16, 3), 9, np.uint8))
    assert ImageCache(tmp_path / "cache").image(path, 8)[0, 0, 0] == 9
    write_png(path, np.full((16, 16, 3), 200, np.uint8))
    assert ImageCache(tmp_path / "cache").image(path, 8)[0, 0, 0] == 200


def test_memory_cache_returns_the_same_array(tmp_path):
    path = write_png(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    c = ImageCache(None)
    assert c.image(path, 4) is c.image(path, 4)
    assert c.image(path, 4) is not c.image(path, 8)
