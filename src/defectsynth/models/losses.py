"""One function per loss term of the paper (Eq. 1–4), least-squares GAN targets as in CycleGAN.

Every function returns a scalar tensor; the λ weights are applied once, where the LightningModule
composes the total objective.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BACKGROUND_REGIONS = ("outside", "inside")
REDUCTIONS = ("mean", "sum")


def lsgan_generator_loss(pred_fake: torch.Tensor) -> torch.Tensor:
    """Generator side of L_GAN / L_C: push the discriminator's score on fakes towards 1."""
    return F.mse_loss(pred_fake, torch.ones_like(pred_fake))


def lsgan_discriminator_loss(pred_real: torch.Tensor, pred_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator side: ½ (MSE(real, 1) + MSE(fake, 0)); halved to slow D relative to G."""
    real = F.mse_loss(pred_real, torch.ones_like(pred_real))
    fake = F.mse_loss(pred_fake, torch.zeros_like(pred_fake))
    return 0.5 * (real + fake)


def cycle_loss(reconstructed: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """L_cycle (Eq. 2), one direction: ‖F(G(x)) − x‖₁."""
    return F.l1_loss(reconstructed, original)


def identity_loss(mapped: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """L_id, one direction: a mapping fed an image already in its target domain leaves it alone."""
    return F.l1_loss(mapped, original)


def coherence_input(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """What D_C judges (Eq. 3): the image ‖ its mask, image in [-1, 1] and mask in [0, 1]."""
    return torch.cat([image, mask], dim=1)


def background_loss(
    source: torch.Tensor,
    generated: torch.Tensor,
    mask: torch.Tensor,
    region: str = "outside",
    reduction: str = "mean",
) -> torch.Tensor:
    """L_B: MSE between source and generated image where the predicted mask says "no defect".

    ``region="outside"`` is the paper: compare x ⊙ (1 − m) with G_img(x) ⊙ (1 − m).
    ``region="inside"`` with ``reduction="sum"`` reproduces the authors' public code
    (x ⊙ m vs G_img(x) ⊙ m, summed). The mask is not detached: L_B also teaches the mask
    branch where the image changed.
    """
    if region not in BACKGROUND_REGIONS:
        raise ValueError(f"background region {region!r}; expected one of {BACKGROUND_REGIONS}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"background reduction {reduction!r}; expected one of {REDUCTIONS}")
    weight = 1.0 - mask if region == "outside" else mask
    return F.mse_loss(source * weight, generated * weight, reduction=reduction)


def r1_penalty(pred_real: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): E over samples of ‖∇_x D(x)‖² at the real inputs ``real``
    (which must require grad). ``create_graph``: the penalty is itself differentiated in D's
    step. Keeps D smooth around the few real images it would otherwise memorise."""
    (grad,) = torch.autograd.grad(pred_real.sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()
