import numpy as np
import pytest
import torch
from PIL import Image

from defectsynth import synthesis
from defectsynth.checkpoint import CheckpointError, load_checkpoint
from defectsynth.errors import ConfigError
from defectsynth.synthesis import (
    SynthesisLayout,
    flip,
    import_model_class,
    plan_jobs,
    read_manifest,
    synthesize,
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
    soft = np.asarray(Image.open(tmp_path / "tile/soft_mask/crack_synthetic/000_soft.png"))
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
