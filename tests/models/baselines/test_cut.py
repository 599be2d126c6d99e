"""CUT / FastCUT / NEGCUT: encoder taps, heads, loss terms, optimiser steps, checkpoints."""

from __future__ import annotations

import pytest
import torch

from defectsynth.errors import ConfigError
from defectsynth.models.baselines.cut import (
    CUT,
    CUT_LAYERS,
    NegCUT,
    encoder_features,
    layer_channels,
    resolve_layers,
)
from defectsynth.models.generator import ResNetTrunk
from tests.models.common import TINY_RESNET, changed, fit, rebuilt, snapshot

FASTCUT = {"lambda_nce": 10.0, "identity": False, "flip_equivariance": True}
SMALL_NCE = {"n_patches": 16}


def test_cut_layers_are_the_input_stem_first_down_and_blocks_1_and_5():
    assert resolve_layers(CUT_LAYERS, 9) == ("input", "stem", "down1", "block1", "block5")
    # small networks: block5 becomes the last block, and a layer is never used twice
    assert resolve_layers(CUT_LAYERS, 2) == ("input", "stem", "down1", "block1", "block2")
    assert resolve_layers(CUT_LAYERS, 1) == ("input", "stem", "down1", "block1")
    with pytest.raises(ConfigError, match="'conv3'"):
        resolve_layers(["input", "conv3"], 9)


def test_encoder_features_are_the_trunk_stages_with_the_announced_channels():
    torch.manual_seed(0)
    trunk = ResNetTrunk(3, ngf=4, n_blocks=3).eval()
    x = torch.rand(1, 3, 16, 16)
    layers = ("input", "stem", "down1", "down2", "block1", "block3")
    features = encoder_features(trunk, x, layers)
    assert [f.shape[1] for f in features] == [layer_channels(n, 3, 4) for n in layers]
    assert [f.shape[-1] for f in features] == [16, 16, 8, 4, 4, 4]
    assert torch.equal(features[0], x)
    assert torch.allclose(features[-1], trunk(x))  # the last block is the trunk's output


def test_heads_are_sized_from_the_generator_config():
    model = CUT(**TINY_RESNET)
    x = torch.rand(1, 3, 32, 32)
    for head, feature in zip(model.heads, model.encode(x), strict=True):
        assert head.mlp[0].in_features == feature.shape[1]
        assert head.mlp[-1].out_features == 256
    assert len(model.heads) == 5


def test_cut_has_no_mask_and_generates_images_only():
    model = CUT(**TINY_RESNET)
    assert CUT.has_mask_output is False and CUT.is_image_to_image is True
    image, mask = model.synthesize(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert image.shape == (2, 3, 32, 32) and mask is None
    assert image.abs().max() <= 1
    assert not any(name.startswith("G.mask_branch") for name in model.state_dict())


@pytest.mark.parametrize(
    ("nce", "terms", "total"),
    [
        (
            {},
            {"gan", "nce", "nce_identity"},
            lambda t: t["gan"] + (t["nce"] + t["nce_identity"]) / 2,
        ),
        (FASTCUT, {"gan", "nce"}, lambda t: t["gan"] + 10 * t["nce"]),
    ],
    ids=["cut", "fastcut"],
)
def test_cut_and_fastcut_terms_and_weights(nce, terms, total):
    torch.manual_seed(0)
    model = CUT(**TINY_RESNET, nce={**SMALL_NCE, **nce})
    x, y = torch.rand(2, 1, 3, 32, 32) * 2 - 1
    real = torch.cat([x, y]) if model.nce_config["identity"] else x
    fake = model.G(real, with_mask=False)[0]
    got, patches = model.generator_losses(x, y, fake, flipped=False)
    assert set(got) == terms
    assert len(patches) == len(model.layers) * (len(terms) - 1)
    assert torch.allclose(model.weighted_total(got), total(got))


def test_flip_equivariance_compares_the_flipped_back_output_with_the_source():
    model = CUT(**TINY_RESNET, nce={**SMALL_NCE, "layers": ["input"]})  # identity encoder
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    torch.manual_seed(1)
    straight, _ = model.nce_loss(x, x, flipped=False)
    torch.manual_seed(1)
    flipped, _ = model.nce_loss(x, x.flip(3), flipped=True)
    torch.manual_seed(1)
    not_flipped_back, _ = model.nce_loss(x, x.flip(3), flipped=False)
    assert torch.allclose(flipped, straight)
    assert not_flipped_back > straight


def test_only_fastcut_flips_batches():
    torch.manual_seed(0)
    assert not any(CUT(**TINY_RESNET).flip_this_batch() for _ in range(20))
    fast = CUT(**TINY_RESNET, nce=FASTCUT)
    draws = [fast.flip_this_batch() for _ in range(200)]
    assert 60 < sum(draws) < 140


def test_xavier_is_the_default_init_and_normal_is_an_option():
    torch.manual_seed(0)
    xavier, normal = CUT(**TINY_RESNET), CUT(**TINY_RESNET, init="normal")
    conv = "G.trunk.down.1.0.weight"  # 8 → 16 channels, 3×3: xavier std 0.02·√(2/216) ≈ 0.002
    assert xavier.state_dict()[conv].std() < 0.005 < normal.state_dict()[conv].std()
    with pytest.raises(ConfigError, match=r"model\.init"):
        CUT(**TINY_RESNET, init="kaiming")
    with pytest.raises(ConfigError, match="lambda_typo"):
        CUT(**TINY_RESNET, nce={"lambda_typo": 1})


@pytest.mark.parametrize("cls", [CUT, NegCUT])
def test_one_batch_steps_every_network_and_the_checkpoint_rebuilds_it(cls):
    torch.manual_seed(0)
    options = {"negatives": {"n_negatives": 8}} if cls is NegCUT else {}
    model = cls(**TINY_RESNET, nce=SMALL_NCE, **options)
    groups = model.optimizer_groups()
    assert list(groups) == (["D", "G", "N"] if cls is NegCUT else ["D", "G"])
    nets = {"G": model.G, "D": model.D, "heads": model.heads}
    if cls is NegCUT:
        nets["N"] = model.N
    before = {name: snapshot(net) for name, net in nets.items()}
    trainer = fit(model)
    assert all(changed(before[name], net) for name, net in nets.items())
    logged = set(trainer.callback_metrics)
    assert {"train/loss_nce_step", "train/loss_nce_identity_step", "train/loss_D_step"} <= logged
    assert ("train/loss_N_step" in logged) == (cls is NegCUT)
    clone = rebuilt(model)
    assert type(clone) is cls and clone.layers == model.layers
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert torch.equal(clone.synthesize(x)[0], model.synthesize(x)[0])


def test_negcut_negatives_are_generated_per_layer_and_constant_for_g():
    torch.manual_seed(0)
    model = NegCUT(**TINY_RESNET, nce=SMALL_NCE, negatives={"n_negatives": 8, "noise_dim": 4})
    assert len(model.N) == len(model.layers)
    condition = torch.randn(2, model.layer_channels[1])
    negatives = model.negatives(1, condition)
    assert negatives.shape == (2, 8, 256) and not negatives.requires_grad
    assert CUT(**TINY_RESNET).negatives(1, condition) is None  # CUT: the image's own patches
    with pytest.raises(ConfigError, match=r"model\.negatives"):
        NegCUT(**TINY_RESNET, negatives={"count": 8})
