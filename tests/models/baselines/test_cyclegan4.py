"""The 4-channel CycleGAN: the mask is G's 4th output channel, every network steps."""

from __future__ import annotations

import pytest
import torch

from defectsynth.errors import ConfigError
from defectsynth.models.baselines.channels import split_mask_channel, with_mask_channel
from defectsynth.models.baselines.cyclegan4 import CycleGAN4
from tests.models.common import TINY_RESNET, changed, fit, rebuilt, snapshot


def test_mask_is_the_fourth_generator_channel_mapped_to_0_1():
    torch.manual_seed(0)
    model = CycleGAN4(**TINY_RESNET)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    image, mask = model.synthesize(x)
    with torch.no_grad():
        out = model.eval().G(x, with_mask=False)[0]
    assert out.shape == (2, 4, 32, 32)
    assert torch.equal(image, out[:, :3])
    assert torch.equal(mask, (out[:, 3:] + 1) / 2)
    assert mask.min() >= 0 and mask.max() <= 1
    assert model.G.mask_branch is None  # no branch: a plain 4-channel head


def test_mask_channel_round_trip():
    image = torch.rand(1, 3, 4, 4) * 2 - 1
    mask = (torch.rand(1, 1, 4, 4) > 0.5).float()
    four = with_mask_channel(image, mask)
    assert four.min() >= -1 and four.max() <= 1 and set(four[:, 3].unique().tolist()) <= {-1, 1}
    back_image, back_mask = split_mask_channel(four)
    assert torch.equal(back_image, image) and torch.equal(back_mask, mask)


def test_networks_see_the_right_channels():
    model = CycleGAN4(**TINY_RESNET)
    assert model.F.trunk.stem[1].in_channels == 4  # F reads image ‖ mask
    assert model.D_X.layers[0].in_channels == 3 and model.D_Y.layers[0].in_channels == 4
    assert not hasattr(model, "D_C")


def test_weights_are_the_loss_configs_and_the_terms_are_classic_cyclegan():
    model = CycleGAN4(**TINY_RESNET, loss={"lambda_cycle": 10.0, "lambda_id": 5.0})
    assert model.weights == {"gan_G": 1.0, "gan_F": 1.0, "cycle": 10.0, "identity": 5.0}
    assert CycleGAN4(**TINY_RESNET).weights["cycle"] == 5.0  # the paper's λ by default
    with pytest.raises(ConfigError, match="lambda_c"):
        CycleGAN4(**TINY_RESNET, loss={"lambda_c": 150.0})
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    y4 = with_mask_channel(x, torch.zeros_like(x[:, :1]))
    terms = model.generator_losses(x, y4, model(x), model.F(y4)[0])
    assert set(terms) == {"gan_G", "gan_F", "cycle", "identity"}


def test_one_batch_steps_g_f_and_both_discriminators_and_the_checkpoint_rebuilds_it():
    torch.manual_seed(0)
    model = CycleGAN4(**TINY_RESNET, pool_size=2)
    nets = {"G": model.G, "F": model.F, "D_X": model.D_X, "D_Y": model.D_Y}
    before = {name: snapshot(net) for name, net in nets.items()}
    trainer = fit(model)
    assert all(changed(before[name], net) for name, net in nets.items())
    assert len(model.pools["Y"]) == 1 and model.pools["Y"].images[0].shape[1] == 4
    assert "train/loss_identity_step" in trainer.callback_metrics
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    clone = rebuilt(model)
    assert all(
        torch.equal(a, b) for a, b in zip(clone.synthesize(x), model.synthesize(x), strict=True)
    )
