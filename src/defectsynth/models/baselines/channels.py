"""Image ‖ mask as one 4-channel tensor in [-1, 1], the form in which the 4-channel CycleGAN and
DCGAN generate masks: the mask is just one more tanh channel, with no branch of its own."""

from __future__ import annotations

import torch


def with_mask_channel(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] and (B, 1, H, W) in [0, 1] → (B, 4, H, W) in [-1, 1]; the mask is
    rescaled so that every channel shares the range of a tanh output."""
    return torch.cat([image, mask * 2 - 1], dim=1)


def split_mask_channel(four: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 4, H, W) in [-1, 1] → image (B, 3, H, W) in [-1, 1] and mask (B, 1, H, W) in [0, 1]."""
    return four[:, :3], (four[:, 3:4] + 1) / 2
