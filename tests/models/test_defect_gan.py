import copy

import lightning as L
import pytest
import torch

from defectsynth.models.defect_gan import DefectGAN
from tests.models.common import fit as fit_batches

TINY = {"generator": {"ngf": 4, "n_blocks": 1}, "discriminator": {"ndf": 4, "n_layers": 2}}
ABLATIONS = {
    "full": ({"coherence": True, "background": True}, {"coherence", "background"}),
    "no_LB": ({"coherence": True, "background": False}, {"coherence"}),
    "no_LC": ({"coherence": False, "background": True}, {"background"}),
    "no_LC_LB": ({"coherence": False, "background": False}, set()),
}
BASE_TERMS = {"gan_G", "gan_F", "cycle", "identity"}


def fit(model: L.LightningModule, batches: int = 1, epochs: int = 1) -> L.Trainer:
    return fit_batches(model, batches, size=16, epochs=epochs)


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_each_ablation_removes_exactly_its_terms_and_networks(name):
    switches, optional = ABLATIONS[name]
    model = DefectGAN(**TINY, ablation=switches)
    assert set(model.terms) == BASE_TERMS | optional
    assert (model.D_C is not None) == ("coherence" in optional)
    assert len(model.configure_optimizers()) == 3 + ("coherence" in optional)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    fake_y, fake_mask = model.G(x)
    fake_x, _ = model.F(x)
    terms = model.generator_losses(x, x, fake_y, fake_mask, fake_x, fake_mask.detach())
    assert set(terms) == set(model.terms)


def test_weights_come_from_the_loss_config_once_per_term():
    model = DefectGAN(**TINY, loss={"lambda_c": 7.0, "lambda_b": 0.5, "lambda_cycle": 3.0})
    assert model.weights == {
        "gan_G": 1.0,
        "gan_F": 1.0,
        "cycle": 3.0,
        "identity": 10.0,
        "coherence": 7.0,
        "background": 0.5,
    }
    with pytest.raises(ValueError, match="lambda_typo"):
        DefectGAN(**TINY, loss={"lambda_typo": 1.0})


def test_one_batch_steps_every_network_and_logs_the_weighted_total():
    torch.manual_seed(0)
    model = DefectGAN(**TINY, loss={"lambda_c": 2.0, "lambda_b": 3.0})
    before = copy.deepcopy(model.state_dict())
    trainer = fit(model)
    for name in ("G", "F", "D_X", "D_Y", "D_C"):
        changed = [
            not torch.equal(before[k], v)
            for k, v in model.state_dict().items()
            if k.startswith(name + ".") and v.dtype.is_floating_point
        ]
        assert any(changed), f"{name} was not updated"
    m = trainer.callback_metrics
    total = sum(model.weights[t] * m[f"train/loss_{t}_step"] for t in model.terms)
    assert m["train/loss_G_total_step"].item() == pytest.approx(total.item(), rel=1e-5)
    assert trainer.global_step == 4  # manual optimisation: one count per optimizer step


def test_inverse_mapping_has_the_same_architecture_and_never_runs_its_mask_branch():
    torch.manual_seed(0)
    model = DefectGAN(**TINY)
    shapes = {k: v.shape for k, v in model.G.state_dict().items()}
    assert {k: v.shape for k, v in model.F.state_dict().items()} == shapes
    before = copy.deepcopy(model.F.mask_branch.state_dict())
    fit(model)
    # F's mask feeds no loss term: no gradient, hence Adam leaves its weights as initialised
    assert all(p.grad is None for p in model.F.mask_branch.parameters())
    for k, v in model.F.mask_branch.state_dict().items():
        assert torch.equal(before[k], v)


def test_generator_step_leaves_discriminators_without_gradients():
    torch.manual_seed(0)
    model = DefectGAN(**TINY)
    calls = {name: 0 for name in ("G", "D_X", "D_Y", "D_C")}

    def count(name):
        def hook(_):
            calls[name] += 1

        return hook

    for name in calls:
        first = next(getattr(model, name).parameters())
        first.register_post_accumulate_grad_hook(count(name))
    fit(model, batches=2)
    # per batch: G gets gradients once (G step), each D once (its own step), never from G's step
    assert calls == {"G": 2, "D_X": 2, "D_Y": 2, "D_C": 2}
    # toggling restored the flags; what feeds no loss (F's mask branch) stays frozen
    dead = {id(p) for p in model.dead_parameters()}
    assert dead and all(p.requires_grad is (id(p) not in dead) for p in model.parameters())


