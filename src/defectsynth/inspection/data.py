"""Images of the studies as in-memory uint8 tensors, and a class-balanced LightningDataModule.

Every image — real defect-free, real defective, synthetic, cut-paste — takes one resolution
path: decoded at the generator's resolution (``base_size``: shorter side resized, centre square),
then resized to the network's input size. Synthetic images only exist at the generator's
resolution; were real images decoded straight at 224 px while synthetic ones were up-sampled
from 64 px, a classifier could separate the classes by sharpness alone and learn nothing about
defects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from defectsynth.data.cache import ImageCache


def center_square(array: np.ndarray, size: int) -> np.ndarray:
    """The centred ``size``×``size`` crop of an array whose shorter side is ``size``."""
    height, width = array.shape[:2]
    top, left = (height - size) // 2, (width - size) // 2
    return np.ascontiguousarray(array[top : top + size, left : left + size])


def real_image(cache: ImageCache, path: Path, size: int) -> np.ndarray:
    return center_square(cache.image(path, size), size)


def real_mask(cache: ImageCache, path: Path, size: int) -> np.ndarray:
    return center_square(cache.mask(path, size), size)


def read_png(path: Path, grayscale: bool = False) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L" if grayscale else "RGB")).copy()


def to_image_tensor(arrays: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """(N, 3, size, size) uint8 from HxWx3 uint8 arrays, resized (bilinear, antialiased) where
    they have another size."""
    if not arrays:
        return torch.empty(0, 3, size, size, dtype=torch.uint8)
    out = []
    for array in arrays:
        x = torch.from_numpy(np.array(array, dtype=np.uint8)).permute(2, 0, 1)  # a writable copy
        if x.shape[-2:] != (size, size):
            x = F.interpolate(
                x[None].float(), (size, size), mode="bilinear", antialias=True, align_corners=False
            )[0]
            x = x.round().clamp(0, 255).to(torch.uint8)
        out.append(x)
    return torch.stack(out)


def to_mask_tensor(masks: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """(N, 1, size, size) uint8 in {0, 1} from HxW masks (nearest neighbour where resized)."""
    if not masks:
        return torch.empty(0, 1, size, size, dtype=torch.uint8)
    out = []
    for mask in masks:
        m = torch.from_numpy((np.asarray(mask) > 0).astype(np.uint8))[None]
        if m.shape[-2:] != (size, size):
            m = F.interpolate(m[None].float(), (size, size), mode="nearest")[0].to(torch.uint8)
        out.append(m)
    return torch.stack(out)


@dataclass
class LabelledImages:
    """images (N, 3, S, S) uint8, labels (N,) float (1 = defective), masks (N, 1, S, S) uint8
    in {0, 1} or None."""

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def of(
        cls, images: torch.Tensor, label: int, masks: torch.Tensor | None = None
    ) -> LabelledImages:
        return cls(images, torch.full((len(images),), float(label)), masks)

    @classmethod
    def concat(cls, parts: Sequence[LabelledImages]) -> LabelledImages:
        parts = [p for p in parts if len(p)]
        if not parts:  # e.g. split.normal=[0.8, 0, 0.2]: no validation set (the last epoch wins)
            return cls(torch.empty(0, 3, 1, 1, dtype=torch.uint8), torch.empty(0))
        with_masks = all(p.masks is not None for p in parts)
        return cls(
            torch.cat([p.images for p in parts]),
            torch.cat([p.labels for p in parts]),
            torch.cat([p.masks for p in parts]) if with_masks else None,
        )

    def counts(self) -> dict[str, int]:
        n_defective = int(self.labels.sum())
        return {"defect_free": len(self) - n_defective, "defective": n_defective}


class TensorItems(Dataset):
    def __init__(self, data: LabelledImages) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {"image": self.data.images[index], "label": self.data.labels[index]}
        if self.data.masks is not None:
            item["mask"] = self.data.masks[index]
        return item


def balanced_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per-item sampling weights that give each class the same total weight."""
    weights = torch.zeros(len(labels), dtype=torch.double)
    for value in labels.unique():
        members = labels == value
        weights[members] = 1.0 / int(members.sum())
    return weights


class StudyDataModule(L.LightningDataModule):
    """Train / val / test sets held in memory. Training batches come from a class-balanced
    sampler (with replacement; an epoch is as long as the training set), seeded."""

    def __init__(
        self,
        train: LabelledImages,
        val: LabelledImages,
        test: LabelledImages,
        batch_size: int = 50,
        seed: int = 0,
        balanced: bool = True,
    ) -> None:
        super().__init__()
        self.train, self.val, self.test = train, val, test
        self.batch_size, self.seed, self.balanced = batch_size, seed, balanced

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        if self.balanced:
            sampler = WeightedRandomSampler(
                balanced_weights(self.train.labels), len(self.train), generator=generator
            )
            options = {"sampler": sampler}
        else:
            options = {"shuffle": True, "generator": generator}
        # a last batch of one image would break BatchNorm in training mode
        drop_last = len(self.train) > self.batch_size
        return DataLoader(
            TensorItems(self.train), batch_size=self.batch_size, drop_last=drop_last, **options
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorItems(self.val), batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(TensorItems(self.test), batch_size=self.batch_size)


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) → float in [-1, 1], the project's convention."""
    return images.float().div(127.5).sub(1.0)


def random_flips(x: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Independent horizontal and vertical flips per sample (p = 0.5 each), applied alike to
    ``x`` and ``others`` (masks); from torch's global RNG, which the study seeds."""
    n = x.shape[0]
    outputs = [x, *others]
    for dim in (3, 2):
        chosen = (torch.rand(n, device=x.device) < 0.5).view(n, 1, 1, 1)
        outputs = [torch.where(chosen, t.flip(dim), t) for t in outputs]
    return tuple(outputs)
