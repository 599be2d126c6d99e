import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from defectsynth import synthesis
from defectsynth.checkpoint import CheckpointError, load_checkpoint
from defectsynth.errors import ConfigError, DataError
from defectsynth.synthesis import (
    SynthesisLayout,
    flip,
    import_model_class,
    plan_jobs,
    read_manifest,
    synthesize,
    write_info,
)


class Darken:
    """A stand-in generator: darkens the left half of the image and marks it in the mask;
    not flip-equivariant, so flip variants give different outputs."""

    def synthesize(self, x):
        mask = torch.zeros_like(x[:, :1])
        mask[..., : x.shape[-1] // 2] = 0.9
        return (x - mask).clamp(-1, 1), mask


def sources(n: int = 3, size: int = 8) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


def run(tmp_path, **kwargs):
    layout = SynthesisLayout(tmp_path, "tile", "crack")
    names = [f"src{i}.png" for i in range(3)]
    return layout, synthesize(Darken(), sources(), names, layout, batch_size=2, **kwargs)


def test_flips_are_involutions():
    x = sources(1)
    for variant in synthesis.FLIP_VARIANTS:
        assert torch.equal(flip(flip(x, variant), variant), x)


def test_plan_jobs_numbers_items_per_source_and_variant():
    jobs = plan_jobs(2, 3)
    assert [(j.index, j.source, j.variant) for j in jobs] == [
        (0, 0, "identity"),
        (1, 0, "hflip"),
        (2, 0, "vflip"),
        (3, 1, "identity"),
        (4, 1, "hflip"),
        (5, 1, "vflip"),
    ]
    with pytest.raises(ConfigError, match="n_per_image=5"):
        plan_jobs(2, 5)


def test_writes_the_mvtec_layout_with_binary_and_soft_masks(tmp_path):
    _, rows = run(tmp_path, n_per_image=2)
    assert len(rows) == 6
    images = sorted(p.name for p in (tmp_path / "tile/test/crack_synthetic").iterdir())
    masks = sorted(p.name for p in (tmp_path / "tile/ground_truth/crack_synthetic").iterdir())
    assert images == [f"{i:03d}.png" for i in range(6)]
    assert masks == [f"{i:03d}_mask.png" for i in range(6)]
    mask = np.asarray(Image.open(tmp_path / "tile/ground_truth/crack_synthetic/000_mask.png"))
    soft = np.asarray(Image.open(tmp_path / "soft_mask/tile/crack_synthetic/000_soft.png"))
    assert set(np.unique(mask)) == {0, 255} and set(np.unique(soft)) == {0, 230}
    assert Image.open(tmp_path / "tile/test/crack_synthetic/000.png").mode == "RGB"
    manifest = read_manifest(tmp_path)
    assert [r["source"] for r in manifest] == ["src0.png"] * 2 + ["src1.png"] * 2 + ["src2.png"] * 2
    assert float(manifest[0]["mask_area"]) == pytest.approx(0.5)
    assert (tmp_path / "grid.png").is_file()


def test_outputs_are_flipped_back_onto_their_source(tmp_path):
    run(tmp_path, n_per_image=2)
    identity = np.asarray(Image.open(tmp_path / "tile/ground_truth/crack_synthetic/000_mask.png"))
    hflip = np.asarray(Image.open(tmp_path / "tile/ground_truth/crack_synthetic/001_mask.png"))
    # the stand-in marks the left half of what it sees: the h-flipped input's left half is the
    # source's right half, so once flipped back the masks are mirror images
    assert identity[:, :4].all() and not identity[:, 4:].any()
    assert np.array_equal(hflip, identity[:, ::-1])


def test_threshold_is_an_option(tmp_path):
    _, rows = run(tmp_path, threshold=0.95)
    assert float(rows[0]["mask_area"]) == 0.0


def test_interrupted_run_leaves_no_partial_file_and_resumes(tmp_path, monkeypatch):
    run(tmp_path / "ref")
    calls = {"n": 0}
    real_save = synthesis.save_png

    def crash_on_fifth(array, path):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        real_save(array, path)

    monkeypatch.setattr(synthesis, "save_png", crash_on_fifth)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut")
    written = list((tmp_path / "cut").rglob("*"))
    assert not [p for p in written if p.name.endswith(".tmp") or p.name.startswith(".")]
    for png in (p for p in written if p.suffix == ".png"):
        Image.open(png).load()  # every file present is complete
    monkeypatch.setattr(synthesis, "save_png", real_save)
    run(tmp_path / "cut", skip_existing=True)
    for png in (tmp_path / "ref").rglob("*.png"):
        other = tmp_path / "cut" / png.relative_to(tmp_path / "ref")
        assert np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(other)))
    assert read_manifest(tmp_path / "cut") == read_manifest(tmp_path / "ref")


def test_model_classes_outside_the_package_are_refused():
    with pytest.raises(CheckpointError, match="unknown model class"):
        import_model_class("os.system")
    with pytest.raises(CheckpointError, match="does not exist"):
        import_model_class("defectsynth.models.defect_gan.Nope")


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=r"last\.ckpt cannot be loaded"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Darken()}, path)
    with pytest.raises(CheckpointError, match="plain containers"):
        load_checkpoint(path)


