"""The paper's generator (Fig. 1): a ResNet trunk feeding two coupled up-sampling branches.

    x ──► ResNetTrunk ──► ImageBranch (B_img) ──────────────► G_img(x) ∈ [-1, 1]
                     │          │ level-1, level-2 features
                     │          ▼
                     └──► MaskBranch (B_mask) ── fuse ── fuse ► G_mask(x) ∈ [0, 1]

Information flows from the image branch to the mask branch only, so the mask "reads" the
defect the image branch is drawing. The inverse mapping F uses the same class.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from defectsynth.models.init import init_weights
from defectsynth.models.norm import conv_bias, norm_layer


def conv_norm_relu(
    in_channels: int, out_channels: int, kernel_size: int, norm: str, stride: int = 1
) -> nn.Sequential:
    """Convolution → normalisation → ReLU; reflection padding keeps borders free of zero-rims."""
    pad = kernel_size // 2
    layers: list[nn.Module] = []
    if pad and stride == 1:
        layers.append(nn.ReflectionPad2d(pad))
        pad = 0
    layers += [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, pad, bias=conv_bias(norm)),
        norm_layer(norm)(out_channels),
        nn.ReLU(inplace=True),
    ]
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """Two 3×3 convolutions with a skip connection (He et al.), as in CycleGAN."""

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_norm_relu(channels, channels, 3, norm),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=conv_bias(norm)),
            norm_layer(norm)(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNetTrunk(nn.Module):
    """7×7 stem, two stride-2 down-samplings, then ``n_blocks`` residual blocks (4·ngf wide)."""

    def __init__(
        self, in_channels: int = 3, ngf: int = 64, n_blocks: int = 9, norm: str = "instance"
    ):
        super().__init__()
        self.stem = conv_norm_relu(in_channels, ngf, 7, norm)
        self.down = nn.Sequential(
            conv_norm_relu(ngf, 2 * ngf, 3, norm, stride=2),
            conv_norm_relu(2 * ngf, 4 * ngf, 3, norm, stride=2),
        )
        self.blocks = nn.Sequential(*(ResidualBlock(4 * ngf, norm) for _ in range(n_blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.down(self.stem(x)))


UPSAMPLES = ("transpose", "resize")
CODE_MAP_SIZE = 8  # the controllable G's code field, bilinearly up-sampled to the image


class UpBlock(nn.Module):
    """Doubles the resolution → norm → ReLU. ``transpose``: a stride-2 transposed convolution
    (the paper's CycleGAN generator); ``resize``: nearest-neighbour ×2 then a 3×3 convolution
    (Odena et al. 2016), which cannot print the transposed convolution's checkerboard — the
    dotted grid that early, low-data training leaves in the defects and masks."""

    def __init__(
        self, in_channels: int, out_channels: int, norm: str, upsample: str = "transpose"
    ) -> None:
        super().__init__()
        if upsample not in UPSAMPLES:
            raise ValueError(f"model.generator.upsample={upsample!r}; expected one of {UPSAMPLES}")
        bias = conv_bias(norm)
        double: list[nn.Module] = (
            [nn.ConvTranspose2d(in_channels, out_channels, 3, 2, 1, output_padding=1, bias=bias)]
            if upsample == "transpose"
            else [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.ReflectionPad2d(1),
                nn.Conv2d(in_channels, out_channels, 3, bias=bias),
            ]
        )
        self.layers = nn.Sequential(
            *double,
            norm_layer(norm)(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(
        self, x: torch.Tensor, scale_shift: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """``scale_shift`` (γ, β), each (N, C): adaptive instance normalisation — the
        normalised features become h ⊙ (1 + γ) + β before the ReLU, so a code decides, per
        sample, which features pass."""
        if scale_shift is None:
            return self.layers(x)
        *resample_and_norm, relu = self.layers
        h = x
        for layer in resample_and_norm:
            h = layer(h)
        gamma, beta = scale_shift
        return relu(h * (1 + gamma[..., None, None]) + beta[..., None, None])


def output_head(in_channels: int, out_channels: int, activation: nn.Module) -> nn.Sequential:
    """Final 7×7 convolution to the output channels, then the output range activation."""
    return nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(in_channels, out_channels, 7), activation)


class ImageBranch(nn.Module):
    """B_img: two up-sampling blocks and a tanh head; also returns each block's features."""

    def __init__(
        self,
        ngf: int = 64,
        out_channels: int = 3,
        norm: str = "instance",
        upsample: str = "transpose",
    ) -> None:
        super().__init__()
        self.up = nn.ModuleList(
            [UpBlock(4 * ngf, 2 * ngf, norm, upsample), UpBlock(2 * ngf, ngf, norm, upsample)]
        )
        self.head = output_head(ngf, out_channels, nn.Tanh())

    def forward(
        self,
        h: torch.Tensor,
        modulations: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``modulations``: one (γ, β) per up-sampling block (:meth:`UpBlock.forward`)."""
        features = []
        for k, block in enumerate(self.up):
            h = block(h, modulations[k] if modulations is not None else None)
            features.append(h)
        return self.head(h), features


class MaskBranch(nn.Module):
    """B_mask: after each up-sampling block, concatenate B_img's features of the same level and
    fuse them with a 1×1 convolution back to the block's width; sigmoid head."""

    def __init__(self, ngf: int = 64, norm: str = "instance", upsample: str = "transpose") -> None:
        super().__init__()
        widths = (2 * ngf, ngf)
        self.up = nn.ModuleList(
            [
                UpBlock(4 * ngf, widths[0], norm, upsample),
                UpBlock(widths[0], widths[1], norm, upsample),
            ]
        )
        self.fuse = nn.ModuleList([conv_norm_relu(2 * w, w, 1, norm) for w in widths])
        self.head = output_head(ngf, 1, nn.Sigmoid())

    def forward(self, h: torch.Tensor, image_features: list[torch.Tensor]) -> torch.Tensor:
        for block, fuse, image_h in zip(self.up, self.fuse, image_features, strict=True):
            h = fuse(torch.cat([block(h), image_h], dim=1))
        return self.head(h)


class DefectGenerator(nn.Module):
    """G (and F): ``x ↦ (image, mask)``; ``mask`` is None when built without the mask branch."""

    def __init__(
        self,
        ngf: int = 64,
        n_blocks: int = 9,
        norm: str = "instance",
        in_channels: int = 3,
        out_channels: int = 3,
        with_mask: bool = True,
        upsample: str = "transpose",
    ) -> None:
        super().__init__()
        self.trunk = ResNetTrunk(in_channels, ngf, n_blocks, norm)
        self.image_branch = ImageBranch(ngf, out_channels, norm, upsample)
        self.mask_branch = MaskBranch(ngf, norm, upsample) if with_mask else None
        init_weights(self)

    def forward(
        self, x: torch.Tensor, with_mask: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``with_mask=False`` skips the mask branch where only the image is needed (cycle and
        identity terms), saving its compute."""
        h = self.trunk(x)
        image, features = self.image_branch(h)
        if not with_mask or self.mask_branch is None:
            return image, None
        return image, self.mask_branch(h, features)


class ControllableGenerator(DefectGenerator):
    """G of the controllable model: ``(x, requested mask, code z, defect type) ↦ (image, mask)``.

    The requested mask enters as a 4th input channel (in [-1, 1], like the image): it is
    spatial, so instance normalisation keeps it. The code and the type's one-hot are *not*
    broadcast as constant channels — every normalisation after the stem would subtract a
    spatially constant channel away — but modulate the trunk's output per channel (FiLM:
    h ⊙ (1 + γ) + β), which the branches' normalisations cannot undo for γ.

    With ``gate_mask`` the mask branch only chooses *within* the request: mask = request ⊙
    branch. A request learnt through the trunk alone (down-sampled 4×, then judged by D_C) was
    measured to be ignored (README, Table 5); gated, the defect cannot leave the requested region.

    With ``modulate_decoder`` the code (and type) also sets, per up-sampling block of the image
    branch, the scale and shift applied after its instance normalisation (AdaIN, as in MUNIT or
    StyleGAN): the trunk FiLM passes through a convolution and a normalisation before it reaches
    the pixels, which largely undo it — measured, codes then barely changed the defect.
    """

    def __init__(
        self,
        ngf: int = 64,
        n_blocks: int = 9,
        norm: str = "instance",
        z_dim: int = 8,
        n_types: int = 1,
        upsample: str = "transpose",
        gate_mask: bool = True,
        code_map: bool = False,
        modulate_decoder: bool = False,
    ) -> None:
        in_channels = 5 if code_map else 4
        super().__init__(
            ngf,
            n_blocks,
            norm,
            in_channels=in_channels,
            out_channels=3,
            with_mask=True,
            upsample=upsample,
        )
        if z_dim < 1 or n_types < 1:
            raise ValueError(f"z_dim={z_dim} and n_types={n_types} must be >= 1")
        self.z_dim, self.n_types, self.gate_mask = z_dim, n_types, gate_mask
        # the code also as a smooth spatial field (an input channel): per-pixel variation that
        # no normalisation removes, where FiLM's per-channel scale was measured to be ignored
        self.code_map = nn.Linear(z_dim, CODE_MAP_SIZE**2) if code_map else None
        if self.code_map is not None:
            nn.init.normal_(self.code_map.weight, 0.0, z_dim**-0.5)  # a unit-variance field
            nn.init.zeros_(self.code_map.bias)
        # one type needs no type input: its one-hot would be a constant
        self.type_dim = n_types if n_types > 1 else 0
        self.film = nn.Linear(z_dim + self.type_dim, 2 * 4 * ngf)
        init_weights(self.film)
        # one (γ, β) per up-sampling block of the image branch, widths 2·ngf then ngf
        self.decoder_film = (
            nn.ModuleList(nn.Linear(z_dim + self.type_dim, 2 * w) for w in (2 * ngf, ngf))
            if modulate_decoder
            else None
        )
        if self.decoder_film is not None:
            init_weights(self.decoder_film)

    def condition(self, z: torch.Tensor, defect_type: torch.Tensor | None) -> torch.Tensor:
        """The FiLM input: the code, followed by the type's one-hot when there are types."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"codes must be (N, {self.z_dim}), got {tuple(z.shape)}")
        if not self.type_dim:
            return z
        if defect_type is None:
            raise ValueError(f"this generator has {self.n_types} defect types: pass defect_type")
        # checked on the host for the types a user asks for (eval mode: synthesis); training
        # batches carry the datamodule's own indices, and reading them would make every step
        # wait for the device (a bad one still fails in one_hot, or a device-side assert)
        if not self.training and (
            int(defect_type.min()) < 0 or int(defect_type.max()) >= self.n_types
        ):
            raise ValueError(f"defect_type out of range 0..{self.n_types - 1}")
        one_hot = nn.functional.one_hot(defect_type.long(), self.n_types).to(z.dtype)
        return torch.cat([z, one_hot], dim=1)

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        requested: torch.Tensor,
        z: torch.Tensor,
        defect_type: torch.Tensor | None = None,
        with_mask: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if requested.shape[0] != x.shape[0] or requested.shape[1:] != (1, *x.shape[2:]):
            raise ValueError(
                f"requested mask {tuple(requested.shape)} does not fit images {tuple(x.shape)}"
            )
        inputs = [x, requested.to(x.dtype) * 2 - 1]
        if self.code_map is not None:
            field = self.code_map(z.to(x.dtype)).view(-1, 1, CODE_MAP_SIZE, CODE_MAP_SIZE)
            inputs.append(
                nn.functional.interpolate(
                    field, size=x.shape[-2:], mode="bilinear", align_corners=False
                )
            )
        h = self.trunk(torch.cat(inputs, dim=1))
        condition = self.condition(z, defect_type)
        gamma, beta = self.film(condition).to(h.dtype).chunk(2, dim=1)
        h = h * (1 + gamma[..., None, None]) + beta[..., None, None]
        modulations = None
        if self.decoder_film is not None:
            modulations = [
                tuple(layer(condition).to(h.dtype).chunk(2, dim=1)) for layer in self.decoder_film
            ]
        image, features = self.image_branch(h, modulations)
        if not with_mask or self.mask_branch is None:
            return image, None
        mask = self.mask_branch(h, features)
        return image, mask * requested.to(mask.dtype) if self.gate_mask else mask
