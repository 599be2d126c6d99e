"""CUT and FastCUT (Park et al., ECCV 2020) and NEGCUT (Wang et al., ICCV 2021).

One generator G: normal → defective (the proposed model's ResNet generator without the mask
branch) and one PatchGAN D, no inverse mapping. Instead of a cycle, PatchNCE ties each output
patch to the source patch at the same location in the feature space of G's own encoder:

    x ──► G ──► G(x) ──► D                         L_GAN (least squares)
    │           │
    └► encoder  └► encoder ──► heads H_l ──► PatchNCE(q = H_l(G(x)), k = H_l(x))  per layer l

CUT adds the same term on G(y) vs y (NCE identity, averaged with the first); FastCUT drops it,
weighs NCE 10× and trains with flip-equivariance; NEGCUT replaces the in-image negatives by hard
negatives from a negative generator that is trained to maximise PatchNCE.

Per batch, as in CUT: one D step, then one step on G and the projection heads together
(NEGCUT: then one step of the negative generator).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from defectsynth.errors import ConfigError
from defectsynth.models import losses
from defectsynth.models.base import GANModule, merged_options, seeded_pools
from defectsynth.models.baselines.patchnce import (
    NegativeGenerator,
    ProjectionHead,
    gather_patches,
    negative_generator_loss,
    patchnce_loss,
    sample_locations,
)
from defectsynth.models.discriminator import PatchDiscriminator
from defectsynth.models.generator import DefectGenerator, ResNetTrunk

# CUT's NCE layers 0, 4, 8, 12, 16 of its ResNet generator, named by what they are in
# ResNetTrunk; "block<k>" is clamped to the trunk's number of residual blocks
CUT_LAYERS = ("input", "stem", "down1", "block1", "block5")
NCE_DEFAULTS: dict[str, Any] = {
    "lambda_gan": 1.0,
    "lambda_nce": 1.0,
    "identity": True,  # NCE identity term on G(y) (CUT); FastCUT: false
    "flip_equivariance": False,  # FastCUT: true
    "layers": CUT_LAYERS,
    "n_patches": 256,
    "temperature": 0.07,
    "head_width": 256,
}
NEGATIVE_DEFAULTS: dict[str, Any] = {"n_negatives": 256, "noise_dim": 64, "width": 256}
INITS = ("xavier", "normal")
_BLOCK = re.compile(r"block(\d+)")


# --------------------------------------------------------------------------- encoder taps
def resolve_layers(names: Sequence[str], n_blocks: int) -> tuple[str, ...]:
    """Validate NCE layer names; ``block<k>`` beyond the trunk becomes its last block (small
    test networks), and a layer named twice after that is kept once."""
    resolved = []
    for name in names:
        block = _BLOCK.fullmatch(name)
        if block and int(block.group(1)) >= 1:
            name = f"block{min(int(block.group(1)), n_blocks)}"
        elif name not in ("input", "stem", "down1", "down2"):
            raise ConfigError(
                f"model.nce.layers has {name!r}; expected input, stem, down1, down2 or block<k>"
            )
        if name not in resolved:
            resolved.append(name)
    return tuple(resolved)


def layer_channels(name: str, in_channels: int, ngf: int) -> int:
    """Channels of an encoder tap of a ResNetTrunk of width ``ngf``."""
    return {"input": in_channels, "stem": ngf, "down1": 2 * ngf}.get(name, 4 * ngf)


def trunk_stages(trunk: ResNetTrunk) -> Iterator[tuple[str, nn.Module | None]]:
    """The trunk as named stages in order (``input`` is the image itself)."""
    yield "input", None
    yield "stem", trunk.stem
    yield "down1", trunk.down[0]
    yield "down2", trunk.down[1]
    for i, block in enumerate(trunk.blocks):
        yield f"block{i + 1}", block


def encoder_features(
    trunk: ResNetTrunk, x: torch.Tensor, layers: Sequence[str]
) -> list[torch.Tensor]:
    """The features at ``layers``, running the trunk only as deep as the deepest of them."""
    found: dict[str, torch.Tensor] = {}
    h = x
    for name, stage in trunk_stages(trunk):
        if stage is not None:
            h = stage(h)
        if name in layers:
            found[name] = h
            if len(found) == len(layers):
                break
    return [found[name] for name in layers]


def xavier_init(module: nn.Module, gain: float = 0.02) -> nn.Module:
    """CUT's default initialisation: Xavier-normal weights (gain 0.02), zero biases, affine norms
    N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.xavier_normal_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.InstanceNorm2d) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return module