# ----------------------------------------------------------------------------- controllable
class PaintRequest:
    """A stand-in controllable model: darkens exactly the requested region by an amount set by
    the code (and the type), and returns the request as its mask."""

    is_controllable = True
    n_types = 2

    def codes(self, seeds):
        return torch.stack(
            [torch.rand(2, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
        )

    def fallback_masks(self, seeds, defect_types=None):
        masks = torch.zeros(len(seeds), 1, 8, 8)
        for i, s in enumerate(seeds):
            masks[i, 0, s % 6 : s % 6 + 2] = 1
        types = [0] * len(seeds) if defect_types is None else list(defect_types)
        return masks, torch.tensor(types)

    def synthesize(self, x, requested, z, defect_type=None):
        amount = z[:, :1, None, None] + (
            0 if defect_type is None else defect_type[:, None, None, None]
        )
        return (x - requested * amount).clamp(-1, 1), requested


def run_control(tmp_path, **kwargs):
    layout = SynthesisLayout(tmp_path, "tile", "crack")
    names = [f"src{i}.png" for i in range(3)]
    options = {"type_names": ["crack", "glue_strip"], **kwargs}
    return layout, synthesize(PaintRequest(), sources(), names, layout, batch_size=2, **options)


def test_a_controllable_model_makes_any_number_per_source_from_noise_seeds(tmp_path):
    _, rows = run_control(tmp_path / "a", n_per_image=6, seed=5)
    assert len(rows) == 18
    assert [r["seed"] for r in rows] == list(range(5, 23))
    assert {r["variant"] for r in rows} == {"code"}
    # no defect_type: the types in turn, so every type is made
    assert [r["defect_type"] for r in rows[:4]] == ["crack", "glue_strip"] * 2
    manifest = read_manifest(tmp_path / "a")
    assert list(manifest[0]) == [*synthesis.MANIFEST_FIELDS, *synthesis.CONTROL_FIELDS]
    for row in manifest:
        requested = np.array(Image.open(tmp_path / "a" / row["requested_mask"]))
        assert set(np.unique(requested)) <= {0, 255} and requested.any()
        assert float(row["request_iou"]) == pytest.approx(1.0)  # the mask is the request
        assert json.loads(row["placement"])["placement"] == "model"
    # different codes on one source: different images
    first = [np.array(Image.open(tmp_path / "a" / r["image"])) for r in manifest[:6]]
    assert len({a.tobytes() for a in first}) == 6
    # the same seed makes the same dataset
    _, again = run_control(tmp_path / "b", n_per_image=6, seed=5)
    for r1, r2 in zip(rows, again, strict=True):
        for key in ("image", "mask", "requested_mask"):
            assert (tmp_path / "a" / r1[key]).read_bytes() == (
                tmp_path / "b" / r2[key]
            ).read_bytes()


def test_a_chosen_type_and_a_bad_one(tmp_path):
    _, rows = run_control(tmp_path, n_per_image=2, defect_type=1)
    assert {r["defect_type"] for r in rows} == {"glue_strip"}
    with pytest.raises(ConfigError, match="defect_type=5"):
        run_control(tmp_path / "bad", defect_type=5)


def test_controls_for_a_model_that_takes_none_are_an_error(tmp_path):
    with pytest.raises(ConfigError, match="controllable"):
        run(tmp_path, placement="random")


# ----------------------------------------------------------------------- MVTec AD as written
def images_below(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.png"))


def test_the_category_folder_holds_only_samples_and_their_ground_truth(tmp_path):
    # anomaly-detection readers take every image below <out>/<category> as a sample
    run(tmp_path / "plain", n_per_image=2)
    below = images_below(tmp_path / "plain" / "tile")
    assert below == sorted(
        [f"test/crack_synthetic/{i:03d}.png" for i in range(6)]
        + [f"ground_truth/crack_synthetic/{i:03d}_mask.png" for i in range(6)]
    )
    for row in read_manifest(tmp_path / "plain"):
        assert (
            row["soft_mask"] == f"soft_mask/tile/crack_synthetic/{int(row['index']):03d}_soft.png"
        )
        assert (tmp_path / "plain" / row["soft_mask"]).is_file()
    run_control(tmp_path / "control", n_per_image=2)
    assert all(
        p.startswith(("test/", "ground_truth/"))
        for p in images_below(tmp_path / "control" / "tile")
    )
    for row in read_manifest(tmp_path / "control"):
        assert row["requested_mask"].startswith("requested_mask/tile/crack_synthetic/")
        assert (tmp_path / "control" / row["requested_mask"]).is_file()


def old_layout(folder: Path) -> Path:
    """A folder as generate.py wrote it before: soft masks inside the category folder."""
    run(folder, n_per_image=2)
    write_info(SynthesisLayout(folder, "tile", "crack"), {"image_size": 8})
    (folder / "tile" / "soft_mask").mkdir()
    (folder / "soft_mask" / "tile" / "crack_synthetic").rename(
        folder / "tile" / "soft_mask" / "crack_synthetic"
    )
    manifest = folder / "manifest.csv"
    manifest.write_text(manifest.read_text().replace("soft_mask/tile/", "tile/soft_mask/"))
    return folder


def test_an_old_layout_folder_is_still_read_but_not_written_into(tmp_path):
    from defectsynth.data.cache import ImageCache
    from defectsynth.evaluation import load_samples
    from defectsynth.inspection.sources import read_set

    folder = old_layout(tmp_path / "old")
    samples = load_samples(folder, ImageCache(None))
    assert samples.masks is not None and samples.masks.shape == (6, 1, 8, 8)
    assert float(samples.masks.max()) == pytest.approx(230 / 255)
    assert len(read_set(folder, "old").images) == 6
    with pytest.raises(DataError, match=r"older version.*tile/soft_mask.*new out= folder"):
        run(folder, n_per_image=2, skip_existing=True)
