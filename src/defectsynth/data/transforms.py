"""Albumentations pipelines. Images arrive already downscaled by the cache (shorter side =
``load_size`` for training, ``image_size`` for evaluation), so the pipelines start at the crop.

Training (paper): random crop → horizontal flip → vertical flip → elastic transform →
normalise to [-1, 1]. The defective image and its mask always share one geometric transform;
the normal image gets an independent draw unless ``same_for_normal`` (the authors' code).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A
import cv2
import numpy as np
import torch


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings; the elastic defaults are the authors' (the paper gives none)."""

    hflip_p: float = 0.5
    vflip_p: float = 0.5
    elastic_p: float = 0.5
    elastic_alpha: float = 1.0
    elastic_sigma: float = 2.0
    same_for_normal: bool = False


def _normalize() -> A.Normalize:
    return A.Normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), max_pixel_value=255.0)


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def _seed_stream(pipeline: A.Compose, seed: int) -> None:
    """Give every transform of ``pipeline`` the *same* generator objects, seeded by ``seed``.

    ``Compose.set_random_seed`` (albumentations 2) gives each child transform its own generator
    seeded identically, so every transform would read the same first number: both flips would
    always agree and the crop offset would follow them. One shared stream makes each transform
    consume the next numbers instead, which keeps the draws independent and still reproducible.
    """
    pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))


def _mask_to_tensor(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(mask)).unsqueeze(0).float()


class TrainAugment:
    """Turns (normal, defect, mask) uint8 arrays into normalised tensors with seeded randomness."""

    def __init__(self, crop_size: int, config: AugmentConfig | None = None) -> None:
        self.config = config or AugmentConfig()
        extra = {"normal": "image"} if self.config.same_for_normal else None
        self.defect_pipeline = A.Compose(self._geometry(crop_size), additional_targets=extra)
        self.normal_pipeline = (
            None if self.config.same_for_normal else A.Compose(self._geometry(crop_size))
        )

    def _geometry(self, crop_size: int) -> list[A.BasicTransform]:
        c = self.config
        return [
            A.RandomCrop(
                crop_size, crop_size, pad_if_needed=True, border_mode=cv2.BORDER_REFLECT_101
            ),
            A.HorizontalFlip(p=c.hflip_p),
            A.VerticalFlip(p=c.vflip_p),
            A.ElasticTransform(
                alpha=c.elastic_alpha,
                sigma=c.elastic_sigma,
                border_mode=cv2.BORDER_REFLECT_101,
                p=c.elastic_p,
            ),
            _normalize(),
        ]

    def __call__(
        self, normal: np.ndarray, defect: np.ndarray, mask: np.ndarray, seed: int
    ) -> dict[str, torch.Tensor]:
        _seed_stream(self.defect_pipeline, seed)
        if self.normal_pipeline is None:
            if normal.shape != defect.shape:  # one shared draw needs one shape (mixed sizes)
                normal = cv2.resize(normal, defect.shape[1::-1], interpolation=cv2.INTER_AREA)
            out = self.defect_pipeline(image=defect, mask=mask, normal=normal)
            normal_out = out["normal"]
        else:
            out = self.defect_pipeline(image=defect, mask=mask)
            # an independent, still reproducible draw for the normal image
            _seed_stream(self.normal_pipeline, seed ^ 0x5DEECE66D)
            normal_out = self.normal_pipeline(image=normal)["image"]
        return {
            "normal": _to_tensor(normal_out),
            "defect": _to_tensor(out["image"]),
            "mask": _mask_to_tensor(out["mask"]),
        }


class EvalTransform:
    """Centre square crop of an image whose shorter side is already ``image_size``; normalise."""

    def __init__(self, image_size: int) -> None:
        self.pipeline = A.Compose([A.CenterCrop(image_size, image_size), _normalize()])

    def __call__(
        self, image: np.ndarray, mask: np.ndarray | None = None
    ) -> dict[str, torch.Tensor]:
        if mask is None:
            return {"image": _to_tensor(self.pipeline(image=image)["image"])}
        out = self.pipeline(image=image, mask=mask)
        return {"image": _to_tensor(out["image"]), "mask": _mask_to_tensor(out["mask"])}
