import pytest
import torch

from defectsynth.models.discriminator import PatchDiscriminator
from defectsynth.models.generator import DefectGenerator


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_trunk_and_image_branch_match_the_classic_cyclegan_generator():
    g = DefectGenerator(ngf=64, n_blocks=9, norm="instance")
    assert n_params(g.trunk) + n_params(g.image_branch) == 11_378_179


@pytest.mark.parametrize(("channels", "expected"), [(3, 2_764_737), (4, 2_765_761)])
def test_patchgan_parameter_counts(channels, expected):
    assert n_params(PatchDiscriminator(channels, ndf=64, n_layers=3)) == expected


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_generator_shapes_and_ranges(norm):
    g = DefectGenerator(ngf=8, n_blocks=2, norm=norm)
    image, mask = g(torch.randn(2, 3, 32, 48) * 3)
    assert image.shape == (2, 3, 32, 48) and mask.shape == (2, 1, 32, 48)
    assert image.abs().max() <= 1 and mask.min() >= 0 and mask.max() <= 1
    image_only, no_mask = g(torch.randn(1, 3, 32, 32), with_mask=False)
    assert image_only.shape == (1, 3, 32, 32) and no_mask is None


def test_patchgan_on_70px_receptive_field_gives_a_patch_map():
    d = PatchDiscriminator(4, ndf=8)
    assert d(torch.randn(1, 4, 256, 256)).shape == (1, 1, 30, 30)


def test_information_flows_from_image_branch_to_mask_branch_only():
    torch.manual_seed(0)
    g = DefectGenerator(ngf=8, n_blocks=1).eval()
    x = torch.randn(1, 3, 32, 32)
    image, mask = g(x)
    with torch.no_grad():  # changing the mask branch leaves the image untouched
        for p in g.mask_branch.parameters():
            p.add_(torch.randn_like(p))
    image2, mask2 = g(x)
    assert torch.equal(image, image2) and not torch.allclose(mask, mask2)
    with torch.no_grad():  # changing the image branch's up-sampling changes the mask too
        for p in g.image_branch.up.parameters():
            p.add_(torch.randn_like(p))
    _, mask3 = g(x)
    assert not torch.allclose(mask2, mask3)


def test_mask_branch_fuses_with_1x1_convolutions_restoring_widths():
    g = DefectGenerator(ngf=16, n_blocks=1)
    convs = [block[0] for block in g.mask_branch.fuse]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (64, 32, (1, 1)),
        (32, 16, (1, 1)),
    ]


def test_init_is_normal_with_std_002():
    torch.manual_seed(0)
    g = DefectGenerator(ngf=64, n_blocks=2)
    w = g.trunk.blocks[0].body[0][1].weight
    assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.002


def test_unknown_norm_is_a_clear_error():
    from defectsynth.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model\.norm='layer'"):
        DefectGenerator(norm="layer")


def test_resize_upsampling_has_no_transposed_convolution_and_the_same_shapes():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    paper = DefectGenerator(ngf=8, n_blocks=2)
    resize = DefectGenerator(ngf=8, n_blocks=2, upsample="resize")
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in paper.modules())
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in resize.modules())
    for (a_img, a_mask), (b_img, b_mask) in [(paper(x), resize(x))]:
        assert a_img.shape == b_img.shape and a_mask.shape == b_mask.shape
    with pytest.raises(ValueError, match="upsample"):
        DefectGenerator(ngf=8, n_blocks=2, upsample="bilinear_typo")


def test_resize_upsampling_has_no_checkerboard_on_a_constant_input():
    # a transposed convolution with stride 2 maps a constant image to a periodic pattern
    # (uneven kernel overlap); nearest ×2 + conv keeps it constant away from the borders
    torch.manual_seed(0)
    from defectsynth.models.generator import UpBlock

    h = torch.ones(1, 4, 8, 8)
    for mode, periodic in (("transpose", True), ("resize", False)):
        out = UpBlock(4, 4, "batch", mode).eval()(h)[..., 2:-2, 2:-2]
        spread = float(out.amax(dim=(2, 3)).sub(out.amin(dim=(2, 3))).max())
        assert (spread > 1e-4) == periodic, mode
