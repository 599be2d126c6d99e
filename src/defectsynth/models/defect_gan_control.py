"""Controllable defects (beyond the paper): G is told *where* (a requested mask), *what it looks
like* (a noise code z) and, with several defect types, *which* defect to draw.

    G(x, requested, z, type) → (defective image, mask)       F(y) → defect-free image

Everything else is the paper's model (``DefectGAN``): the two-branch generator, D_X, D_Y, D_C on
image ‖ mask, the image pools, ablation switches, warm-up and discriminator augmentation. Three
terms are added, each switchable (``model.control``):

* ``mask_follow`` — G's mask is the requested one (BCE + Dice);
* ``preserve`` — outside the requested region the image is left alone (L1);
* ``diversity`` — mode seeking inside the request: two codes on the same input give different
  defects (bounded: ``losses.mode_seeking_loss``).

Identity with a request: a defective image y asked for a defect exactly where it already has
one (its real mask) with the neutral code z = 0 should come back unchanged, G(y, m_y, 0) = y. The
backward cycle uses the same request and code, G(F(y), m_y, 0) = y: it reconstructs y's defect
from its location alone, which is what the neutral code stands for; random codes stay free to
vary the defect (the diversity term makes them).

At test time ``generate(x)`` needs no request: it draws one of the real training masks stored in
the checkpoint (``mask_bank``, flipped and rotated by 90° at random) and a random code, so
evaluation and the tables treat this model like any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from defectsynth.errors import ConfigError
from defectsynth.models import losses
from defectsynth.models.base import merged_options
from defectsynth.models.defect_gan import DefectGAN
from defectsynth.models.generator import ControllableGenerator, DefectGenerator

CONTROL_DEFAULTS: dict[str, Any] = {
    "z_dim": 8,
    "n_types": None,  # null: the number of data.defect types, set when training starts
    "gate_mask": True,  # G's mask = request ⊙ mask branch: never outside the request
    "code_map": False,  # the code also enters as a spatial field (an input channel)
    "modulate_decoder": False,  # the code also scales/shifts the image branch's up-sampling
    "mask_follow": True,
    "preserve": True,
    "diversity": True,
    "lambda_mask": 10.0,
    "lambda_preserve": 10.0,
    "lambda_diversity": 1.0,
    "diversity_target": 0.5,  # mode seeking stops once codes differ this much (losses)
    "mask_loss": "bce_dice",
    "bank_size": 64,  # real training masks kept in the checkpoint for generate(x)
}
# term → its λ in model.control; a term switched off (model.control.<term>=false) is not computed
CONTROL_TERMS = {
    "mask_follow": "lambda_mask",
    "preserve": "lambda_preserve",
    "diversity": "lambda_diversity",
}


class DefectGANControl(DefectGAN):
    """The paper's model with a requested mask, a noise code and an optional defect type."""

    #: synthesis asks this model for requested masks, codes and types
    is_controllable: bool = True

    def __init__(self, control: dict[str, Any] | None = None, **options: Any) -> None:
        super().__init__(**options)  # DefectGAN's save_hyperparameters also records ``control``
        self.control = merged_options(CONTROL_DEFAULTS, control, "model.control")
        if self.control["mask_loss"] not in losses.MASK_FOLLOW_KINDS:
            raise ConfigError(
                f"model.control.mask_loss={self.control['mask_loss']!r}; expected one of "
                f"{list(losses.MASK_FOLLOW_KINDS)}"
            )
        if not float(self.control["diversity_target"]) > 0:
            raise ConfigError(
                f"model.control.diversity_target={self.control['diversity_target']!r}; expected "
                "a positive mean |Δ| per unit code distance (e.g. 0.5)"
            )
        self.generator_options = dict(options.get("generator") or {})
        self.G = self._controllable_generator(int(self.control["n_types"] or 1))
        # F maps back to the image only (as in the paper its mask feeds no loss): no branch
        self.F = DefectGenerator(**self.generator_options, with_mask=False)
        self.control_terms = tuple(t for t in CONTROL_TERMS if self.control[t])
        self.register_buffer("mask_bank", torch.zeros(0, 1, 1, 1, dtype=torch.uint8))
        self.register_buffer("mask_bank_types", torch.zeros(0, dtype=torch.long))

    def _controllable_generator(self, n_types: int) -> ControllableGenerator:
        return ControllableGenerator(
            **self.generator_options,
            z_dim=int(self.control["z_dim"]),
            n_types=n_types,
            gate_mask=bool(self.control["gate_mask"]),
            code_map=bool(self.control["code_map"]),
            modulate_decoder=bool(self.control["modulate_decoder"]),
        )

    def trains_g_mask(self) -> bool:
        return super().trains_g_mask() or "mask_follow" in self.control_terms

    @property
    def n_types(self) -> int:
        return self.G.n_types

    @property
    def weights(self) -> dict[str, float]:
        """The paper's λ (``loss=``, with its warm-up) plus the control terms' λ."""
        extra = {t: float(self.control[CONTROL_TERMS[t]]) for t in self.control_terms}
        return {**super().weights, **extra}

    # ------------------------------------------------------------------ data → model
    def setup(self, stage: str) -> None:
        """Take the number of defect types and the mask bank from the datamodule (before the
        optimisers exist, so a resized G is what they optimise)."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        if datamodule is None:
            return
        types = list(getattr(datamodule, "defect_types", None) or [])
        n_types = max(1, len(types))
        configured = self.control["n_types"]
        if configured is not None and int(configured) != n_types:
            raise ConfigError(
                f"model.control.n_types={configured} but data.defect has {n_types} type(s) "
                f"({types}); set it to null (taken from the data)"
            )
        if n_types != self.n_types:
            self.G = self._controllable_generator(n_types).to(self.device)
        self.control["n_types"] = n_types
        self.hparams["control"] = {**(self.hparams.get("control") or {}), "n_types": n_types}
        sampler = getattr(datamodule, "requested_sampler", None)
        if sampler is None:
            raise ConfigError(
                "model=defect_gan_control needs requested masks in its batches: set "
                "data.requested_masks=true"
            )
        self.store_mask_bank(sampler.masks, sampler.types)

    def store_mask_bank(self, masks: Sequence[Any], types: Sequence[int]) -> None:
        """Keep up to ``bank_size`` real masks (evenly spaced, so every type is represented)."""
        step = max(1, -(-len(masks) // int(self.control["bank_size"])))
        picked = list(range(0, len(masks), step))
        bank = torch.stack([torch.as_tensor(masks[i]).to(torch.uint8) for i in picked])
        self.mask_bank = bank.unsqueeze(1).to(self.device)
        self.mask_bank_types = torch.tensor([int(types[i]) for i in picked], device=self.device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        # the bank's size is known only once it is read: take the stored shape
        for name in ("mask_bank", "mask_bank_types"):
            stored = state_dict.get(prefix + name)
            if stored is not None:
                setattr(self, name, torch.empty_like(stored, device=self.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ test-time controls
    def codes(self, seeds: Sequence[int]) -> torch.Tensor:
        """One N(0, I) code per integer seed (a pure function of the seed)."""
        z_dim = int(self.control["z_dim"])
        rows = [torch.randn(z_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
        return torch.stack(rows).to(self.device)

    def fallback_masks(
        self, seeds: Sequence[int], defect_types: Sequence[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Requested masks when none is given: a stored real mask (of the type, when given),
        flipped and rotated by a multiple of 90° — from each seed alone. Returns (masks, types)."""
        if len(self.mask_bank) == 0:
            raise ConfigError(
                "this model stores no training masks (it was not trained with "
                "data.requested_masks=true): pass requested masks (placement=...)"
            )
        out, types = [], []
        for i, seed in enumerate(seeds):
            g = torch.Generator().manual_seed(int(seed))
            pool = torch.arange(len(self.mask_bank))
            if defect_types is not None:
                pool = pool[self.mask_bank_types.cpu() == int(defect_types[i])]
                if len(pool) == 0:
                    raise ConfigError(f"no stored mask of defect type {defect_types[i]}")
            k = int(pool[int(torch.randint(len(pool), (1,), generator=g))])
            mask = self.mask_bank[k].float()
            flips = torch.randint(2, (2,), generator=g).tolist()
            dims = [d for d, f in zip((1, 2), flips, strict=True) if f]
            mask = mask.flip(dims) if dims else mask
            if mask.shape[1] == mask.shape[2]:
                mask = torch.rot90(mask, int(torch.randint(4, (1,), generator=g)), (1, 2))
            out.append(mask)
            types.append(int(self.mask_bank_types[k]))
        return torch.stack(out), torch.tensor(types, device=self.device)

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        requested: torch.Tensor,
        z: torch.Tensor,
        defect_type: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.translate(x, requested, z, self._types(defect_type, len(x)))
        assert mask is not None
        return image, mask

    def generate(  # type: ignore[override]
        self,
        x: torch.Tensor,
        requested: torch.Tensor | None = None,
        z: torch.Tensor | None = None,
        defect_type: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Missing controls are drawn from torch's global RNG: a stored training mask (of the
        given type) and its type, and an N(0, I) code."""
        n = len(x)
        if requested is None:
            seeds = torch.randint(2**31 - 1, (n,)).tolist()
            types = None if defect_type is None else self._types(defect_type, n).tolist()
            requested, drawn_types = self.fallback_masks(seeds, types)
            requested = nn.functional.interpolate(requested, size=x.shape[-2:], mode="nearest")
            defect_type = drawn_types if defect_type is None else defect_type
        if z is None:
            z = torch.randn(n, int(self.control["z_dim"]), device=x.device)
        return self(x, requested.to(x.device), z.to(x.device), defect_type)

    def _types(self, defect_type: torch.Tensor | None, n: int) -> torch.Tensor | None:
        """The type tensor G expects: None with one type; else (N,) long on the device."""
        if self.n_types == 1:
            return None
        if defect_type is None:
            raise ValueError(f"this model has {self.n_types} defect types: pass defect_type")
        t = torch.as_tensor(defect_type, device=self.device).long().reshape(-1)
        return t.expand(n) if t.numel() == 1 else t

    # ------------------------------------------------------------------ training
    def control_losses(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        y_mask: torch.Tensor,
        requested: torch.Tensor,
        z: torch.Tensor,
        types: torch.Tensor | None,
        fake_y: torch.Tensor,
        fake_mask: torch.Tensor,
        fake_x: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Each unweighted generator term for one batch (the paper's and the control ones)."""
        zero = torch.zeros_like(z)
        rec_x = self.restore(fake_y)
        rec_y, _ = self.translate(fake_x, y_mask, zero, types, with_mask=False)
        out = {
            "gan_G": losses.lsgan_generator_loss(self.judge("D_Y", self.D_Y, fake_y)),
            "gan_F": losses.lsgan_generator_loss(self.judge("D_X", self.D_X, fake_x)),
            "cycle": self.cycle(x, y, rec_x, rec_y, fake_mask, y_mask),
        }
        if self.weights["identity"]:
            same_y, _ = self.translate(y, y_mask, zero, types, with_mask=False)
            out["identity"] = losses.identity_loss(same_y, y) + losses.identity_loss(
                self.restore(x), x
            )
        out.update(self.mask_losses(x, fake_y, fake_mask, y_mask))
        if "mask_follow" in self.control_terms:
            out["mask_follow"] = losses.mask_follow_loss(
                fake_mask, requested, self.control["mask_loss"]
            )
        if "preserve" in self.control_terms:
            out["preserve"] = losses.preservation_loss(x, fake_y, requested)
        if "diversity" in self.control_terms:
            z2 = torch.randn_like(z)
            other, _ = self.translate(x, requested, z2, types, with_mask=False)
            out["diversity"] = losses.mode_seeking_loss(
                fake_y, other, z, z2, requested, float(self.control["diversity_target"])
            )
        return out

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        if "requested_mask" not in batch:
            raise ConfigError(
                "model=defect_gan_control needs requested masks in its batches: set "
                "data.requested_masks=true"
            )
        x, y, y_mask = batch["normal"], batch["defect"], batch["mask"]
        requested = batch["requested_mask"].to(x.dtype)
        types = self._types(batch.get("defect_type"), len(x)) if self.n_types > 1 else None
        opt_g, *opt_ds = self.optimizers()
        z = torch.randn(len(x), int(self.control["z_dim"]), device=x.device)

        with self.toggled_optimizer(opt_g):
            fake_y, fake_mask = self.translate(x, requested, z, types)
            assert fake_mask is not None
            fake_x = self.restore(y)
            terms = self.control_losses(
                x, y, y_mask, requested, z, types, fake_y, fake_mask, fake_x
            )
            weights = self.weights
            total = sum(weights[name] * value for name, value in terms.items())
            self.step(opt_g, total, "generator", terms)

        logged = self.discriminator_steps(opt_ds, x, y, y_mask, fake_y, fake_mask, fake_x)
        logged = self.with_generator_terms(logged, terms, total)
        with torch.no_grad():
            # how well the mask follows the request: the number to watch in this model
            hard = fake_mask.detach() >= 0.5
            want = requested >= 0.5
            inter = (hard & want).flatten(1).sum(1).float()
            union = (hard | want).flatten(1).sum(1).float().clamp_min(1)
            logged["mask_iou"] = (inter / union).mean()
        self.log_losses(logged, batch_size=x.shape[0])
        self.end_of_step()
