"""The controllable model: its loss terms on hand-made cases, its inputs (request, code, type)
each changing the output, determinism per seed, self-contained checkpoints, a training step."""

from __future__ import annotations

import copy
import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from defectsynth.errors import ConfigError
from defectsynth.models import losses
from defectsynth.models.defect_gan import DefectGAN
from defectsynth.models.defect_gan_control import DefectGANControl
from defectsynth.models.generator import ControllableGenerator, DefectGenerator
from tests.models.common import rebuilt

TINY = {"generator": {"ngf": 4, "n_blocks": 1}, "discriminator": {"ndf": 4, "n_layers": 2}}
SIZE = 16


def box(n: int, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    """``n`` random axis-aligned rectangles, (n, 1, size, size) in {0, 1}."""
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(n, 1, size, size)
    for i in range(n):
        y, x = torch.randint(0, size - 5, (2,), generator=g).tolist()
        h, w = torch.randint(3, 6, (2,), generator=g).tolist()
        out[i, 0, y : y + h, x : x + w] = 1
    return out


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ----------------------------------------------------------------------------- loss terms
def test_mask_follow_loss_values():
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :] = 1
    half = torch.full_like(target, 0.5)
    assert losses.mask_follow_loss(half, target, "bce") == pytest.approx(math.log(2), rel=1e-5)
    # Dice of 0.5 everywhere vs 8 of 16 pixels: 1 − (2·4 + 1) / (8 + 8 + 1)
    assert losses.mask_follow_loss(half, target, "dice") == pytest.approx(1 - 9 / 17)
    assert losses.mask_follow_loss(target, target, "dice") == pytest.approx(0.0, abs=1e-6)
    assert losses.mask_follow_loss(target, target, "bce") < 1e-5
    both = losses.mask_follow_loss(half, target, "bce_dice")
    assert both == pytest.approx(math.log(2) + 1 - 9 / 17, rel=1e-5)
    with pytest.raises(ValueError, match="focal"):
        losses.mask_follow_loss(half, target, "focal")


def test_preservation_loss_counts_changes_outside_the_request_only():
    x = torch.zeros(1, 3, 4, 4)
    requested = torch.zeros(1, 1, 4, 4)
    requested[..., :2, :] = 1
    inside = x + requested  # changed where requested: free
    assert losses.preservation_loss(x, inside, requested) == 0
    everywhere = x + 1  # changed on the 8 of 16 pixels outside as well
    assert losses.preservation_loss(x, everywhere, requested) == pytest.approx(0.5)


def test_mode_seeking_loss_is_a_hinge_on_the_distance_ratio_inside_the_region():
    a, b = torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 0.5)
    za, zb = torch.zeros(2, 8), torch.ones(2, 8)
    # image distance 0.5 per code distance 1: half of the target 1.0 → 0.5; at the target → 0
    assert losses.mode_seeking_loss(a, b, za, zb, target=1.0) == pytest.approx(0.5, rel=1e-4)
    assert losses.mode_seeking_loss(a, b, za, zb, target=0.5) == pytest.approx(0.0, abs=1e-6)
    # the same image for both codes is the worst case, and it is bounded
    assert losses.mode_seeking_loss(a, a, za, zb) == pytest.approx(1.0)
    # inside a region: a change on its 4 of 16 pixels counts fully, not diluted by the rest
    region = torch.zeros(2, 1, 4, 4)
    region[..., :2, :2] = 1
    local = a.clone()
    local[..., :2, :2] = 0.5
    assert losses.mode_seeking_loss(a, local, za, zb, region, 1.0) == pytest.approx(0.5, rel=1e-4)
    diluted = losses.mode_seeking_loss(a, local, za, zb, None, 1.0)
    assert diluted == pytest.approx(1 - 0.125, rel=1e-4)
    # the gradient pushes the two outputs apart while below the target
    b_var = b.clone().requires_grad_(True)
    losses.mode_seeking_loss(a, b_var, za, zb, target=1.0).backward()
    assert (b_var.grad < 0).all()
    with pytest.raises(ValueError, match="target"):
        losses.mode_seeking_loss(a, b, za, zb, target=0.0)


