"""A small U-Net defect segmenter, trained on (image, mask) pairs from scratch.

Encoder: ``levels`` blocks of two 3×3 conv–BatchNorm–ReLU, each followed by 2×2 max-pooling
(widths ``width``·2^k); a bottleneck block; decoder: bilinear up-sampling, concatenation with the
encoder features of the same level, one block; a 1×1 conv to one logit per pixel. The input side
must be a multiple of 2^levels.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from defectsynth.errors import ConfigError
from defectsynth.inspection.data import random_flips, to_model_input


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    def __init__(self, in_channels: int = 3, width: int = 16, levels: int = 3) -> None:
        super().__init__()
        if levels < 1 or width < 1:
            raise ConfigError(f"segmenter.levels={levels} and segmenter.width={width} must be ≥ 1")
        self.levels = levels
        widths = [width * 2**k for k in range(levels + 1)]
        self.down = nn.ModuleList()
        c = in_channels
        for w in widths[:-1]:
            self.down.append(_block(c, w))
            c = w
        self.bottleneck = _block(c, widths[-1])
        self.up = nn.ModuleList(
            _block(widths[k + 1] + widths[k], widths[k]) for k in reversed(range(levels))
        )
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, 1, H, W) for images (N, 3, H, W)."""
        factor = 2**self.levels
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ConfigError(
                f"the U-Net with {self.levels} levels needs an image side that is a multiple of "
                f"{factor}; got {tuple(x.shape[-2:])} (set segmenter.image_size)"
            )
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for block, skip in zip(self.up, reversed(skips), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 − soft Dice over the whole batch (pooled, so empty masks of defect-free images count
    as true negatives instead of making a per-image Dice undefined)."""
    p = torch.sigmoid(logits)
    intersection = (p * target).sum()
    return 1.0 - (2.0 * intersection + eps) / (p.sum() + target.sum() + eps)


class DefectSegmenter(L.LightningModule):
    """Pixel BCE + Dice; automatic optimisation with Adam."""

    def __init__(
        self,
        width: int = 16,
        levels: int = 3,
        lr: float = 1e-3,
        dice_weight: float = 1.0,
        flips: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = UNet(3, width, levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        bce = F.binary_cross_entropy_with_logits(logits, target)
        return bce + self.hparams.dice_weight * dice_loss(logits, target)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = to_model_input(batch["image"]), batch["mask"].float()
        if self.hparams.flips:
            x, y = random_flips(x, y)
        loss = self._loss(self(x), y)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(x))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        x, y = to_model_input(batch["image"]), batch["mask"].float()
        self.log("val/loss", self._loss(self(x), y), on_epoch=True, batch_size=len(x))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    @torch.inference_mode()
    def scores(self, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """Per-pixel P(defect) (N, 1, H, W) for uint8 images, in eval mode."""
        self.eval()
        out = [
            torch.sigmoid(self(to_model_input(images[i : i + batch_size].to(self.device))))
            for i in range(0, len(images), batch_size)
        ]
        return torch.cat(out).float().cpu()
