"""70×70 PatchGAN (Isola et al.): classifies overlapping patches as real or fake."""

from __future__ import annotations

import torch
from torch import nn

from defectsynth.models.init import init_weights
from defectsynth.models.norm import conv_bias, norm_layer


class PatchDiscriminator(nn.Module):
    """``n_layers`` stride-2 4×4 convolutions, one stride-1, then a 1-channel patch score map.

    D_X and D_Y see 3-channel images; D_C sees image ‖ mask (4 channels).
    """

    def __init__(
        self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "instance"
    ) -> None:
        super().__init__()
        bias = conv_bias(norm)
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        width = ndf
        for i in range(1, n_layers + 1):
            next_width = ndf * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers += [
                nn.Conv2d(width, next_width, 4, stride=stride, padding=1, bias=bias),
                norm_layer(norm)(next_width),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            width = next_width
        layers.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.layers = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
