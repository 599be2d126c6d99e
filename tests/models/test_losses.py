import pytest
import torch

from defectsynth.models import losses


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values).view(1, 1, 1, -1)


def test_lsgan_generator_loss_by_hand():
    assert losses.lsgan_generator_loss(t(0.5, 1.5)).item() == pytest.approx(0.25)


def test_lsgan_discriminator_loss_by_hand():
    # real (1, 0) vs target 1: (0 + 1)/2; fake (0, 1) vs target 0: (0 + 1)/2; halved sum: 0.5
    assert losses.lsgan_discriminator_loss(t(1.0, 0.0), t(0.0, 1.0)).item() == pytest.approx(0.5)
    assert losses.lsgan_discriminator_loss(t(1.0, 1.0), t(0.0, 0.0)).item() == 0.0


def test_cycle_and_identity_are_l1_by_hand():
    assert losses.cycle_loss(t(1.0, 2.0), t(0.0, 4.0)).item() == pytest.approx(1.5)
    assert losses.identity_loss(t(-1.0, 1.0), t(1.0, 1.0)).item() == pytest.approx(1.0)


def test_background_loss_outside_mask_is_the_paper():
    x, g, m = t(1, 2, 3, 4), t(1, 0, 3, 0), t(0, 1, 0, 0.5)
    # weights 1−m = (1, 0, 1, .5): x⊙w = (1, 0, 3, 2), g⊙w = (1, 0, 3, 0) → squared errors (0,0,0,4)
    assert losses.background_loss(x, g, m).item() == pytest.approx(1.0)


def test_background_loss_inside_summed_is_the_authors_code():
    x, g, m = t(1, 2, 3, 4), t(1, 0, 3, 0), t(0, 1, 0, 0.5)
    # weights m = (0, 1, 0, .5): x⊙m = (0, 2, 0, 2), g⊙m = (0, 0, 0, 0) → squared errors sum 8
    value = losses.background_loss(x, g, m, region="inside", reduction="sum")
    assert value.item() == pytest.approx(8.0)


def test_background_loss_teaches_the_mask():
    x, g = t(1.0, 2.0), t(0.0, 2.0)
    m = t(0.2, 0.2).requires_grad_()
    losses.background_loss(x, g, m).backward()
    # raising m where the image changed lowers the loss: negative gradient at pixel 0 only
    assert m.grad[0, 0, 0, 0] < 0 and m.grad[0, 0, 0, 1] == 0


def test_background_loss_rejects_unknown_options():
    with pytest.raises(ValueError, match="region"):
        losses.background_loss(t(1), t(1), t(0), region="everywhere")


def test_coherence_input_concatenates_image_and_mask():
    image, mask = torch.zeros(2, 3, 4, 4), torch.ones(2, 1, 4, 4)
    both = losses.coherence_input(image, mask)
    assert both.shape == (2, 4, 4, 4) and torch.equal(both[:, 3:], mask)


def _disc_mask(size: int, radius: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    c = size // 2
    return (((yy - c) ** 2 + (xx - c) ** 2) <= radius**2).float()[None, None]


def test_mask_area_loss_is_zero_inside_the_band_and_one_for_an_empty_mask():
    real = _disc_mask(32, 5)  # area a ≈ 0.077
    a = float(real.mean())
    assert losses.mask_area_loss(real.clone(), real) == 0
    assert losses.mask_area_loss(_disc_mask(32, 4), real) == 0  # ≈ 0.64 a: inside [a/2, 2a]
    # just under the threshold everywhere: pasted area 0, the worst case
    assert losses.mask_area_loss(torch.full_like(real, 0.49), real) == pytest.approx(1.0)
    half = torch.zeros_like(real).flatten()
    half[: round(a / 4 * half.numel())] = 1.0  # a / 4: halfway from empty to a / 2
    got = float(losses.mask_area_loss(half.view_as(real), real))
    assert got == pytest.approx(0.5, abs=0.02)
    assert losses.mask_area_loss(torch.ones_like(real), real) == pytest.approx(1.0)


def test_mask_area_loss_raises_a_hiding_mask_and_lowers_a_flooding_one():
    real = _disc_mask(32, 5)
    hiding = torch.full_like(real, 0.45, requires_grad=True)
    losses.mask_area_loss(hiding, real).backward()
    assert hiding.grad is not None and (hiding.grad < 0).all()  # descent raises every pixel
    flooding = torch.full_like(real, 0.9, requires_grad=True)
    losses.mask_area_loss(flooding, real).backward()
    assert flooding.grad is not None and (flooding.grad > 0).all()
    inside = real.clone().requires_grad_(True)
    losses.mask_area_loss(inside, real).backward()
    assert inside.grad is not None and (inside.grad == 0).all()


def test_mask_area_loss_is_per_sample():
    real = _disc_mask(32, 5).repeat(2, 1, 1, 1)
    pred = torch.cat([real[:1], torch.zeros_like(real[:1])])  # one fine, one empty
    assert losses.mask_area_loss(pred, real) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="tolerance"):
        losses.mask_area_loss(pred, real, tolerance=0.5)


def test_cycle_loss_with_keep_ignores_the_dropped_pixels_but_keeps_the_scale():
    original = torch.zeros(1, 3, 4, 4)
    rec = torch.zeros(1, 3, 4, 4)
    rec[..., :2, :] = 1.0  # wrong in the top half only
    keep = torch.ones(1, 1, 4, 4)
    assert losses.cycle_loss(rec, original) == pytest.approx(0.5)
    assert losses.cycle_loss(rec, original, keep) == pytest.approx(0.5)
    keep[..., :2, :] = 0
    assert losses.cycle_loss(rec, original, keep) == 0
    keep[..., :1, :] = 1  # one wrong row of four kept: ¼ of the pixels, all off by 1
    assert losses.cycle_loss(rec, original, keep) == pytest.approx(0.25)