@dataclass(frozen=True)
class NCEPatches:
    """One layer's projected patches of one PatchNCE term (detached), and the source image's
    mean feature of that layer: what the negative generator's step needs."""

    layer: int
    query: torch.Tensor
    key: torch.Tensor
    condition: torch.Tensor


# --------------------------------------------------------------------------- the model
class CUT(GANModule):
    """Contrastive unpaired translation; ``nce`` options select CUT or FastCUT."""

    has_mask_output = False

    def __init__(
        self,
        generator: dict[str, Any] | None = None,
        discriminator: dict[str, Any] | None = None,
        nce: dict[str, Any] | None = None,
        optimizer: dict[str, Any] | None = None,
        schedule: dict[str, Any] | None = None,
        pool_size: int = 0,
        init: str = "xavier",
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
        generator = {"ngf": 64, "n_blocks": 9, "norm": "instance", **(generator or {})}
        self.nce_config = merged_options(NCE_DEFAULTS, nce, "model.nce")
        if init not in INITS:
            raise ConfigError(f"model.init={init!r}; expected one of {list(INITS)}")
        self.init = init

        self.G = DefectGenerator(**generator, with_mask=False)
        self.D = PatchDiscriminator(3, **(discriminator or {}))
        self.layers = resolve_layers(self.nce_config["layers"], generator["n_blocks"])
        # sized from the generator config (not from a first batch) so that a checkpoint loads
        # into a freshly built model
        self.layer_channels = [layer_channels(name, 3, generator["ngf"]) for name in self.layers]
        width = self.nce_config["head_width"]
        self.heads = nn.ModuleList(ProjectionHead(c, width) for c in self.layer_channels)
        if init == "xavier":
            xavier_init(self)
        self.pools = seeded_pools(pool_size, "Y")  # CUT's default: no pool (pool_size=0)

    # ------------------------------------------------------------------ structure
    def optimizer_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        """D first (CUT updates D before G); G and the projection heads share one Adam (CUT uses
        two Adams with equal settings, which is the same per-parameter update)."""
        return {
            "D": self.D.parameters(),
            "G": itertools.chain(self.G.parameters(), self.heads.parameters()),
        }

    def generate(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.G(x, with_mask=False)[0], None

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        return encoder_features(self.G.trunk, x, self.layers)

    def negatives(self, layer: int, condition: torch.Tensor) -> torch.Tensor | None:
        """PatchNCE negatives at ``layer`` for a source with mean feature ``condition``; None:
        the source's other sampled locations (CUT)."""
        return None

    # ------------------------------------------------------------------ losses
    def nce_loss(
        self, source: torch.Tensor, output: torch.Tensor, flipped: bool
    ) -> tuple[torch.Tensor, list[NCEPatches]]:
        """PatchNCE between G's encodings of ``output`` (queries) and ``source`` (keys),
        averaged over the layers. ``flipped``: ``output`` was made from the h-flipped source, so
        its features are flipped back before they are compared (flip-equivariance)."""
        query_features = self.encode(output)
        if flipped:
            query_features = [f.flip(3) for f in query_features]
        with torch.no_grad():  # keys are constants in CUT
            key_features = self.encode(source)
        terms, patches = [], []
        tau = self.nce_config["temperature"]
        for layer, (head, fq, fk) in enumerate(
            zip(self.heads, query_features, key_features, strict=True)
        ):
            where = sample_locations(
                fk.shape[2] * fk.shape[3], self.nce_config["n_patches"], fk.device
            )
            with torch.no_grad():
                key = head(gather_patches(fk, where))
            query = head(gather_patches(fq, where))
            condition = fk.mean(dim=(2, 3))
            terms.append(patchnce_loss(query, key, self.negatives(layer, condition), tau))
            patches.append(NCEPatches(layer, query.detach(), key, condition))
        return torch.stack(terms).mean(), patches

    def generator_losses(
        self, x: torch.Tensor, y: torch.Tensor, fake: torch.Tensor, flipped: bool
    ) -> tuple[dict[str, torch.Tensor], list[NCEPatches]]:
        """Unweighted terms: ``gan`` on G(x), ``nce`` (x vs G(x)) and, with the identity option,
        ``nce_identity`` (y vs G(y)); ``fake`` is G of x (‖ y), computed once by the caller."""
        fake_y = fake[: len(x)]
        terms = {"gan": losses.lsgan_generator_loss(self.judge("D", self.D, fake_y))}
        terms["nce"], patches = self.nce_loss(x, fake_y, flipped)
        if self.nce_config["identity"]:
            terms["nce_identity"], more = self.nce_loss(y, fake[len(x) :], flipped)
            patches += more
        return terms, patches

    def weighted_total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """λ_GAN·L_GAN + λ_NCE·mean(NCE terms): CUT averages L_NCE(x) and L_NCE(y)."""
        nce = [v for k, v in terms.items() if k.startswith("nce")]
        return (
            self.nce_config["lambda_gan"] * terms["gan"]
            + self.nce_config["lambda_nce"] * torch.stack(nce).mean()
        )

    def d_loss(
        self, y: torch.Tensor, fake_y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        fake_y = self.pools["Y"].query(fake_y)
        return self.discriminator_loss("D", self.D, y, fake_y.detach())

    # ------------------------------------------------------------------ training
    def flip_this_batch(self) -> bool:
        """FastCUT's flip-equivariance: half of the batches are translated h-flipped."""
        return bool(self.nce_config["flip_equivariance"]) and bool(torch.rand(()) < 0.5)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        x, y = batch["normal"], batch["defect"]
        opt_d, opt_g, *others = self.optimizers()
        flipped = self.flip_this_batch()
        # one pass of G over x (‖ y for the NCE identity term), as CUT does
        real = torch.cat([x, y]) if self.nce_config["identity"] else x
        fake = self.G(real.flip(3) if flipped else real, with_mask=False)[0]

        d_loss, extras = self.d_loss(y, fake[: len(x)])
        self.step(opt_d, d_loss, "discriminator")

        with self.toggled_optimizer(opt_g):
            terms, patches = self.generator_losses(x, y, fake, flipped)
            total = self.weighted_total(terms)
            self.step(opt_g, total, "generator", terms)

        logged = {f"loss_{k}": v for k, v in terms.items()}
        logged["loss_G_total"] = total
        logged["loss_D"] = d_loss
        logged.update(extras)
        logged.update(self.after_generator_step(patches, others))
        self.log_losses(logged, batch_size=x.shape[0])
        self.end_of_step()

    def after_generator_step(
        self, patches: list[NCEPatches], optimizers: list[Any]
    ) -> dict[str, torch.Tensor]:
        """Further optimiser steps of a subclass; returns what to log."""
        return {}


class NegCUT(CUT):
    """NEGCUT: CUT whose PatchNCE negatives come from one :class:`NegativeGenerator` per NCE
    layer, trained after each G step to maximise the PatchNCE loss. ``negatives`` holds its
    options (``n_negatives``, ``noise_dim``, ``width``); every other argument is CUT's."""

    def __init__(self, negatives: dict[str, Any] | None = None, **options: Any) -> None:
        super().__init__(**options)  # CUT's save_hyperparameters also records ``negatives``
        config = merged_options(NEGATIVE_DEFAULTS, negatives, "model.negatives")
        width = self.nce_config["head_width"]
        self.N = nn.ModuleList(
            NegativeGenerator(c, out_dim=width, **config) for c in self.layer_channels
        )
        if self.init == "xavier":
            xavier_init(self.N)

    def optimizer_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        return {**super().optimizer_groups(), "N": self.N.parameters()}

    def negatives(self, layer: int, condition: torch.Tensor) -> torch.Tensor:
        # constants for G's step: only N's own step trains N
        return self.N[layer](condition.detach()).detach()

    def after_generator_step(
        self, patches: list[NCEPatches], optimizers: list[Any]
    ) -> dict[str, torch.Tensor]:
        (opt_n,) = optimizers
        tau = self.nce_config["temperature"]
        loss = torch.stack(
            [
                negative_generator_loss(p.query, p.key, self.N[p.layer](p.condition), tau)
                for p in patches
            ]
        ).mean()
        self.step(opt_n, loss, "negative generator")
        return {"loss_N": loss}
