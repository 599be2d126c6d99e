"""Discriminator augmentation (DiffAugment / ADA) and the low-data stabilisers."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader

from defectsynth.errors import ConfigError
from defectsynth.models import losses
from defectsynth.models.baselines.cut import CUT, NegCUT
from defectsynth.models.baselines.cyclegan4 import CycleGAN4
from defectsynth.models.baselines.dcgan4 import DCGAN4
from defectsynth.models.d_augment import DiscriminatorAugment
from defectsynth.models.defect_gan import DefectGAN
from tests.helpers import run_script
from tests.models.common import TINY_RESNET, FakeBatches, fit

TINY = {"generator": {"ngf": 4, "n_blocks": 1}, "discriminator": {"ndf": 4, "n_layers": 2}}
DIFFAUG = {"mode": "diffaugment", "p": 1.0}
GEOMETRIC = {"mode": "diffaugment", "p": 1.0, "ops": ["translation", "affine"]}


class Recorder(nn.Module):
    """A 'discriminator' that keeps what it was shown and scores it by its mean."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.scale * x.mean(dim=(1, 2, 3), keepdim=True)


def pattern(n: int = 1, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """An image in [-1, 1] and a binary mask of its bright blobs (mask = image channel 0 > 0)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, size // 8, size // 8, generator=g) * 2 - 1
    image = nn.functional.interpolate(low, size=size, mode="bilinear", align_corners=False)
    return image, (image[:, :1] > 0).float()


def summary(x: torch.Tensor) -> torch.Tensor:
    """Per-sample statistics an augmentation changes: mean, std, share of exact zeros."""
    flat = x.flatten(1)
    return torch.stack([flat.mean(1), flat.std(1), (flat == 0).float().mean(1)], dim=1)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------ distribution and alignment
def test_real_and_fake_inputs_get_the_same_augmentation_distribution_in_both_steps():
    torch.manual_seed(0)
    model = DefectGAN(**TINY, d_augment=DIFFAUG)
    D = Recorder()
    image, _ = pattern(1, 32)
    real_stats, fake_stats, g_stats = [], [], []
    for _ in range(200):
        D.seen.clear()
        model.discriminator_loss("D_Y", D, image, image)  # same tensor as real and as fake
        real_seen, fake_seen = D.seen
        real_stats.append(summary(real_seen))
        fake_stats.append(summary(fake_seen))
        D.seen.clear()
        model.judge("D_Y", D, image)  # the G step's call
        g_stats.append(summary(D.seen[0]))
    real, fake, gen = (torch.cat(s) for s in (real_stats, fake_stats, g_stats))
    # augmented at all, and independently for real and fake (not one draw reused)
    assert (real - summary(image)).abs().max() > 0.1
    assert not torch.allclose(real, fake)
    # same distribution: means and spreads of each statistic agree within sampling error
    for other in (fake, gen):
        stderr = real.std(0) / 200**0.5
        assert ((real.mean(0) - other.mean(0)).abs() <= 5 * stderr + 1e-3).all()
        assert torch.allclose(real.std(0), other.std(0), rtol=0.3, atol=1e-3)


def test_mask_follows_its_image_through_every_geometric_transform():
    torch.manual_seed(1)
    augment = DiscriminatorAugment(GEOMETRIC)
    image, _ = pattern(8, 32)
    mask = (image[:, :1] + 1) / 2  # a linear function of the image: interpolation preserves it
    out = augment.augment("D_C", torch.cat([image, mask], 1))
    assert not torch.allclose(out[:, :3], image, atol=1e-3)  # it did move
    torch.testing.assert_close(out[:, 3:], (out[:, :1] + 1) / 2, atol=1e-5, rtol=0)


def test_cutout_erases_image_and_mask_at_the_same_place_and_colour_leaves_the_mask_alone():
    torch.manual_seed(2)
    image, mask = pattern(8, 32)
    x = torch.cat([image + 3.0, mask + 1.0], 1)  # no exact zeros before the cut-out
    out = DiscriminatorAugment({"mode": "diffaugment", "p": 1.0, "ops": ["cutout"]}).augment(
        "D_C", x
    )
    erased = out == 0
    assert erased.any()
    assert torch.equal(erased[:, 0], erased[:, 3])  # the same square in image and mask
    out = DiscriminatorAugment({"mode": "diffaugment", "p": 1.0, "ops": ["color"]}).augment(
        "D_C", torch.cat([image, mask], 1)
    )
    assert torch.equal(out[:, 3:], mask)
    assert not torch.allclose(out[:, :3], image, atol=1e-2)


def test_mode_none_is_the_identity_and_draws_no_random_numbers():
    x = torch.rand(2, 4, 8, 8)
    state = torch.get_rng_state()
    augment = DiscriminatorAugment(None)
    assert augment.augment("D_C", x) is x
    assert torch.equal(state, torch.get_rng_state())  # the paper's runs are unchanged


def test_augmentation_draws_from_its_own_generator_not_the_global_one():
    torch.manual_seed(11)
    augment = DiscriminatorAugment(DIFFAUG)
    saved = augment.state_dict()["rng"].clone()
    x = torch.rand(2, 4, 16, 16)
    state = torch.get_rng_state()
    first = augment.augment("D_C", x)
    assert torch.equal(state, torch.get_rng_state())  # global stream untouched
    torch.rand(100)  # another user of the global RNG (a DataLoader's base seed, ...)
    augment.load_state_dict({"rng": saved})
    assert torch.equal(augment.augment("D_C", x), first)  # replayed from its own state


def test_gradients_flow_through_the_augmentation_into_the_generator():
    torch.manual_seed(3)
    x = torch.rand(2, 4, 16, 16, requires_grad=True)
    out = DiscriminatorAugment(DIFFAUG).augment("D_C", x)
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert x.grad[:, 3].abs().sum() > 0  # the mask channel too

    model = DefectGAN(**TINY, d_augment=DIFFAUG)
    normal, defect = torch.rand(1, 3, 16, 16) * 2 - 1, torch.rand(1, 3, 16, 16) * 2 - 1
    fake_y, fake_mask = model.G(normal)
    fake_x, _ = model.F(defect)
    terms = model.generator_losses(
        normal, defect, fake_y, fake_mask, fake_x, (defect[:, :1] > 0).float()
    )
    terms["coherence"].backward()
    grads = [p.grad for p in model.G.mask_branch.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0


# ------------------------------------------------------------------ ADA
def toy_run(overfit: bool, steps: int = 40) -> list[float]:
    """A tiny D trained on two fixed smooth real images against fresh noise (it tells them
    apart within a few steps), or a frozen D that calls everything fake; returns ADA's p after
    each batch."""
    torch.manual_seed(4)
    augment = DiscriminatorAugment(
        {"mode": "ada", "p": 0.0 if overfit else 0.5, "interval": 2, "speed_batches": 20}
    )
    D = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(8, 1, 3))
    opt = torch.optim.Adam(D.parameters(), lr=1e-2)
    reals, _ = pattern(2, 16)
    trace = []
    for _ in range(steps):
        augment.update()
        real = augment.augment("D", reals)
        fake = augment.augment("D", torch.rand(2, 3, 16, 16) * 2 - 1)
        pred_real = D(real) if overfit else D(real) * 0 - 1  # frozen: every real scored −1
        augment.observe("D", pred_real)
        if overfit:
            opt.zero_grad()
            losses.lsgan_discriminator_loss(pred_real, D(fake)).backward()
            opt.step()
        trace.append(augment.p("D"))
    return trace


def test_ada_raises_p_when_the_discriminator_overfits_and_lowers_it_when_not():
    rising = toy_run(overfit=True)
    assert rising[0] == 0.0 and rising[-1] >= 0.4
    falling = toy_run(overfit=False)
    assert falling[0] == 0.5 and falling[-1] == pytest.approx(0.0)
    assert all(b <= a for a, b in itertools.pairwise(falling))
    assert all(0.0 <= p <= 1.0 for p in rising + falling)


def test_ada_state_round_trips_through_the_checkpoint():
    model = DefectGAN(**TINY, d_augment={"mode": "ada"})
    model.d_augment.pipeline("D_C").set_p(0.37)
    model.d_augment.observe("D_Y", torch.ones(1, 1, 4, 4))
    model.batches_seen = 123
    checkpoint: dict = {}
    model.on_save_checkpoint(checkpoint)
    clone = DefectGAN(**TINY, d_augment={"mode": "ada"})
    clone.on_load_checkpoint(checkpoint)
    assert clone.d_augment.p("D_C") == pytest.approx(0.37)
    assert clone.d_augment.pipeline("D_C").cutout.p == pytest.approx(0.37)
    assert clone.d_augment.pending == model.d_augment.pending
    assert clone.batches_seen == 123


def trainer_for(tmp_path: Path, epochs: int, **options) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        **options,
    )


def test_resume_with_ada_warmup_and_r1_ends_with_the_uninterrupted_weights(tmp_path):
    """p, its pending r_t statistics and the batch counter are checkpointed: a run resumed
    after epoch 1 ends exactly where the uninterrupted run does (with p having moved)."""
    options = {
        **TINY,
        # p starts mid-way and moves ±0.05 per batch: augmentation is on in every batch
        "d_augment": {"mode": "ada", "p": 0.5, "interval": 1, "speed_batches": 20},
        "stabilize": {"warmup_batches": 5, "r1_gamma": 0.1, "mask_match": "binarize"},
        "pool_size": 2,
    }
    data = DataLoader(FakeBatches(3, 16), batch_size=1)
    torch.manual_seed(10)
    straight = DefectGAN(**options)
    initial = {k: v.clone() for k, v in straight.state_dict().items()}
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    trainer_for(tmp_path / "a", 2, logger=False, callbacks=[saver]).fit(straight, data)
    first = sorted((tmp_path / "ckpt").glob("*.ckpt"))[0]

    torch.manual_seed(99)  # the checkpoint, not this, must decide what happens next
    resumed = DefectGAN(**options)
    resumed.load_state_dict(initial)
    trainer_for(tmp_path / "b", 2, logger=False, enable_checkpointing=False).fit(
        resumed, data, ckpt_path=first
    )
    assert resumed.batches_seen == straight.batches_seen == 6
    for name in ("D_X", "D_Y", "D_C"):
        assert 0.2 <= straight.d_augment.p(name) <= 0.8
        # 5 updates of ±0.05 (before batches 2–6: the first has no statistics yet), an odd count
        assert straight.d_augment.p(name) != pytest.approx(0.5)
        assert resumed.d_augment.p(name) == straight.d_augment.p(name)
    after = straight.state_dict()
    for key, value in resumed.state_dict().items():
        assert torch.equal(value, after[key]), key


def test_r_t_and_p_are_logged_every_epoch(tmp_path):
    torch.manual_seed(5)
    model = DefectGAN(**TINY, d_augment={"mode": "ada", "interval": 1, "speed_batches": 2})
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=CSVLogger(tmp_path),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(model, DataLoader(FakeBatches(3, 16), batch_size=1))
    rows = read_csv(next(tmp_path.rglob("metrics.csv")))
    for key in ("daug/rt_D_X", "daug/rt_D_Y", "daug/rt_D_C", "daug/p_D_C"):
        values = [float(r[key]) for r in rows if r.get(key)]
        assert len(values) == 2, key  # one per epoch
        assert all(-1.0 <= v <= 1.0 for v in values)


# ------------------------------------------------------------------ stabilisers
def test_warmup_ramps_only_the_mask_terms_from_zero():
    model = DefectGAN(**TINY, stabilize={"warmup_batches": 10})
    model.batch_step = 0
    at_start = model.weights
    assert at_start["coherence"] == 0.0 and at_start["background"] == 0.0
    assert at_start["identity"] == 10.0 and at_start["cycle"] == 5.0
    model.batch_step = 5
    assert model.weights["coherence"] == pytest.approx(75.0)
    model.batch_step = 50
    assert model.weights["coherence"] == 150.0 and model.weights["background"] == 0.05
    assert DefectGAN(**TINY).weights["coherence"] == 150.0  # off by default


def test_warmup_follows_the_batches_trained():
    torch.manual_seed(6)
    model = DefectGAN(**TINY, stabilize={"warmup_batches": 4})
    fit(model, batches=3, size=16, epochs=1)
    assert model.batches_seen == 3 and model.batch_step == 2
    assert model.warmup() == pytest.approx(0.5)


def test_r1_penalty_is_positive_differentiable_and_added_to_the_d_loss():
    torch.manual_seed(7)
    D = nn.Sequential(nn.Conv2d(3, 4, 3), nn.LeakyReLU(0.2), nn.Conv2d(4, 1, 3))
    real = torch.rand(2, 3, 12, 12, requires_grad=True)
    penalty = losses.r1_penalty(D(real), real)
    assert penalty > 0
    penalty.backward()
    # the weights (biases shift D's output, not its slope)
    weights = [p for p in D.parameters() if p.dim() > 1]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in weights)

    fake = torch.rand(2, 3, 12, 12)
    plain = DefectGAN(**TINY).discriminator_loss("D_X", D, real.detach(), fake)
    regular = DefectGAN(**TINY, stabilize={"r1_gamma": 2.0}).discriminator_loss(
        "D_X", D, real.detach(), fake
    )
    assert "r1_D_X" not in plain[1]
    r1 = regular[1]["r1_D_X"]
    torch.testing.assert_close(regular[0], plain[0] + r1)  # γ/2 · R1 with γ = 2


def test_binarize_gives_d_c_a_hard_fake_mask_with_a_straight_through_gradient():
    model = DefectGAN(**TINY, stabilize={"mask_match": "binarize"})
    image = torch.rand(1, 3, 8, 8) * 2 - 1
    soft = torch.rand(1, 1, 8, 8, requires_grad=True)
    fake = model.coherence_view(image, soft, real=False)
    assert set(fake[:, 3].unique().tolist()) <= {0.0, 1.0}
    fake[:, 3].sum().backward()
    assert torch.equal(soft.grad, torch.ones_like(soft))
    real_mask = (torch.rand(1, 1, 8, 8) > 0.5).float()
    assert torch.equal(model.coherence_view(image, real_mask, real=True)[:, 3:], real_mask)


def test_blur_softens_real_and_fake_masks_alike():
    model = DefectGAN(**TINY, stabilize={"mask_match": "blur", "mask_blur_sigma": 1.0})
    image = torch.zeros(1, 3, 16, 16)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 6:10, 6:10] = 1
    real = model.coherence_view(image, mask, real=True)[:, 3:]
    fake = model.coherence_view(image, mask, real=False)[:, 3:]
    assert torch.equal(real, fake)
    values = real.unique()
    assert ((values > 0.01) & (values < 0.99)).any()  # edges are no longer hard


def test_masked_image_view_hides_the_image_outside_the_mask():
    model = DefectGAN(**TINY, stabilize={"coherence_view": "masked_image"})
    image = torch.rand(1, 3, 8, 8) + 0.5
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4, :] = 1
    view = model.coherence_view(image, mask, real=True)
    assert torch.equal(view[:, :3, 4:], torch.zeros(1, 3, 4, 8))
    assert torch.equal(view[:, :3, :4], image[:, :, :4])
    paper = DefectGAN(**TINY).coherence_view(image, mask, real=True)
    assert torch.equal(paper, losses.coherence_input(image, mask))


def test_blend_keeps_the_source_where_the_mask_is_off_and_paints_where_it_is_on():
    torch.manual_seed(3)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    paper = DefectGAN(**TINY)
    blend = DefectGAN(**TINY, stabilize={"compose": "blend"})
    blend.load_state_dict(paper.state_dict())
    raw, mask = paper(x)
    out, same_mask = blend(x)
    assert torch.equal(mask, same_mask)
    assert torch.allclose(out, mask * raw + (1 - mask) * x, atol=1e-6)
    # a mask head pushed to "off" everywhere returns the source; the paper's G would not
    head = blend.G.mask_branch.head[1]
    with torch.no_grad():
        head.bias.fill_(-30.0)
    assert torch.allclose(blend(x)[0], x, atol=1e-6)
    paper.G.mask_branch.head[1].bias.data.fill_(-30.0)
    assert (paper(x)[0] - x).abs().mean() > 0.1
    # the mask gets a gradient from the image losses through the composition
    blend.G.zero_grad()
    head.bias.data.fill_(0.0)
    image, _ = blend.translate(x, with_mask=False)
    image.square().mean().backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def test_paste_keeps_the_exact_source_below_half_and_passes_the_soft_gradient():
    torch.manual_seed(4)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    model = DefectGAN(**TINY, stabilize={"compose": "paste"})
    raw, mask = model.G(x)
    out, _ = model(x)
    off = (mask < 0.5).expand_as(x)
    assert 0 < off.float().mean() < 1  # both regions present at this seed
    assert torch.equal(out[off], x[off])
    assert torch.allclose(out[~off], raw[~off])
    model.zero_grad()
    model.translate(x, with_mask=False)[0].sum().backward()
    assert model.G.mask_branch.head[1].weight.grad.abs().sum() > 0


def test_compose_inverse_lets_f_repair_only_where_its_own_mask_marks():
    torch.manual_seed(5)
    y = torch.rand(1, 3, 16, 16) * 2 - 1
    model = DefectGAN(**TINY, stabilize={"compose": "blend", "compose_inverse": True})
    raw, f_mask = model.F(y)
    assert torch.allclose(model.restore(y), f_mask * raw + (1 - f_mask) * y, atol=1e-6)
    paper = DefectGAN(**TINY)
    assert torch.equal(paper.restore(y), paper.F(y, with_mask=False)[0])
    with pytest.raises(ConfigError, match="compose=blend"):
        DefectGAN(**TINY, stabilize={"compose_inverse": True})


# ------------------------------------------------------------------ every model, config errors
@pytest.mark.parametrize(
    ("cls", "options"),
    [
        (CycleGAN4, TINY_RESNET),
        (DCGAN4, {"image_size": 32, "generator": {"ngf": 4}, "discriminator": {"ndf": 4}}),
        (CUT, {**TINY_RESNET, "nce": {"n_patches": 8, "head_width": 8}}),
        (NegCUT, {**TINY_RESNET, "nce": {"n_patches": 8, "head_width": 8}}),
    ],
)
def test_every_baseline_trains_with_augmentation_and_r1(cls, options):
    torch.manual_seed(8)
    model = cls(**options, d_augment=DIFFAUG, stabilize={"r1_gamma": 0.1})
    fit(model, batches=1, size=32)
    assert model.d_augment.epoch == {}  # logged and reset at the epoch's end
    assert set(model.d_augment.pipelines)  # its discriminators went through it


@pytest.mark.parametrize(
    ("options", "names"),
    [
        ({"d_augment": {"mode": "diffusion"}}, "model.d_augment.mode"),
        ({"d_augment": {"mode": "ada", "ops": ["zoom"]}}, "model.d_augment.ops"),
        ({"d_augment": {"mode": "ada", "targte": 0.6}}, "targte"),
        ({"d_augment": {"mode": "diffaugment", "p": 0.0}}, "p > 0"),
        ({"d_augment": {"mode": "ada", "target": 1.5}}, "model.d_augment.target"),
        ({"stabilize": {"coherence_view": "mask"}}, "model.stabilize.coherence_view"),
        ({"stabilize": {"mask_match": "sharpen"}}, "model.stabilize.mask_match"),
        ({"stabilize": {"compose": "stamp"}}, "model.stabilize.compose"),
        ({"stabilize": {"warmup": 3}}, "model.stabilize"),
        ({"stabilize": {"r1_gamma": -1}}, "r1_gamma"),
    ],
)
def test_bad_options_are_config_errors_naming_the_option(options, names):
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        DefectGAN(**TINY, **options)


@pytest.mark.slow
def test_low_data_preset_trains_from_the_command_line(tmp_path, cache_dir):
    run_script(
        "train.py",
        "experiment=[smoke,low_data]",
        "model.stabilize.warmup_batches=3",
        f"hydra.run.dir={tmp_path}",
        cache_dir=cache_dir,
    )
    rows = read_csv(next(tmp_path.rglob("metrics.csv")))
    epoch_rows = [r for r in rows if r.get("daug/p_D_C")]
    assert len(epoch_rows) == 2
    warmup = [float(r["train/warmup_step"]) for r in rows if r.get("train/warmup_step")]
    assert warmup[0] == 0.0 and warmup[-1] == 1.0
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