def test_synthesize_uses_eval_mode_and_restores_training():
    model = DefectGAN(
        generator={"ngf": 4, "n_blocks": 1, "norm": "batch"},
        discriminator={"ndf": 4, "norm": "batch"},
    )
    model.train()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    image, mask = model.synthesize(x)
    assert model.G.training
    model.G.eval()
    expected, _ = model.G(x)
    assert torch.allclose(image, expected)
    assert mask.shape == (2, 1, 16, 16)


def test_schedule_steps_per_epoch_not_per_optimizer_step():
    model = DefectGAN(**TINY, schedule={"n_epochs": 1, "n_epochs_decay": 2})
    fit(model, batches=3, epochs=2)
    lrs = [opt.param_groups[0]["lr"] for opt in model.optimizers()]
    # after 2 epochs the scheduler stepped twice: factor(2) = 1 - (2 - 1)/2
    assert lrs == pytest.approx([1e-4] * 4)


def test_checkpoint_round_trip_keeps_hparams_and_pools(tmp_path):
    torch.manual_seed(0)
    model = DefectGAN(**TINY, ablation={"coherence": False, "background": True}, pool_size=3)
    trainer = fit(model, batches=2)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    from defectsynth.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(path)  # weights_only
    assert len(checkpoint["image_pools"]["X"]["images"]) == 2
    restored = DefectGAN.load_from_checkpoint(path, weights_only=True)
    assert restored.D_C is None and restored.terms == model.terms
    assert len(restored.pools["Y"]) == 2
    for k, v in model.state_dict().items():
        assert torch.equal(v, restored.state_dict()[k])


def test_mask_area_term_is_off_in_the_paper_and_trains_when_weighted():
    assert "mask_area" not in DefectGAN(**TINY).terms
    torch.manual_seed(0)
    model = DefectGAN(
        **TINY, loss={"lambda_area": 4.0}, stabilize={"compose": "paste", "warmup_batches": 8}
    )
    assert "mask_area" in model.terms
    assert model.weights["mask_area"] == 0.0  # ramped in by the warm-up like L_C and L_B
    trainer = fit(model, batches=2)
    m = trainer.callback_metrics
    assert 0.0 <= float(m["train/loss_mask_area_step"]) <= 1.0
    assert 0.0 <= float(m["train/fake_mask_area_step"]) <= 1.0
    assert 0.0 < model.weights["mask_area"] < 4.0


def test_cycle_outside_defect_leaves_out_the_defect_pixels_both_ways():
    x, y = torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)
    fake_mask = torch.zeros(1, 1, 8, 8)
    fake_mask[..., 2:4, 2:4] = 0.8
    y_mask = torch.zeros(1, 1, 8, 8)
    y_mask[..., 5:7, 5:7] = 1.0
    rec_x, rec_y = x.clone(), y.clone()
    rec_x[..., 2:4, 2:4] = 1.0  # F could not restore what G's defect covered
    rec_y[..., 5:7, 5:7] = 1.0  # nor G redraw the real defect F removed
    paper = DefectGAN(**TINY)
    assert float(paper.cycle(x, y, rec_x, rec_y, fake_mask, y_mask)) > 0
    model = DefectGAN(**TINY, stabilize={"cycle_region": "outside_defect"})
    assert float(model.cycle(x, y, rec_x, rec_y, fake_mask, y_mask)) == 0
    rec_x[..., 0, 0] = 1.0  # outside the defect it still counts
    assert float(model.cycle(x, y, rec_x, rec_y, fake_mask, y_mask)) > 0
    with pytest.raises(ValueError, match="cycle_region"):
        DefectGAN(**TINY, stabilize={"cycle_region": "inside"})