# ----------------------------------------------------------------------------- structure
def test_shapes_terms_and_the_paper_model_untouched():
    model = DefectGANControl(**TINY, control={"z_dim": 4})
    x, requested = images(2), box(2)
    image, mask = model(x, requested, torch.randn(2, 4))
    assert image.shape == (2, 3, SIZE, SIZE) and mask.shape == (2, 1, SIZE, SIZE)
    assert isinstance(model.G, ControllableGenerator) and model.F.mask_branch is None
    assert set(model.weights) == {
        "gan_G",
        "gan_F",
        "cycle",
        "identity",
        "coherence",
        "background",
        "mask_follow",
        "preserve",
        "diversity",
    }
    # the paper's generator and model: no new parameter
    paper = DefectGAN(**TINY)
    assert type(paper.G) is DefectGenerator and not hasattr(paper.G, "film")
    assert sum(p.numel() for p in paper.G.parameters()) == sum(
        p.numel() for p in DefectGenerator(ngf=4, n_blocks=1).parameters()
    )


@pytest.mark.parametrize("term", ["mask_follow", "preserve", "diversity"])
def test_each_control_term_can_be_switched_off(term):
    model = DefectGANControl(**TINY, control={term: False})
    assert term not in model.weights
    batch = batch_of(2)
    types = None
    z = torch.randn(2, 8)
    fake_y, fake_mask = model.G(batch["normal"], batch["requested_mask"], z, types)
    fake_x, _ = model.F(batch["defect"], with_mask=False)
    terms = model.control_losses(
        batch["normal"],
        batch["defect"],
        batch["mask"],
        batch["requested_mask"],
        z,
        types,
        fake_y,
        fake_mask,
        fake_x,
    )
    assert set(terms) == set(model.weights)


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match=r"model\.control"):
        DefectGANControl(**TINY, control={"lamda_mask": 1.0})
    with pytest.raises(ConfigError, match="mask_loss"):
        DefectGANControl(**TINY, control={"mask_loss": "focal"})
    with pytest.raises(ConfigError, match="diversity_target"):
        DefectGANControl(**TINY, control={"diversity_target": 0})


# ----------------------------------------------------------------------------- inputs matter
def test_codes_requests_and_types_each_change_the_output_and_seeds_repeat():
    torch.manual_seed(0)
    model = DefectGANControl(**TINY, control={"z_dim": 4, "n_types": 2}).eval()
    x, requested = images(1), box(1)
    z = model.codes([7])
    assert torch.equal(z, model.codes([7])) and not torch.equal(z, model.codes([8]))
    t0, t1 = torch.tensor([0]), torch.tensor([1])
    with torch.no_grad():
        base, base_mask = model(x, requested, z, t0)
        again, _ = model(x, requested, model.codes([7]), t0)
        other_code, _ = model(x, requested, model.codes([8]), t0)
        other_type, _ = model(x, requested, z, t1)
        other_place, other_mask = model(x, box(1, seed=3), z, t0)
    assert torch.equal(base, again)
    for changed in (other_code, other_type, other_place):
        assert (changed - base).abs().max() > 1e-4
    assert (other_mask - base_mask).abs().max() > 1e-4
    with pytest.raises(ValueError, match="defect_type"):
        model(x, requested, z)


def test_fallback_masks_are_stored_real_masks_per_seed_and_type():
    model = DefectGANControl(**TINY, control={"n_types": 2})
    with pytest.raises(ConfigError, match="requested_masks"):
        model.fallback_masks([0])
    masks = box(4)
    model.store_mask_bank([m[0] for m in masks], [0, 0, 1, 1])
    a, types = model.fallback_masks([1, 2, 3], [1, 1, 1])
    b, _ = model.fallback_masks([1, 2, 3], [1, 1, 1])
    assert torch.equal(a, b) and types.tolist() == [1, 1, 1]
    # each is a type-1 mask, flipped/rotated: same area as one of them
    areas = {float(masks[i].sum()) for i in (2, 3)}
    assert all(float(m.sum()) in areas for m in a)
    # generate(x) needs no controls: the stored masks and a random code
    image, mask = model.eval().generate(images(3))
    assert image.shape == (3, 3, SIZE, SIZE) and mask.shape == (3, 1, SIZE, SIZE)
    # a checkpoint rebuilds the model with its mask bank and types
    clone = rebuilt(model)
    assert torch.equal(clone.mask_bank, model.mask_bank) and clone.n_types == 2


