"""PatchNCE (Park et al., ECCV 2020) and NEGCUT's negative generator (Wang et al., ICCV 2021).

For one encoder layer of the generator:

    encoder(source)  ─► P random locations ─► ProjectionHead ─► keys    k (B, P, d)
    encoder(output)  ─► the same locations ─► ProjectionHead ─► queries q (B, P, d)

    L_NCE = mean over (b, p) of  −log  exp(q·k⁺ / τ) / (exp(q·k⁺ / τ) + Σ_n exp(q·k⁻_n / τ))

k⁺ is the key at the query's own location; the negatives k⁻ are the keys at the image's other
sampled locations (CUT) or hard negatives made by a :class:`NegativeGenerator` (NEGCUT).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def sample_locations(n_locations: int, n_patches: int, device: torch.device) -> torch.Tensor:
    """Flat indices of ``min(n_patches, n_locations)`` distinct random locations; one draw for
    the whole batch and for both queries and keys, so that location p pairs with location p."""
    return torch.randperm(n_locations, device=device)[:n_patches]


def gather_patches(features: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) features at the flat ``locations`` → (B, P, C)."""
    return features.flatten(2)[:, :, locations].transpose(1, 2)


def patchnce_loss(
    query: torch.Tensor,
    key: torch.Tensor,
    negatives: torch.Tensor | None = None,
    temperature: float = 0.07,
) -> torch.Tensor:
    """PatchNCE: softmax cross-entropy over (positive, negatives) with the positive as target.

    ``query`` and ``key`` are (B, P, d), L2-normalised; the positive of query p is key p. Keys
    are constants, as in CUT (no gradient reaches them). Without ``negatives`` the negatives of
    query p are the keys of the same image at the other P − 1 locations (CUT excludes the
    diagonal by filling it with −10 before the division by τ, i.e. exp(−143) ≈ 0; here it is
    excluded exactly). With ``negatives`` (B, N, d), those replace them (NEGCUT).
    """
    # in fp32 even under autocast: the logits are divided by τ = 0.07, which amplifies bf16
    # rounding 14-fold
    with torch.autocast(query.device.type, enabled=False):
        q, k = query.float(), key.detach().float()
        positive = (q * k).sum(dim=-1, keepdim=True)  # (B, P, 1)
        if negatives is None:
            negative = q @ k.transpose(1, 2)  # (B, P, P)
            own_location = torch.eye(q.shape[1], dtype=torch.bool, device=q.device)
            negative = negative.masked_fill(own_location, float("-inf"))
        else:
            negative = q @ negatives.float().transpose(1, 2)  # (B, P, N)
        logits = torch.cat([positive, negative], dim=-1).flatten(0, 1) / temperature
        target = torch.zeros(len(logits), dtype=torch.long, device=q.device)
        return F.cross_entropy(logits, target)


class ProjectionHead(nn.Module):
    """CUT's H_l for one layer: Linear → ReLU → Linear, then L2-normalised (d = ``width``)."""

    def __init__(self, in_channels: int, width: int = 256) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_channels, width), nn.ReLU(inplace=True), nn.Linear(width, width)
        )

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(patches), dim=-1)


class NegativeGenerator(nn.Module):
    """NEGCUT's negative generator for one layer: the source image's mean feature of that layer,
    concatenated with one noise vector per negative, through an MLP to ``n_negatives`` embeddings
    on the unit sphere of the projection space. Conditioning on the image makes the negatives
    instance-wise; the noise makes them many and diverse.

        mean feature (B, C) ─┐
                             ├─ concat ─► Linear → ReLU → Linear → ReLU → Linear ─► L2 ─► (B, N, d)
        noise (B, N, z)  ────┘
    """

    def __init__(
        self,
        in_channels: int,
        out_dim: int = 256,
        n_negatives: int = 256,
        noise_dim: int = 64,
        width: int = 256,
    ) -> None:
        super().__init__()
        self.n_negatives, self.noise_dim = n_negatives, noise_dim
        self.mlp = nn.Sequential(
            nn.Linear(in_channels + noise_dim, width),
            nn.ReLU(inplace=True),
            nn.Linear(width, width),
            nn.ReLU(inplace=True),
            nn.Linear(width, out_dim),
        )

    def forward(self, condition: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """``condition``: (B, C) mean features; ``noise``: (B, N, z), drawn when not given."""
        b = condition.shape[0]
        if noise is None:
            noise = torch.randn(
                b, self.n_negatives, self.noise_dim, device=condition.device, dtype=condition.dtype
            )
        expanded = condition[:, None, :].expand(-1, noise.shape[1], -1)
        return F.normalize(self.mlp(torch.cat([expanded, noise], dim=-1)), dim=-1)


def negative_generator_loss(
    query: torch.Tensor,
    key: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float = 0.07,
) -> torch.Tensor:
    """The negative generator plays against the generator: it MAXIMISES the PatchNCE loss of
    its negatives with the queries and keys held fixed, so its loss is −L_NCE."""
    return -patchnce_loss(query.detach(), key.detach(), negatives, temperature)
