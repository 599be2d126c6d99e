import pytest

from defectsynth.data.mvtec import index_category, list_categories, list_defects
from defectsynth.errors import DataError
from tests.helpers import make_mvtec, write_png


def test_paper_split_on_known_counts(tiny_mvtec):
    split = index_category(tiny_mvtec, "widget", "scratch")
    assert split.counts() == {
        "normal_train": 7,
        "defect_train": 8,
        "defect_test": 2,
        "normal_test": 3,
    }
    # first round(0.8·10) by file name train the GAN, whatever the creation order was
    assert [s.image.name for s in split.defect_train] == [f"{i:03d}.png" for i in range(8)]
    assert [s.image.name for s in split.defect_test] == ["008.png", "009.png"]
    assert all(s.mask.name == s.image.stem + "_mask.png" for s in split.defect_train)


@pytest.mark.parametrize(("n", "n_train"), [(2, 2), (5, 4), (8, 6), (17, 14), (10, 8)])
def test_train_count_is_round_of_80_percent(tmp_path, n, n_train):
    root = make_mvtec(tmp_path, n_defect=n, n_train=1, n_test_good=0, size=8)
    assert len(index_category(root, "widget", "scratch").defect_train) == n_train


def test_hidden_and_non_image_files_are_ignored(tiny_mvtec):
    folder = tiny_mvtec / "widget" / "train" / "good"
    (folder / ".DS_Store").write_bytes(b"junk")
    (folder / "notes.txt").write_text("hello")
    assert index_category(tiny_mvtec, "widget", "scratch").counts()["normal_train"] == 7


def test_categories_and_defects_are_listed(tiny_mvtec):
    assert list_categories(tiny_mvtec) == ["widget"]
    assert list_defects(tiny_mvtec, "widget") == ["scratch"]


def test_missing_root_explains_how_to_get_data(tmp_path):
    with pytest.raises(DataError, match=r"data.root=.*does not exist.*mvtec-ad.*procedural"):
        index_category(tmp_path / "nowhere", "tile", "crack")


def test_unknown_category_lists_the_available_ones(tiny_mvtec):
    with pytest.raises(
        DataError, match=r"data.category='tile'.*Available categories: \['widget'\]"
    ):
        index_category(tiny_mvtec, "tile", "crack")


def test_unknown_defect_lists_the_available_ones(tiny_mvtec):
    with pytest.raises(DataError, match=r"data.defect='hole'.*Available defects: \['scratch'\]"):
        index_category(tiny_mvtec, "widget", "hole")


def test_image_without_mask_names_the_expected_mask(tiny_mvtec):
    (tiny_mvtec / "widget" / "ground_truth" / "scratch" / "003_mask.png").unlink()
    with pytest.raises(DataError, match=r"003.png has no mask: expected .*003_mask.png"):
        index_category(tiny_mvtec, "widget", "scratch")


def test_fewer_than_two_defect_images(tmp_path):
    root = make_mvtec(tmp_path, n_defect=1, size=8)
    with pytest.raises(DataError, match=r"holds 1 usable image.*at least 2"):
        index_category(root, "widget", "scratch")


def test_empty_train_folder(tmp_path):
    root = make_mvtec(tmp_path, n_train=0, size=8)
    (root / "widget" / "train" / "good").mkdir(parents=True, exist_ok=True)
    with pytest.raises(DataError, match="no images in"):
        index_category(root, "widget", "scratch")


def test_real_samples_index_like_mvtec(mvtec_mini):
    split = index_category(mvtec_mini, "tile", "crack")
    assert split.counts() == {
        "normal_train": 10,
        "defect_train": 3,
        "defect_test": 1,
        "normal_test": 4,
    }


def test_mask_lookup_uses_the_image_stem(tmp_path):
    root = make_mvtec(tmp_path, n_defect=2, size=8)
    import numpy as np

    write_png(root / "widget" / "test" / "scratch" / "extra.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match=r"extra_mask\.png"):
        index_category(root, "widget", "scratch")


@pytest.mark.parametrize("folder", ["train/good", "test/scratch"])
def test_two_image_files_of_one_stem_are_refused_naming_them(tiny_mvtec, folder):
    import shutil

    where = tiny_mvtec / "widget" / folder
    shutil.copy(where / "001.png", where / "001.jpg")
    with pytest.raises(DataError, match=r"001\.jpg \+ 001\.png|001\.png \+ 001\.jpg") as err:
        index_category(tiny_mvtec, "widget", "scratch")
    assert str(where) in str(err.value)