def test_a_request_is_honoured_after_a_short_fit_and_would_not_be_without_the_mask_input():
    """Train G alone on the two supervised control terms over random rectangles: on unseen
    rectangles its mask follows the request and less changes outside. A G that
    ignored its mask input could not place an unseen random rectangle (IoU near 0)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: threads only contend (~20× faster here)
    try:
        torch.manual_seed(0)
        model = DefectGANControl(
            generator={"ngf": 8, "n_blocks": 1}, control={"z_dim": 4, "gate_mask": False}
        )
        opt = torch.optim.Adam(model.G.parameters(), lr=3e-3)
        # unseen requests on the fitted images (4 noise images are memorised, not generalised)
        x, test = images(4), box(8, seed=10_000)
        x_test = x.repeat(2, 1, 1, 1)

        def on_test() -> tuple[float, float]:
            with torch.no_grad():
                image, mask = model.G(x_test, test, torch.randn(8, 4))
            hard, want = mask >= 0.5, test > 0
            iou = float((hard & want).sum() / (hard | want).sum())
            outside = (image - x_test).abs() * (1 - test)
            return iou, float(outside.sum() / ((1 - test).sum() * 3))

        _, untrained = on_test()
        for step in range(300):
            requested = box(4, seed=step)
            image, mask = model.G(x, requested, torch.randn(4, 4))
            loss = losses.mask_follow_loss(mask, requested)
            loss = loss + 10 * losses.preservation_loss(x, image, requested)
            opt.zero_grad()
            loss.backward()
            opt.step()
        iou, outside = on_test()
        assert iou > 0.5, iou  # measured 0.77
        # noise images are the hardest to copy; the preservation term still cuts the change
        assert outside < 0.5 * untrained, (outside, untrained)
    finally:
        torch.set_num_threads(threads)


def test_a_gated_mask_never_leaves_the_request_and_an_ungated_one_can():
    """gate_mask (the default): whatever the weights, G's mask and — pasted — its changes are
    zero outside the request; inside, the branch still decides (the mask is not the request)."""
    torch.manual_seed(0)
    x, requested = images(3), box(3)
    for gate in (True, False):
        model = DefectGANControl(
            **TINY, control={"z_dim": 4, "gate_mask": gate}, stabilize={"compose": "paste"}
        ).eval()
        with torch.no_grad():
            image, mask = model(x, requested, model.codes([1, 2, 3]))
        outside = requested == 0
        if gate:
            assert mask[outside].max() == 0 and torch.equal(image * outside, x * outside)
            inside = mask[~outside]
            assert inside.std() > 0 and not torch.equal(inside, torch.ones_like(inside))
        else:
            assert mask[outside].max() > 0.1


def test_code_map_feeds_the_code_as_a_spatial_field():
    """code_map=true: the code is also a smooth (8×8, up-sampled) input channel, so two codes
    give two different inputs at every pixel, not only a per-channel scale."""
    torch.manual_seed(0)
    model = DefectGANControl(**TINY, control={"z_dim": 4, "code_map": True}).eval()
    assert model.G.trunk.stem[1].in_channels == 5 and model.G.code_map is not None
    field = model.G.code_map(model.codes([1])).view(1, 1, 8, 8)
    assert 0.3 < float(field.std()) < 3.0  # a unit-variance field at initialisation
    x, requested = images(1), box(1)
    with torch.no_grad():
        a, _ = model(x, requested, model.codes([1]))
        b, _ = model(x, requested, model.codes([2]))
    assert (a - b).abs().max() > 1e-4
    plain = DefectGANControl(**TINY, control={"z_dim": 4})
    assert plain.G.code_map is None and plain.G.trunk.stem[1].in_channels == 4


def test_decoder_modulation_lets_the_code_reach_the_pixels_after_every_normalisation():
    """modulate_decoder=true: each image up-sampling block scales and shifts its normalised
    features by the code (AdaIN). With the trunk FiLM silenced, codes change the output only
    through that path; a zero modulation is the plain block."""
    torch.manual_seed(0)
    model = DefectGANControl(**TINY, control={"z_dim": 4, "modulate_decoder": True}).eval()
    films = model.G.decoder_film
    assert films is not None and [f.out_features for f in films] == [2 * 8, 2 * 4]
    for layer in (model.G.film, *films):
        torch.nn.init.zeros_(layer.weight)
    x, requested = images(1), box(1)
    codes = model.codes([1, 2])
    with torch.no_grad():
        same = [model(x, requested, codes[i : i + 1])[0] for i in range(2)]
        assert torch.equal(same[0], same[1])  # no path from the code left
        torch.nn.init.normal_(films[-1].weight, 0.0, 0.5)
        a, _ = model(x, requested, codes[:1])
        b, _ = model(x, requested, codes[1:])
    assert (a - b).abs().max() > 1e-3
    block = model.G.image_branch.up[0]
    h = torch.randn(2, 16, 4, 4)
    zero = (torch.zeros(2, 8), torch.zeros(2, 8))
    assert torch.allclose(block(h, zero), block(h))
    plain = DefectGANControl(**TINY, control={"z_dim": 4})
    assert plain.G.decoder_film is None


# ----------------------------------------------------------------------------- training
class ControlBatches(Dataset):
    def __init__(self, n: int = 2, types: bool = False) -> None:
        self.items = [batch_of(1, seed=i, types=types, squeeze=True) for i in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def batch_of(n: int, seed: int = 0, types: bool = False, squeeze: bool = False) -> dict:
    g = torch.Generator().manual_seed(seed)
    batch = {
        "normal": torch.rand(n, 3, SIZE, SIZE, generator=g) * 2 - 1,
        "defect": torch.rand(n, 3, SIZE, SIZE, generator=g) * 2 - 1,
        "mask": box(n, seed=seed + 100),
        "requested_mask": box(n, seed=seed + 200),
    }
    if types:
        batch["defect_type"] = torch.randint(2, (n,), generator=g)
    return {k: v[0] for k, v in batch.items()} if squeeze else batch


def fit(model: L.LightningModule, dataset: Dataset) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, DataLoader(dataset, batch_size=2))
    return trainer


@pytest.mark.parametrize("types", [False, True])
def test_a_training_step_moves_every_network_and_logs_the_control_terms(types):
    torch.manual_seed(0)
    model = DefectGANControl(**TINY, control={"n_types": 2 if types else None})
    before = copy.deepcopy(model.state_dict())
    trainer = fit(model, ControlBatches(2, types=types))
    for name in ("G", "F", "D_X", "D_Y", "D_C"):
        moved = [
            not torch.equal(before[k], v)
            for k, v in model.state_dict().items()
            if k.startswith(name + ".") and v.dtype.is_floating_point
        ]
        assert any(moved), name
    logged = trainer.logged_metrics
    for key in ("mask_follow", "preserve", "diversity", "G_total"):
        assert torch.isfinite(logged[f"train/loss_{key}_step"])
    assert 0 <= float(logged["train/mask_iou_step"]) <= 1


def test_a_batch_without_requested_masks_names_the_option():
    model = DefectGANControl(**TINY)
    items = [{k: v for k, v in batch_of(1, squeeze=True).items() if k != "requested_mask"}]
    with pytest.raises(ConfigError, match=r"data\.requested_masks=true"):
        fit(model, items)  # type: ignore[arg-type]


def test_resume_after_an_epoch_ends_with_the_uninterrupted_weights(tmp_path):
    """Codes, ADA's p and the warm-up counter all resume from the checkpoint:
    a run resumed after epoch 1 ends bit-for-bit where the uninterrupted run does."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    options = {
        **TINY,
        "control": {"n_types": 2},
        "d_augment": {"mode": "ada", "p": 0.5, "interval": 1, "speed_batches": 20},
        "stabilize": {"warmup_batches": 3, "compose": "blend"},
        "pool_size": 2,
    }
    data = DataLoader(ControlBatches(3, types=True), batch_size=1)

    def trainer(root, **kwargs) -> L.Trainer:
        return L.Trainer(
            accelerator="cpu", max_epochs=2, default_root_dir=root, logger=False,
            enable_progress_bar=False, enable_model_summary=False, deterministic=True, **kwargs,
        )  # fmt: skip

    L.seed_everything(10)
    straight = DefectGANControl(**options)
    initial = copy.deepcopy(straight.state_dict())
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    trainer(tmp_path / "a", callbacks=[saver]).fit(straight, data)
    first = sorted((tmp_path / "ckpt").glob("*.ckpt"))[0]

    L.seed_everything(99)  # the checkpoint, not this, must decide what happens next
    resumed = DefectGANControl(**options)
    resumed.load_state_dict(initial)
    trainer(tmp_path / "b", enable_checkpointing=False).fit(resumed, data, ckpt_path=first)
    after = straight.state_dict()
    for key, value in resumed.state_dict().items():
        assert torch.equal(value, after[key]), key
