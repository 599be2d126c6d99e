"""The 4-channel DCGAN: sizes, ranges, the DCGAN layout, losses, latent sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from defectsynth.errors import ConfigError
from defectsynth.models.baselines.dcgan4 import (
    DCGAN4,
    DCGANDiscriminator,
    DCGANGenerator,
    bce_discriminator_loss,
    nonsaturating_generator_loss,
)
from defectsynth.synthesis import SynthesisLayout, read_manifest, synthesize
from tests.models.common import changed, fit, rebuilt, snapshot

TINY = {"generator": {"ngf": 4}, "discriminator": {"ndf": 4}}


@pytest.mark.parametrize("size", [32, 64])
def test_output_shape_and_ranges(size):
    torch.manual_seed(0)
    model = DCGAN4(image_size=size, **TINY)
    image, mask = model.synthesize(model.latents(range(3)))
    assert image.shape == (3, 3, size, size) and mask.shape == (3, 1, size, size)
    assert image.min() >= -1 and image.max() <= 1
    assert mask.min() >= 0 and mask.max() <= 1
    assert model.D(torch.cat([image, mask * 2 - 1], dim=1)).shape == (3,)


def test_64px_is_radfords_network():
    g = DCGANGenerator(64, latent_dim=100, ngf=64)
    convs = [m for m in g.layers if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [
        (100, 512),
        (512, 256),
        (256, 128),
        (128, 64),
        (64, 4),
    ]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in g.layers) == 4
    assert isinstance(g.layers[-1], torch.nn.Tanh)
    d = DCGANDiscriminator(64, ndf=64)
    convs = [m for m in d.layers if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [
        (4, 64),
        (64, 128),
        (128, 256),
        (256, 512),
        (512, 1),
    ]
    assert not isinstance(d.layers[1], torch.nn.BatchNorm2d)  # none on the input layer
    assert all(m.negative_slope == 0.2 for m in d.layers if isinstance(m, torch.nn.LeakyReLU))


def test_larger_images_add_layers_of_capped_width():
    g = DCGANGenerator(256, ngf=64)
    widths = [m.out_channels for m in g.layers if isinstance(m, torch.nn.ConvTranspose2d)]
    assert widths == [512, 512, 512, 256, 128, 64, 4]
    assert g(torch.randn(1, 100)).shape == (1, 4, 256, 256)


@pytest.mark.parametrize("size", [16, 48, 100])
def test_sizes_other_than_4_times_a_power_of_two_are_refused(size):
    with pytest.raises(ConfigError, match=f"data.image_size={size}"):
        DCGAN4(image_size=size)


def test_resnet_options_of_the_shared_presets_are_ignored():
    model = DCGAN4(
        image_size=32,
        generator={"ngf": 4, "n_blocks": 2, "norm": "instance"},
        discriminator={"ndf": 4, "n_layers": 2, "norm": "instance"},
    )
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.G.modules())
    assert not any(isinstance(m, torch.nn.InstanceNorm2d) for m in model.modules())


def test_losses_are_the_original_gans():
    zero = torch.zeros(3)  # D(·) = ½
    assert bce_discriminator_loss(zero, zero).item() == pytest.approx(2 * math.log(2))
    assert nonsaturating_generator_loss(zero).item() == pytest.approx(math.log(2))
    confident = torch.full((3,), 10.0)
    assert bce_discriminator_loss(confident, -confident).item() < 1e-3
    assert nonsaturating_generator_loss(confident).item() < 1e-3


def test_latents_follow_their_seeds():
    model = DCGAN4(image_size=32, **TINY)
    assert torch.equal(model.latents([7, 8])[1], model.latents([8])[0])
    assert not torch.equal(model.latents([7])[0], model.latents([8])[0])
    # an image batch (the training sample grid) gets the codes of seeds 0 … N − 1
    images = torch.zeros(2, 3, 32, 32)
    assert torch.equal(model.synthesize(images)[0], model.synthesize(model.latents([0, 1]))[0])


def test_one_batch_steps_g_and_d_and_the_checkpoint_rebuilds_it():
    torch.manual_seed(0)
    model = DCGAN4(image_size=32, **TINY)
    assert DCGAN4.is_image_to_image is False and DCGAN4.has_mask_output is True
    before = {"G": snapshot(model.G), "D": snapshot(model.D)}
    trainer = fit(model, batches=2)
    assert changed(before["G"], model.G) and changed(before["D"], model.D)
    assert {"train/loss_D_step", "train/loss_G_step"} <= set(trainer.callback_metrics)
    clone = rebuilt(model)
    z = model.latents([3])
    assert all(
        torch.equal(a, b) for a, b in zip(clone.synthesize(z), model.synthesize(z), strict=True)
    )


def test_synthesis_samples_as_many_seeded_items_as_a_translation_would_make(tmp_path):
    torch.manual_seed(0)
    model = DCGAN4(image_size=32, **TINY)
    sources = torch.zeros(3, 3, 32, 32)
    names = [f"src{i}.png" for i in range(3)]
    layout = SynthesisLayout(tmp_path / "a", "tile", "crack")
    rows = synthesize(model, sources, names, layout, n_per_image=5, batch_size=4, seed=10)
    assert len(rows) == 15  # 3 sources × 5, any number per source for a latent model
    manifest = read_manifest(layout.out)
    assert [int(r["seed"]) for r in manifest] == list(range(10, 25))
    assert {r["source"] for r in manifest} == {""} and {r["variant"] for r in manifest} == {
        "latent"
    }
    assert all(r["mask"] and r["soft_mask"] for r in manifest)
    assert layout.grid.is_file()
    # item 4 is the sample of seed 14, whatever batch it was made in
    image, _ = model.synthesize(model.latents([14]))
    written = np.asarray(Image.open(layout.out / manifest[4]["image"])).astype(np.float32)
    expected = ((image[0].permute(1, 2, 0) + 1) * 127.5).numpy()
    assert np.abs(written - expected).max() <= 1
    # a repeated run in another folder writes the same files
    other = SynthesisLayout(tmp_path / "b", "tile", "crack")
    synthesize(model, sources, names, other, n_per_image=5, batch_size=7, seed=10)
    for row in manifest:
        a, b = (Image.open(root / row["image"]) for root in (layout.out, other.out))
        assert np.array_equal(np.asarray(a), np.asarray(b))
