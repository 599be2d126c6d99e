"""Binary defect classifiers: torchvision ResNet-18 / DenseNet-121 with a one-logit head.

As in the authors' code the default is training from scratch (``pretrained=false``); ImageNet
weights are read from the torch hub cache only (this project never downloads during a run), and
a missing file stops before any work with its exact name and folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
import torchvision
from torch import nn
from torch.nn import functional as F
from torchmetrics.functional.classification import binary_auroc

from defectsynth.errors import ConfigError
from defectsynth.inspection.data import random_flips, to_model_input

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Backbone:
    title: str  # as in the paper's Table 4
    weights_file: str  # torchvision's ImageNet file name in <torch hub>/checkpoints
    head: str  # attribute holding the final layer


BACKBONES = {
    "resnet18": Backbone("ResNet-18", "resnet18-f37072fd.pth", "fc"),
    "densenet121": Backbone("DenseNet-121", "densenet121-a639ec97.pth", "classifier"),
}


def backbone_spec(name: str) -> Backbone:
    if name not in BACKBONES:
        raise ConfigError(f"classifier {name!r} is not supported; choose one of {list(BACKBONES)}")
    return BACKBONES[name]


def weights_path(name: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / backbone_spec(name).weights_file


def check_pretrained_weights(name: str) -> Path:
    """The ImageNet weight file of ``name`` in the torch hub cache, or a ConfigError naming it."""
    path = weights_path(name)
    if not path.is_file():
        file = backbone_spec(name).weights_file
        raise ConfigError(
            f"classifier.pretrained=true needs torchvision's ImageNet weights {file} in "
            f"{path.parent} (not found; nothing is downloaded during a run). Copy the file "
            f"there (from https://download.pytorch.org/models/{file}; the folder follows "
            "$TORCH_HOME), or train from scratch with classifier.pretrained=false."
        )
    return path


def build_backbone(name: str, pretrained: bool = False) -> nn.Module:
    """The torchvision network with its last layer replaced by a fresh ``Linear(·, 1)``."""
    spec = backbone_spec(name)
    weights = None
    if pretrained:
        check_pretrained_weights(name)
        # the file is in the hub cache, so torchvision loads it without a download (and applies
        # its own key fixes, which DenseNet's old file needs)
        weights = torchvision.models.get_model_weights(name).IMAGENET1K_V1
    network = torchvision.models.get_model(name, weights=weights)
    head = getattr(network, spec.head)
    setattr(network, spec.head, nn.Linear(head.in_features, 1))
    return network


class DefectClassifier(L.LightningModule):
    """Automatic optimisation: BCE on one logit (1 = defective), Adam. The validation loss is
    class-balanced (mean of the per-class mean losses), so the checkpoint chosen by it is not
    the one that best predicts the majority class."""

    def __init__(
        self,
        backbone: str = "resnet18",
        pretrained: bool = False,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        flips: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = build_backbone(backbone, pretrained)
        # inputs arrive in [-1, 1]; ImageNet statistics suit both pretrained and scratch weights
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 2 - 1)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 2)
        self._val: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N,) for float images in [-1, 1]."""
        return self.net((x - self.mean) / self.std).squeeze(1)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x = to_model_input(batch["image"])
        if self.hparams.flips:
            (x,) = random_flips(x)
        loss = F.binary_cross_entropy_with_logits(self(x), batch["label"])
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(x))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits = self(to_model_input(batch["image"]))
        losses = F.binary_cross_entropy_with_logits(logits, batch["label"], reduction="none")
        self._val.append((losses.detach(), logits.detach(), batch["label"]))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        losses, logits, labels = (torch.cat(t) for t in zip(*self._val, strict=True))
        self._val.clear()
        per_class = [losses[labels == value].mean() for value in labels.unique()]
        self.log("val/loss", torch.stack(per_class).mean())
        self.log("val/accuracy", ((logits > 0).float() == labels).float().mean())
        if len(per_class) == 2:  # a ranking needs both classes (train.select=auroc)
            self.log("val/auroc", binary_auroc(logits, labels.long()))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            self.parameters(),
            lr=self.hparams.lr,
            betas=tuple(self.hparams.betas),
            weight_decay=self.hparams.weight_decay,
        )

    @torch.inference_mode()
    def scores(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """P(defective) for uint8 images (N, 3, H, W), in eval mode."""
        self.eval()
        out = [
            torch.sigmoid(self(to_model_input(images[i : i + batch_size].to(self.device))))
            for i in range(0, len(images), batch_size)
        ]
        return torch.cat(out).float().cpu() if out else torch.empty(0)
