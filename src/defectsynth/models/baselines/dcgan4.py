"""DCGAN (Radford et al., ICLR 2016) on image ‖ mask, the paper's "DCGAN" of Table 2: it learns
the defective images with their masks (4 channels) from the defective training set alone and
samples new ones from a 100-d latent code — there is no source image to translate.

    z (100) ─► ConvT 4×4 ─► BN ─► ReLU ─► [ConvT 4×4 /2 ─► BN ─► ReLU] × (k − 1) ─► ConvT /2 ─► tanh
               (4 × 4)                       (8 × 8 … S/2 × S/2)                     (S × S × 4)

    image ‖ mask ─► Conv /2 ─► LReLU ─► [Conv /2 ─► BN ─► LReLU] × (k − 1) ─► Conv 4×4 ─► logit

for an image size S = 4·2^k. Widths follow DCGAN's 64² network (ngf at S/2, doubling towards
4×4, at most 8·ngf); larger images get more layers. Loss: the original non-saturating GAN loss
(binary cross-entropy on logits). Per batch: one D step, then one G step, as in DCGAN.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from defectsynth.errors import ConfigError
from defectsynth.models.base import GANModule, seeded_pools
from defectsynth.models.baselines.channels import split_mask_channel, with_mask_channel
from defectsynth.models.init import init_weights

MAX_WIDTH_FACTOR = 8
# options the shared experiment presets set for the ResNet generator / PatchGAN; DCGAN's depth
# follows the image size and its normalisation is BatchNorm by definition
RESNET_ONLY_OPTIONS = {"generator": ("n_blocks", "norm"), "discriminator": ("n_layers", "norm")}


def n_doublings(image_size: int) -> int:
    """k with image_size = 4·2^k; DCGAN starts from a 4×4 map and doubles it k times."""
    k = math.log2(image_size / 4) if image_size > 0 else -1
    if k < 3 or k != int(k):
        raise ConfigError(
            f"model=dcgan4 generates 4·2^k pixels (32, 64, 128, 256, ...); "
            f"data.image_size={image_size} is not one of them"
        )
    return int(k)


def widths(base: int, k: int) -> list[int]:
    """Channels from the 4×4 map up to the S/2 map: base·8 … base·2, base (capped at base·8)."""
    return [base * min(2 ** (k - 1 - i), MAX_WIDTH_FACTOR) for i in range(k)]


class DCGANGenerator(nn.Module):
    """z (N, latent_dim) → (N, channels, S, S) in [-1, 1]."""

    def __init__(
        self, image_size: int = 64, latent_dim: int = 100, ngf: int = 64, channels: int = 4
    ) -> None:
        super().__init__()
        w = widths(ngf, n_doublings(image_size))
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, w[0], 4, 1, 0, bias=False),  # 1×1 → 4×4
            nn.BatchNorm2d(w[0]),
            nn.ReLU(inplace=True),
        ]
        for c_in, c_out in itertools.pairwise(w):
            layers += [
                nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.ConvTranspose2d(w[-1], channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.layers = nn.Sequential(*layers)
        self.latent_dim = latent_dim
        init_weights(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z.reshape(len(z), self.latent_dim, 1, 1))


class DCGANDiscriminator(nn.Module):
    """(N, channels, S, S) → (N,) real/fake logits; no BatchNorm on the input layer (DCGAN)."""

    def __init__(self, image_size: int = 64, ndf: int = 64, channels: int = 4) -> None:
        super().__init__()
        w = widths(ndf, n_doublings(image_size))[::-1]  # S/2 … 4×4
        layers: list[nn.Module] = [
            nn.Conv2d(channels, w[0], 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        for c_in, c_out in itertools.pairwise(w):
            layers += [
                nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers.append(nn.Conv2d(w[-1], 1, 4, 1, 0, bias=False))  # 4×4 → 1×1
        self.layers = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).flatten()


def bce_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """−log D(real) − log(1 − D(fake)), summed over the two halves as in DCGAN."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def nonsaturating_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """−log D(G(z)): the non-saturating generator loss of the original GAN."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def _network_options(options: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    options = dict(options or {})
    for key in RESNET_ONLY_OPTIONS[kind]:
        options.pop(key, None)
    return options


class DCGAN4(GANModule):
    """Samples image ‖ mask from latent codes; ``generate`` maps latents, not images."""

    is_image_to_image = False

    def __init__(
        self,
        image_size: int = 64,
        generator: dict[str, Any] | None = None,
        discriminator: dict[str, Any] | None = None,
        optimizer: dict[str, Any] | None = None,
        schedule: dict[str, Any] | None = None,
        pool_size: int = 0,
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
        self.image_size = image_size
        self.G = DCGANGenerator(image_size, **_network_options(generator, "generator"))
        self.D = DCGANDiscriminator(image_size, **_network_options(discriminator, "discriminator"))
        self.latent_dim = self.G.latent_dim
        self.pools = seeded_pools(pool_size, "Y")  # DCGAN has none; kept for symmetry

    # ------------------------------------------------------------------ structure
    def optimizer_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        return {"D": self.D.parameters(), "G": self.G.parameters()}

    def latents(self, seeds: Sequence[int]) -> torch.Tensor:
        """One latent code per seed, drawn on the CPU: the same seed gives the same code on
        every device."""
        codes = [
            torch.randn(self.latent_dim, generator=torch.Generator().manual_seed(int(s)))
            for s in seeds
        ]
        return torch.stack(codes).to(self.device)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.G(z)

    def generate(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent codes (N, latent_dim) → image (N, 3, S, S) in [-1, 1], mask (N, 1, S, S) in
        [0, 1]. An image batch (what the training sample grid passes) only sets N: it gets the
        codes of seeds 0 … N − 1, so successive grids show the same codes as training goes on."""
        if z.dim() != 2:
            z = self.latents(range(len(z)))
        return split_mask_channel(self(z.to(self.device)))

    # ------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        real = with_mask_channel(batch["defect"], batch["mask"])  # normal images are not used
        opt_d, opt_g = self.optimizers()
        fake = self(torch.randn(len(real), self.latent_dim, device=real.device))

        pooled = self.pools["Y"].query(fake.detach())
        # logits: a real is "recognised" when its logit is > 0 (r_t's threshold)
        d_loss, extras = self.discriminator_loss(
            "D", self.D, real, pooled, loss=bce_discriminator_loss, threshold=0.0
        )
        self.step(opt_d, d_loss, "discriminator")

        with self.toggled_optimizer(opt_g):
            g_loss = nonsaturating_generator_loss(self.judge("D", self.D, fake))
            self.step(opt_g, g_loss, "generator")
        self.log_losses({"loss_D": d_loss, "loss_G": g_loss, **extras}, batch_size=len(real))
        self.end_of_step()
