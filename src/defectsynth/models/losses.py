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


def cycle_loss(
    reconstructed: torch.Tensor, original: torch.Tensor, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """L_cycle (Eq. 2), one direction: ‖F(G(x)) − x‖₁, mean over pixels; with ``keep`` (a
    {0, 1} map, broadcast over channels) only over the kept pixels, still divided by all of
    them so that the weight λ_cycle means the same thing."""
    if keep is None:
        return F.l1_loss(reconstructed, original)
    return F.l1_loss(reconstructed * keep, original * keep)


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


def hard_mask(mask: torch.Tensor) -> torch.Tensor:
    """The {0, 1} mask of a threshold at 0.5, with the soft mask's gradient (straight-through)."""
    return mask + ((mask >= 0.5).to(mask.dtype) - mask).detach()


def mask_area_loss(
    mask: torch.Tensor, real_masks: torch.Tensor, tolerance: float = 2.0
) -> torch.Tensor:
    """A defective image has a defect: hinge on the area of G's thresholded mask, per sample,
    relative to the mean area ``a`` of the batch's real masks — zero inside [a / tolerance,
    a · tolerance], rising linearly to 1 at an empty mask (and above the band likewise).
    Not in the paper: without it a composing G can keep its mask just under the threshold
    and paste nothing (README, "Low-data training")."""
    if tolerance < 1:
        raise ValueError(f"mask area tolerance {tolerance}; expected ≥ 1")
    area = hard_mask(mask).flatten(1).mean(1)
    target = real_masks.detach().float().flatten(1).mean().clamp_min(1e-4)
    low, high = target / tolerance, (target * tolerance).clamp_max(1.0)
    below = F.relu(low - area) / low
    above = F.relu(area - high) / (1 - high).clamp_min(1e-4)
    return (below + above).mean()


def r1_penalty(pred_real: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): E over samples of ‖∇_x D(x)‖² at the real inputs ``real``
    (which must require grad). ``create_graph``: the penalty is itself differentiated in D's
    step. Keeps D smooth around the few real images it would otherwise memorise."""
    (grad,) = torch.autograd.grad(pred_real.sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


# ----------------------------------------------------------------- controllable model (not paper)
MASK_FOLLOW_KINDS = ("bce", "dice", "bce_dice")


def dice_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 − soft Dice per sample, averaged; ``eps`` keeps tiny masks from exploding."""
    dims = tuple(range(1, pred.ndim))
    inter = (pred * target).sum(dims)
    total = pred.sum(dims) + target.sum(dims)
    return (1 - (2 * inter + eps) / (total + eps)).mean()


def mask_follow_loss(
    pred_mask: torch.Tensor, requested: torch.Tensor, kind: str = "bce_dice"
) -> torch.Tensor:
    """G's mask should be the requested one. BCE alone is dominated by the background of a
    small defect; Dice weighs the region itself; their sum trains fastest."""
    if kind not in MASK_FOLLOW_KINDS:
        raise ValueError(f"mask follow loss {kind!r}; expected one of {MASK_FOLLOW_KINDS}")
    target = requested.to(pred_mask.dtype)
    # BCE in fp32: autocast's bf16 log underflows near 0 and 1
    bce = F.binary_cross_entropy(pred_mask.float().clamp(1e-6, 1 - 1e-6), target.float())
    if kind == "bce":
        return bce
    dice = dice_loss(pred_mask.float(), target.float())
    return dice if kind == "dice" else bce + dice


def preservation_loss(
    source: torch.Tensor, generated: torch.Tensor, requested: torch.Tensor
) -> torch.Tensor:
    """‖(G(x) − x) ⊙ (1 − requested)‖₁, mean over pixels: nothing changes outside the request.
    Unlike L_B it uses the *requested* mask, which G cannot shrink or grow to cheat."""
    return F.l1_loss(generated * (1 - requested), source * (1 - requested))


def mode_seeking_loss(
    out_a: torch.Tensor,
    out_b: torch.Tensor,
    code_a: torch.Tensor,
    code_b: torch.Tensor,
    region: torch.Tensor | None = None,
    target: float = 0.5,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Mode seeking (Mao et al. 2019), bounded and measured where the defect is.

    The ratio r = mean|G(z_a) − G(z_b)| / mean|z_a − z_b| is taken over the pixels of ``region``
    ((B, 1, H, W) in [0, 1]; the whole image when None), so a small defect is not diluted by a
    background that must not change. MSGAN minimises 1 / r, which is unbounded: on a defect of
    3 % of the image it measured ~100, outweighing every other term and painting saturated colour
    noise. Here each sample pays relu(1 − r / ``target``) ∈ [0, 1]: codes are pushed apart until
    they differ by ``target`` per unit of code distance, then left to the other terms."""
    if target <= 0:
        raise ValueError(f"mode seeking target must be > 0, got {target}")
    diff = (out_a - out_b).abs().float().mean(dim=1, keepdim=True)
    if region is None:
        image = diff.flatten(1).mean(dim=1)
    else:
        weight = region.to(diff.dtype).expand_as(diff)
        image = (diff * weight).flatten(1).sum(dim=1) / weight.flatten(1).sum(dim=1).clamp_min(1)
    code = (code_a - code_b).abs().float().flatten(1).mean(dim=1).clamp_min(eps)
    return F.relu(1 - image / code / target).mean()
