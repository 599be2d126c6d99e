"""History buffer of generated images (Shrivastava et al.), used to update D_X and D_Y."""

from __future__ import annotations

import torch


class ImagePool:
    """Keep up to ``size`` past fakes; each query returns, per image, either the new fake or
    (with probability ½ once full) a stored one that the new fake replaces.

    Randomness comes from an own ``torch.Generator`` so the pool's draws are part of its
    checkpointed state and do not shift the global RNG streams.
    """

    def __init__(self, size: int = 50, seed: int = 0) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.images)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size <= 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand(1, generator=self.generator).item() < 0.5:
                i = int(torch.randint(len(self.images), (1,), generator=self.generator))
                out.append(self.images[i].to(image.device, image.dtype))
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, dim=0)

    def state_dict(self) -> dict:
        stacked = torch.cat(self.images).cpu() if self.images else torch.empty(0)
        return {"size": self.size, "images": stacked, "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.size = int(state["size"])
        self.images = [img.unsqueeze(0) for img in state["images"]] if len(state["images"]) else []
        self.generator.set_state(state["rng"])

    def to(self, device: torch.device) -> ImagePool:
        self.images = [img.to(device) for img in self.images]
        return self
