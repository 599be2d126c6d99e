"""Classifier backbones, pretrained weights offline, the U-Net, sampling and best weights."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import torchvision
from omegaconf import OmegaConf

from defectsynth.errors import ConfigError
from defectsynth.inspection.classifier import DefectClassifier, build_backbone
from defectsynth.inspection.data import (
    LabelledImages,
    StudyDataModule,
    random_flips,
    to_model_input,
)
from defectsynth.inspection.fitting import BestWeights, fit
from defectsynth.inspection.segmenter import DefectSegmenter, UNet


@pytest.fixture
def empty_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub


@pytest.mark.parametrize(
    ("name", "file"),
    [("resnet18", "resnet18-f37072fd.pth"), ("densenet121", "densenet121-a639ec97.pth")],
)
def test_pretrained_without_weights_names_the_file_and_folder(empty_hub, name, file):
    with pytest.raises(ConfigError) as err:
        build_backbone(name, pretrained=True)
    assert file in str(err.value) and str(empty_hub / "checkpoints") in str(err.value)


def test_pretrained_weights_load_from_the_hub_cache(empty_hub):
    reference = torchvision.models.resnet18(weights=None)
    (empty_hub / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), empty_hub / "checkpoints" / "resnet18-f37072fd.pth")
    network = build_backbone("resnet18", pretrained=True)
    assert torch.equal(network.conv1.weight, reference.conv1.weight)
    assert network.fc.out_features == 1


def test_densenet121_takes_one_training_step_at_32_px():
    torch.manual_seed(0)
    model = DefectClassifier("densenet121")
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    logits = model(to_model_input(images))
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([0.0, 1.0]))
    loss.backward()
    assert torch.isfinite(loss) and model.net.classifier.weight.grad is not None


def test_unet_keeps_the_resolution_and_rejects_bad_sizes():
    net = UNet(width=4, levels=2)
    assert net(torch.zeros(2, 3, 16, 16)).shape == (2, 1, 16, 16)
    with pytest.raises(ConfigError, match="multiple of 4"):
        net(torch.zeros(1, 3, 18, 18))


def test_balanced_sampler_draws_both_classes_alike():
    n_normal, n_defect = 90, 10
    images = torch.zeros(n_normal + n_defect, 3, 4, 4, dtype=torch.uint8)
    labels = torch.cat([torch.zeros(n_normal), torch.ones(n_defect)])
    data = LabelledImages(images, labels)
    module = StudyDataModule(data, data, data, batch_size=50, seed=0)
    drawn = torch.cat([b["label"] for b in module.train_dataloader()])
    assert len(drawn) == 100 and 30 <= int(drawn.sum()) <= 70
    again = torch.cat([b["label"] for b in module.train_dataloader()])
    assert torch.equal(drawn, again)  # seeded


def test_flips_move_images_and_masks_together():
    torch.manual_seed(0)
    x = torch.arange(2 * 16, dtype=torch.float).view(2, 1, 4, 4).expand(2, 3, 4, 4)
    x_out, m_out = random_flips(x, x[:, :1].clone())
    assert torch.equal(x_out[:, :1], m_out)


def test_flips_draw_all_four_states_independently():
    torch.manual_seed(0)
    n = 400
    corner = torch.tensor([[0.0, 1.0], [2.0, 3.0]])  # top-left value names the flip state
    (out,) = random_flips(corner.expand(n, 3, 2, 2).clone())
    counts = torch.bincount(out[:, 0, 0, 0].long(), minlength=4)
    assert (counts > 0).all() and ((counts - n / 4).abs() < 35).all(), counts


def test_fit_restores_the_best_validation_epoch(tmp_path: Path):
    L.seed_everything(0)
    images = torch.randint(0, 256, (12, 3, 16, 16), dtype=torch.uint8)
    masks = (torch.rand(12, 1, 16, 16) > 0.8).to(torch.uint8)
    data = LabelledImages(images, torch.tensor([0.0, 1.0] * 6), masks)
    module = DefectSegmenter(width=4, levels=2)
    options = OmegaConf.create({"epochs": 3, "accelerator": "cpu"})
    info = fit(module, StudyDataModule(data, data, data, batch_size=12), options, tmp_path, [])
    assert info["best_epoch"] in (0, 1, 2) and info["best_val_loss"] is not None
    x = images.float().div(127.5).sub(1)
    module.eval()
    with torch.no_grad():
        loss = module._loss(module(x), masks.float())
    assert float(loss) == pytest.approx(info["best_val_loss"], rel=1e-4)


def test_selection_keeps_the_best_epoch_by_loss_or_by_auroc():
    """train.select: the lowest validation loss (the authors') or the highest validation AUROC,
    the first such epoch on ties — on hand-fed epochs where the two disagree."""

    class Epochs:
        sanity_checking = False

        def __init__(self) -> None:
            self.current_epoch, self.callback_metrics = 0, {}

    net = torch.nn.Linear(1, 1)
    by_loss, by_auroc = BestWeights("val/loss"), BestWeights("val/auroc", higher_is_better=True)
    trainer = Epochs()
    history = [(0.69, 0.40), (0.71, 0.90), (0.90, 0.90), (1.50, 0.70)]  # loss rises, AUROC peaks
    for epoch, (loss, auroc) in enumerate(history):
        trainer.current_epoch = epoch
        trainer.callback_metrics = {
            "val/loss": torch.tensor(loss),
            "val/auroc": torch.tensor(auroc),
        }
        torch.nn.init.constant_(net.weight, float(epoch))
        for callback in (by_loss, by_auroc):
            callback.on_validation_end(trainer, net)
    assert by_loss.restore(net)["best_epoch"] == 0 and float(net.weight) == 0.0
    info = by_auroc.restore(net)
    assert info == {
        "best_epoch": 1,
        "best_val_auroc": pytest.approx(0.9),
        "selected_by": "val/auroc",
    }
    assert float(net.weight) == 1.0


def test_the_classifier_logs_a_validation_auroc_and_select_is_checked(tmp_path: Path):
    L.seed_everything(0)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    data = LabelledImages(images, torch.tensor([0.0, 1.0] * 4))
    module = DefectClassifier("resnet18")
    options = OmegaConf.create({"epochs": 2, "accelerator": "cpu", "select": "auroc"})
    info = fit(module, StudyDataModule(data, data, data, batch_size=4), options, tmp_path, [])
    assert info["selected_by"] == "val/auroc" and 0.0 <= info["best_val_auroc"] <= 1.0
    with pytest.raises(ConfigError, match="select='f1'"):
        fit(
            module,
            StudyDataModule(data, data, data),
            OmegaConf.create({"select": "f1"}),
            tmp_path,
            [],
        )
