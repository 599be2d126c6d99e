"""The proposed model as a LightningModule with manual optimisation.

Per batch: one Adam step on G and F together (discriminators frozen), then one step each for
D_X, D_Y and D_C. The total generator objective is Eq. 4 of the paper; an ablation switches
L_C and/or L_B off, which also removes D_C and its optimiser when L_C is off.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import torch
from kornia.filters import gaussian_blur2d
from torch import nn

from defectsynth.errors import ConfigError
from defectsynth.models import losses
from defectsynth.models.base import GANModule, merged_options, seeded_pools
from defectsynth.models.discriminator import PatchDiscriminator
from defectsynth.models.generator import DefectGenerator

# λ name in the loss config → loss term it weighs
LAMBDA_OF_TERM = {
    "gan_G": "lambda_gan",
    "gan_F": "lambda_gan_inverse",
    "cycle": "lambda_cycle",
    "identity": "lambda_id",
    "coherence": "lambda_c",
    "background": "lambda_b",
    "mask_area": "lambda_area",
}
LOSS_DEFAULTS: dict[str, Any] = {
    "lambda_gan": 1.0,
    "lambda_gan_inverse": 1.0,
    "lambda_cycle": 5.0,
    "lambda_id": 10.0,
    "lambda_c": 150.0,
    "lambda_b": 0.05,
    "background_region": "outside",
    "background_reduction": "mean",
    # not in the paper: a hinge on the area of G's thresholded mask (losses.mask_area_loss)
    "lambda_area": 0.0,
    "area_tolerance": 2.0,
}
BASE_TERMS = ("gan_G", "gan_F", "cycle", "identity")
OPTIONAL_TERMS = ("coherence", "background")
# the terms the warm-up (model.stabilize.warmup_batches) ramps in
MASK_TERMS = ("coherence", "background", "mask_area")
COHERENCE_VIEWS = ("image_mask", "masked_image")
MASK_MATCHES = ("none", "blur", "binarize")
COMPOSES = ("none", "blend", "paste")
CYCLE_REGIONS = ("all", "outside_defect")


class DefectGAN(GANModule):
    """G: normal → (defective image, mask); F: defective → normal; D_X, D_Y, D_C."""

    def __init__(
        self,
        generator: dict[str, Any] | None = None,
        discriminator: dict[str, Any] | None = None,
        loss: dict[str, Any] | None = None,
        ablation: dict[str, Any] | None = None,
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
            optimizer, schedule, compile, channels_last, nan_policy, d_augment, stabilize
        )
        self.save_hyperparameters()
        for key, allowed in (
            ("coherence_view", COHERENCE_VIEWS),
            ("mask_match", MASK_MATCHES),
            ("compose", COMPOSES),
            ("cycle_region", CYCLE_REGIONS),
        ):
            if self.stabilize[key] not in allowed:
                raise ConfigError(
                    f"model.stabilize.{key}={self.stabilize[key]!r}; expected one of "
                    f"{list(allowed)}"
                )
        if self.stabilize["compose_inverse"] and self.stabilize["compose"] == "none":
            raise ConfigError(
                "model.stabilize.compose_inverse=true composes F like G: set "
                "model.stabilize.compose=blend|paste too"
            )
        generator = dict(generator or {})
        discriminator = dict(discriminator or {})
        self.loss_config = merged_options(LOSS_DEFAULTS, loss, "loss")
        enabled = {"coherence": True, "background": True, **(ablation or {})}
        enabled.pop("name", None)
        self.terms = (*BASE_TERMS, *(t for t in OPTIONAL_TERMS if enabled[t]))
        if float(self.loss_config["lambda_area"]) > 0:
            self.terms += ("mask_area",)

        # F has G's architecture (as in the paper); its mask output feeds no loss term, so
        # F runs without its mask branch, except under ``compose_inverse`` where it composes
        # (otherwise the branch stays in the module, for checkpoints, but out of the
        # optimiser: see ``dead_parameters``)
        self.G = DefectGenerator(**generator)
        self.F = DefectGenerator(**generator)
        self.D_X = PatchDiscriminator(3, **discriminator)
        self.D_Y = PatchDiscriminator(3, **discriminator)
        self.D_C = PatchDiscriminator(4, **discriminator) if "coherence" in self.terms else None
        self.pools = seeded_pools(pool_size, "X", "Y")

    # ------------------------------------------------------------------ structure
    @property
    def weights(self) -> dict[str, float]:
        """λ of every active term at the running batch (the mask terms ramped by the warm-up)."""
        ramp = self.warmup()
        return {
            t: float(self.loss_config[LAMBDA_OF_TERM[t]]) * (ramp if t in MASK_TERMS else 1.0)
            for t in self.terms
        }

    @property
    def discriminators(self) -> dict[str, nn.Module]:
        nets = {"D_X": self.D_X, "D_Y": self.D_Y, "D_C": self.D_C}
        return {name: net for name, net in nets.items() if net is not None}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.translate(x)
        assert mask is not None
        return image, mask

    def translate(
        self, x: torch.Tensor, *controls: Any, with_mask: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """G(x) as every loss and every user sees it: the image branch's output as it is (the
        paper), or with ``model.stabilize.compose=blend|paste`` put into ``x`` through G's mask
        (soft, or thresholded at 0.5). ``controls`` are the extra inputs of a conditional G
        (requested mask, code, type)."""
        return self.composed(self.G, x, *controls, with_mask=with_mask)

    def restore(self, y: torch.Tensor) -> torch.Tensor:
        """F(y): as it is (the paper), or with ``model.stabilize.compose_inverse=true`` composed
        like G — F then repairs only where its own mask marks the defect."""
        if not self.stabilize["compose_inverse"]:
            return self.F(y, with_mask=False)[0]
        return self.composed(self.F, y, with_mask=False)[0]

    def composed(
        self, net: nn.Module, x: torch.Tensor, *controls: Any, with_mask: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        compose = self.stabilize["compose"]
        image, mask = net(x, *controls, with_mask=with_mask or compose != "none")
        if compose != "none":
            assert mask is not None
            alpha = mask
            if compose == "paste":
                # straight-through: a {0, 1} cut-out forward (the background stays the source's
                # exact pixels), the soft mask's gradient backward
                alpha = losses.hard_mask(mask)
            image = alpha * image + (1 - alpha) * x
        return image, mask if with_mask else None

    def generate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self(x)

    def trains_g_mask(self) -> bool:
        """Whether G's mask output feeds a loss: L_C or L_B, or a composition through it."""
        return self.stabilize["compose"] != "none" or any(t in self.terms for t in MASK_TERMS)

    def dead_parameters(self) -> list[nn.Parameter]:
        """F's mask branch (its output is used only under ``compose_inverse``) and, with
        ``ablation=no_LC_LB`` and no composition, G's."""
        dead: list[nn.Parameter] = []
        if not self.stabilize["compose_inverse"] and self.F.mask_branch is not None:
            dead += self.F.mask_branch.parameters()
        if not self.trains_g_mask() and self.G.mask_branch is not None:
            dead += self.G.mask_branch.parameters()
        return dead

    def optimizer_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        """G and F share one Adam (as in CycleGAN); each discriminator has its own."""
        groups = {"G": itertools.chain(self.G.parameters(), self.F.parameters())}
        groups.update({name: net.parameters() for name, net in self.discriminators.items()})
        return groups

    # ------------------------------------------------------------------ losses
    def coherence_view(self, image: torch.Tensor, mask: torch.Tensor, real: bool) -> torch.Tensor:
        """What D_C judges: ``losses.coherence_input`` (image ‖ mask, the paper) after the
        ``model.stabilize`` options ``mask_match`` and ``coherence_view``, applied to real and
        fake pairs alike (except ``binarize``, which makes the fake mask as hard as a real one)."""
        match = self.stabilize["mask_match"]
        if match == "blur":
            # odd kernel covering ±3σ; the same blur on both sides softens the real masks'
            # hard edges to the fake masks' sigmoid ramps
            sigma = float(self.stabilize["mask_blur_sigma"])
            size = 2 * max(1, round(3 * sigma)) + 1
            mask = gaussian_blur2d(mask, (size, size), (sigma, sigma))
        elif match == "binarize" and not real:
            # straight-through: forward a {0, 1} mask like the real ones, backward the identity
            mask = losses.hard_mask(mask)
        if self.stabilize["coherence_view"] == "masked_image":
            image = image * mask
        return losses.coherence_input(image, mask)

    def generator_losses(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        fake_y: torch.Tensor,
        fake_mask: torch.Tensor,
        fake_x: torch.Tensor,
        y_mask: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Each unweighted term of Eq. 4 for one batch; G(x) and F(y) are computed by the caller
        once and reused for every term and for the discriminator steps. ``y_mask``: the real
        defects' masks (the mask-area term's reference)."""
        rec_x = self.restore(fake_y)
        rec_y, _ = self.translate(fake_x, with_mask=False)
        out = {
            "gan_G": losses.lsgan_generator_loss(self.judge("D_Y", self.D_Y, fake_y)),
            "gan_F": losses.lsgan_generator_loss(self.judge("D_X", self.D_X, fake_x)),
            "cycle": self.cycle(x, y, rec_x, rec_y, fake_mask, y_mask),
        }
        if self.weights["identity"]:
            out["identity"] = losses.identity_loss(
                self.translate(y, with_mask=False)[0], y
            ) + losses.identity_loss(self.restore(x), x)
        out.update(self.mask_losses(x, fake_y, fake_mask, y_mask))
        return out

    def cycle(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        rec_x: torch.Tensor,
        rec_y: torch.Tensor,
        fake_mask: torch.Tensor,
        y_mask: torch.Tensor,
    ) -> torch.Tensor:
        """L_cycle both ways: over the whole image (the paper), or with
        ``model.stabilize.cycle_region=outside_defect`` without the defect's pixels — G's
        thresholded mask for F(G(x)) ≈ x, the real mask for G(F(y)) ≈ y. A defect destroys
        what was under it; asking F to bring it back rewards G for hiding the source in the
        defect as faint colour noise (CycleGAN's steganography)."""
        if self.stabilize["cycle_region"] == "all":
            return losses.cycle_loss(rec_x, x) + losses.cycle_loss(rec_y, y)
        keep_x = 1 - (fake_mask.detach() >= 0.5).to(x.dtype)
        keep_y = 1 - (y_mask >= 0.5).to(y.dtype)
        return losses.cycle_loss(rec_x, x, keep_x) + losses.cycle_loss(rec_y, y, keep_y)

    def mask_losses(
        self,
        x: torch.Tensor,
        fake_y: torch.Tensor,
        fake_mask: torch.Tensor,
        y_mask: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """L_C and L_B of Eq. 4, those the ablation keeps, and the mask-area term when
        ``loss.lambda_area`` > 0 (shared with the controllable model)."""
        out: dict[str, torch.Tensor] = {}
        if "mask_area" in self.terms:
            out["mask_area"] = losses.mask_area_loss(
                fake_mask, y_mask, float(self.loss_config["area_tolerance"])
            )
        if "coherence" in self.terms:
            out["coherence"] = losses.lsgan_generator_loss(
                self.judge("D_C", self.D_C, self.coherence_view(fake_y, fake_mask, real=False))
            )
        if "background" in self.terms:
            out["background"] = losses.background_loss(
                x,
                fake_y,
                fake_mask,
                region=self.loss_config["background_region"],
                reduction=self.loss_config["background_reduction"],
            )
        return out

    def discriminator_losses(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        y_mask: torch.Tensor,
        fake_y: torch.Tensor,
        fake_mask: torch.Tensor,
        fake_x: torch.Tensor,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Each D's loss (with its R1 term when configured), and the R1 values to log."""
        keep = self.batch_ok()
        pooled_y = self.pools["Y"].query(fake_y, keep)
        pooled_x = self.pools["X"].query(fake_x, keep)
        out, extras = {}, {}
        out["D_X"], more = self.discriminator_loss("D_X", self.D_X, x, pooled_x)
        extras.update(more)
        out["D_Y"], more = self.discriminator_loss("D_Y", self.D_Y, y, pooled_y)
        extras.update(more)
        if self.D_C is not None:
            real = self.coherence_view(y, y_mask, real=True)
            fake = self.coherence_view(fake_y, fake_mask, real=False)
            out["D_C"], more = self.discriminator_loss("D_C", self.D_C, real, fake)
            extras.update(more)
        return out, extras

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        x, y, y_mask = batch["normal"], batch["defect"], batch["mask"]
        opt_g, *opt_ds = self.optimizers()

        with self.toggled_optimizer(opt_g):
            fake_y, fake_mask = self.translate(x)
            fake_x = self.restore(y)
            terms = self.generator_losses(x, y, fake_y, fake_mask, fake_x, y_mask)
            weights = self.weights
            total = sum(weights[name] * value for name, value in terms.items())
            # a non-finite loss here makes the rest of the batch a no-op (see ``step``)
            self.step(opt_g, total, "generator", terms)

        logged = self.discriminator_steps(opt_ds, x, y, y_mask, fake_y, fake_mask, fake_x)
        # the share of pixels G marks as defect: a G that hides its defect shows here first
        logged["fake_mask_area"] = (fake_mask.detach() >= 0.5).float().mean()
        self.log_losses(self.with_generator_terms(logged, terms, total), batch_size=x.shape[0])
        self.end_of_step()

    def discriminator_steps(
        self,
        opt_ds: list[Any],
        x: torch.Tensor,
        y: torch.Tensor,
        y_mask: torch.Tensor,
        fake_y: torch.Tensor,
        fake_mask: torch.Tensor,
        fake_x: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """One step per discriminator after the G step; returns their losses for logging."""
        d_losses, extras = self.discriminator_losses(
            x, y, y_mask, fake_y.detach(), fake_mask.detach(), fake_x.detach()
        )
        # each D loss depends on its own network only, so the steps do not interfere
        for (name, value), opt in zip(d_losses.items(), opt_ds, strict=True):
            self.step(opt, value, f"discriminator {name}")
        logged = {f"loss_{k}": v for k, v in d_losses.items()}
        logged.update(extras)
        if self.stabilize["warmup_batches"]:
            # a fill, not a host→device copy (which would wait for the device)
            logged["warmup"] = torch.full((), self.warmup(), device=x.device)
        return logged

    @staticmethod
    def with_generator_terms(
        logged: dict[str, torch.Tensor], terms: dict[str, torch.Tensor], total: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        return {**{f"loss_{k}": v for k, v in terms.items()}, "loss_G_total": total, **logged}
