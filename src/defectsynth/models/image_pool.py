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

    def query(self, images: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """``keep`` (a device bool, e.g. the NaN guard's batch flag): store the new fakes only
        where it holds, so a poisoned batch never enters the pool — decided on the device, as
        the draws below are made on the host from the pool's own generator."""
        if self.size <= 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                # a rejected fake takes the slot as a copy of a kept one (or as zeros at first)
                fallback = self.images[-1] if self.images else torch.zeros_like(image)
                self.images.append(self._kept(image, fallback, keep))
                out.append(image)
            # ``.numpy()``: the draws live on the CPU, so reading them never waits for a device
            elif torch.rand(1, generator=self.generator).numpy()[0] < 0.5:
                i = int(torch.randint(len(self.images), (1,), generator=self.generator).numpy()[0])
                stored = self.images[i].to(image.device, image.dtype)
                out.append(stored)
                self.images[i] = self._kept(image, stored, keep)
            else:
                out.append(image)
        return torch.cat(out, dim=0)

    @staticmethod
    def _kept(image: torch.Tensor, old: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        if keep is None:
            return image.clone()
        return torch.where(keep, image, old.to(image.device, image.dtype))

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
