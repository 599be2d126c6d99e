"""CycleGAN (Zhu et al., ICCV 2017) with a 4-channel output, the paper's "CycleGAN" of Table 2:
the mask is simply a 4th output channel of G, with no branch, no D_C and no L_B.

    x (RGB) ──► G ──► G(x) = image ‖ mask ──► D_Y (4 channels) ◄── y ‖ (2·y_mask − 1)
                       │
                       └──► F ──► F(G(x)) ≈ x          y ‖ m ──► F ──► D_X (3 channels) ◄── x

All four channels live in [-1, 1] (tanh); the mask reads as (m + 1) / 2 ∈ [0, 1]. Cycle:
F(G(x)) ≈ x and G(F(y ‖ m)) ≈ y ‖ m; identity: G(y) ≈ y ‖ m and F(x ‖ empty mask) ≈ x.
Per batch: one Adam step on G and F together, then D_X and D_Y, with image pools, least squares.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from defectsynth.models import losses
from defectsynth.models.base import GANModule, merged_options, seeded_pools
from defectsynth.models.baselines.channels import split_mask_channel, with_mask_channel
from defectsynth.models.discriminator import PatchDiscriminator
from defectsynth.models.generator import DefectGenerator

# loss term → its λ in the loss config; the defaults are the proposed model's (paper: cycle 5,
# identity 10), so that the two differ only by the mask branch, L_C and L_B
LAMBDA_OF_TERM = {
    "gan_G": "lambda_gan",
    "gan_F": "lambda_gan_inverse",
    "cycle": "lambda_cycle",
    "identity": "lambda_id",
}
LOSS_DEFAULTS = {
    "lambda_gan": 1.0,
    "lambda_gan_inverse": 1.0,
    "lambda_cycle": 5.0,
    "lambda_id": 10.0,
}


class CycleGAN4(GANModule):
    """G: RGB → RGB ‖ mask; F: RGB ‖ mask → RGB; D_X on 3 channels, D_Y on 4."""

    def __init__(
        self,
        generator: dict[str, Any] | None = None,
        discriminator: dict[str, Any] | None = None,
        loss: dict[str, Any] | None = None,
        optimizer: dict[str, Any] | None = None,
        schedule: dict[str, Any] | None = None,
        pool_size: int = 50,
        compile: bool | str = False,
        channels_last: bool = False,
        nan_policy: str = "stop",
        d_augment: dict[str, Any] | None = None,
        stabilize: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            optimizer=optimizer,
            schedule=schedule,
            compile=compile,
            channels_last=channels_last,
            nan_policy=nan_policy,
            d_augment=d_augment,
            stabilize=stabilize,
        )
        self.save_hyperparameters()
        self.ignore_mask_stabilizers()
        generator, discriminator = dict(generator or {}), dict(discriminator or {})
        self.loss_config = merged_options(LOSS_DEFAULTS, loss, "loss (cyclegan4)")

        self.G = DefectGenerator(**generator, out_channels=4, with_mask=False)
        self.F = DefectGenerator(**generator, in_channels=4, out_channels=3, with_mask=False)
        self.D_X = PatchDiscriminator(3, **discriminator)
        self.D_Y = PatchDiscriminator(4, **discriminator)
        self.pools = seeded_pools(pool_size, "X", "Y")

    # ------------------------------------------------------------------ structure
    @property
    def weights(self) -> dict[str, float]:
        return {term: float(self.loss_config[name]) for term, name in LAMBDA_OF_TERM.items()}

    def optimizer_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        return {
            "G": itertools.chain(self.G.parameters(), self.F.parameters()),
            "D_X": self.D_X.parameters(),
            "D_Y": self.D_Y.parameters(),
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """G(x): (N, 4, H, W) in [-1, 1], image ‖ mask channel."""
        return self.G(x, with_mask=False)[0]

    def generate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return split_mask_channel(self(x))

    # ------------------------------------------------------------------ losses
    def generator_losses(
        self, x: torch.Tensor, y4: torch.Tensor, fake_y4: torch.Tensor, fake_x: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Unweighted terms; ``y4`` = y ‖ mask, ``fake_y4`` = G(x), ``fake_x`` = F(y4)."""
        out = {
            "gan_G": losses.lsgan_generator_loss(self.judge("D_Y", self.D_Y, fake_y4)),
            "gan_F": losses.lsgan_generator_loss(self.judge("D_X", self.D_X, fake_x)),
            "cycle": losses.cycle_loss(self.F(fake_y4)[0], x) + losses.cycle_loss(self(fake_x), y4),
        }
        if self.weights["identity"]:
            # an image already defective stays itself, with its own mask; a normal image with an
            # empty mask (all −1) stays itself under F
            empty = with_mask_channel(x, torch.zeros_like(x[:, :1]))
            out["identity"] = losses.identity_loss(self(y4[:, :3]), y4) + losses.identity_loss(
                self.F(empty)[0], x
            )
        return out

    def discriminator_losses(
        self, x: torch.Tensor, y4: torch.Tensor, fake_y4: torch.Tensor, fake_x: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Each D's loss (augmented and R1-regularised as configured) and the R1 values."""
        keep = self.batch_ok()
        pooled_x = self.pools["X"].query(fake_x, keep)
        pooled_y = self.pools["Y"].query(fake_y4, keep)
        out, extras = {}, {}
        out["D_X"], more = self.discriminator_loss("D_X", self.D_X, x, pooled_x)
        extras.update(more)
        # image ‖ mask: the augmentation moves the mask channel with the image
        out["D_Y"], more = self.discriminator_loss("D_Y", self.D_Y, y4, pooled_y)
        extras.update(more)
        return out, extras

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        x = batch["normal"]
        y4 = with_mask_channel(batch["defect"], batch["mask"])
        opt_g, *opt_ds = self.optimizers()

        with self.toggled_optimizer(opt_g):
            fake_y4 = self(x)
            fake_x = self.F(y4)[0]
            terms = self.generator_losses(x, y4, fake_y4, fake_x)
            weights = self.weights
            total = sum(weights[name] * value for name, value in terms.items())
            self.step(opt_g, total, "generator", terms)

        d_losses, extras = self.discriminator_losses(x, y4, fake_y4.detach(), fake_x.detach())
        for (name, value), opt in zip(d_losses.items(), opt_ds, strict=True):
            self.step(opt, value, f"discriminator {name}")

        logged = {f"loss_{k}": v for k, v in terms.items()}
        logged["loss_G_total"] = total
        logged.update({f"loss_{k}": v for k, v in d_losses.items()})
        logged.update(extras)
        self.log_losses(logged, batch_size=x.shape[0])
        self.end_of_step()
