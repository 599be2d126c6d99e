"""LightningDataModule serving unpaired (normal, defective, mask) batches.

An epoch has max(|normal|, |defective|) items. The sampler draws, per epoch and from its own
seed, a permutation for the normal side, a random defective image for each item and a seed for
the augmentation, so batches are reproducible whatever the number of workers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from defectsynth.data import procedural
from defectsynth.data.cache import ImageCache, image_size
from defectsynth.data.mvtec import MVTecSplit, index_category
from defectsynth.data.transforms import AugmentConfig, EvalTransform, TrainAugment
from defectsynth.errors import ConfigError, DataError

log = logging.getLogger(__name__)

Key = tuple[int, int, int]  # (normal index, defect index, augmentation seed)


class UnpairedSampler(Sampler[Key]):
    """Yields ``(normal_index, defect_index, augment_seed)``; the normal side cycles through a
    fresh permutation, the defective side is drawn uniformly at random (as in CycleGAN)."""

    def __init__(self, n_normal: int, n_defect: int, seed: int = 0) -> None:
        self.n_normal, self.n_defect, self.seed = n_normal, n_defect, seed
        self.epoch = 0

    def __len__(self) -> int:
        return max(self.n_normal, self.n_defect)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[Key]:
        rng = np.random.default_rng([self.seed, self.epoch])
        length = len(self)
        normal = rng.permutation(length) % self.n_normal
        defect = rng.integers(0, self.n_defect, size=length)
        seeds = rng.integers(0, 2**31 - 1, size=length)
        yield from zip(normal.tolist(), defect.tolist(), seeds.tolist(), strict=True)


class UnpairedDataset(Dataset):
    """In-memory arrays indexed by the sampler's keys."""

    def __init__(
        self,
        normal: Sequence[np.ndarray],
        defect: Sequence[np.ndarray],
        mask: Sequence[np.ndarray],
        augment: TrainAugment,
    ) -> None:
        self.normal, self.defect, self.mask, self.augment = normal, defect, mask, augment

    def __len__(self) -> int:
        return max(len(self.normal), len(self.defect))

    def __getitem__(self, key: Key) -> dict[str, torch.Tensor]:
        n, d, seed = key
        return self.augment(self.normal[n], self.defect[d], self.mask[d], seed)


class EvalDataset(Dataset):
    """Un-augmented images (and masks where given) at evaluation size, with their index."""

    def __init__(
        self,
        images: Sequence[np.ndarray],
        transform: EvalTransform,
        masks: Sequence[np.ndarray] | None = None,
    ) -> None:
        self.images, self.masks, self.transform = images, masks, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        mask = self.masks[index] if self.masks is not None else None
        item = self.transform(self.images[index], mask)
        item["index"] = torch.tensor(index)
        return item


class DefectDataModule(L.LightningDataModule):
    """Real MVTec AD data under ``root``, or the built-in procedural product when ``root`` is
    None. Images are decoded and downscaled once (memory + disk cache) in ``setup``."""

    def __init__(
        self,
        category: str,
        defect: str,
        root: str | None = None,
        image_size: int = 256,
        load_scale: float = 1.12,
        batch_size: int = 1,
        num_workers: int = 2,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        train_fraction: float = 0.8,
        augment: dict | None = None,
        procedural_spec: dict | None = None,
        cache_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        # stored in checkpoints, so generate/evaluate know what the model was trained on
        self.save_hyperparameters()
        if image_size % 4:
            raise ConfigError(
                f"data.image_size={image_size} must be a multiple of 4 (the generator "
                "down-samples twice by 2 and up-samples back)."
            )
        if load_scale < 1.0:
            raise ConfigError(f"data.load_scale={load_scale} must be >= 1 (resize, then crop).")
        self.category, self.defect, self.root = category, defect, root
        # floor: 1.12 · 256 → 286, the load size of CycleGAN and of the authors' code
        self.image_size, self.load_size = image_size, int(load_scale * image_size)
        self.batch_size, self.num_workers = batch_size, num_workers
        self.pin_memory, self.persistent_workers = pin_memory, persistent_workers
        self.train_fraction, self.seed = train_fraction, seed
        self.augment_config = AugmentConfig(**(augment or {}))
        self.procedural_spec = dict(procedural_spec or {})
        self.cache = ImageCache(cache_dir)
        self.cache_dir = cache_dir
        self.split: MVTecSplit | None = None
        self.train_set: UnpairedDataset | None = None

    # ----------------------------------------------------------------------------- data root
    def _spec(self) -> procedural.ProceduralSpec:
        if self.category not in procedural.PRODUCTS:
            raise DataError(
                f"data.root is unset, so the built-in procedural data is used, which has the "
                f"products {sorted(procedural.PRODUCTS)}, not data.category={self.category!r}. "
                "Set data.root=<MVTec AD folder> to use real data."
            )
        expected = procedural.PRODUCTS[self.category]
        if self.defect != expected:
            raise DataError(
                f"the procedural product {self.category!r} has the defect {expected!r}, not "
                f"data.defect={self.defect!r}."
            )
        return procedural.ProceduralSpec.for_category(self.category, **self.procedural_spec)

    def _procedural_cache(self) -> Path:
        if self.cache_dir is None:
            raise ConfigError("paths.cache_dir must be set to generate the procedural dataset.")
        return Path(self.cache_dir)

    def data_root(self) -> Path:
        if self.root is not None:
            return Path(self.root)
        return procedural.ensure_dataset(self._spec(), self._procedural_cache())

    def prepare_data(self) -> None:
        # runs once per node before setup(); generating here keeps DDP ranks from racing
        if self.root is None:
            self.data_root()

    # ----------------------------------------------------------------------------- loading
    def _check_mask_sizes(self, split: MVTecSplit) -> None:
        for sample in split.defect_train + split.defect_test:
            image_wh, mask_wh = image_size(sample.image), image_size(sample.mask)
            if image_wh != mask_wh:
                raise DataError(
                    f"mask {sample.mask} is {mask_wh[0]}x{mask_wh[1]} but its image "
                    f"{sample.image} is {image_wh[0]}x{image_wh[1]}; expected equal sizes."
                )

    def setup(self, stage: str | None = None) -> None:
        if self.split is not None:
            return
        split = index_category(self.data_root(), self.category, self.defect, self.train_fraction)
        self._check_mask_sizes(split)
        self.split = split
        counts = split.counts()
        log.info(
            "data %s/%s from %s: %s",
            split.category,
            split.defect,
            split.root,
            ", ".join(f"{k}={v}" for k, v in counts.items()),
        )
        normal = [self.cache.image(p, self.load_size) for p in split.normal_train]
        defect = [self.cache.image(s.image, self.load_size) for s in split.defect_train]
        mask = [self.cache.mask(s.mask, self.load_size) for s in split.defect_train]
        self.train_set = UnpairedDataset(
            normal, defect, mask, TrainAugment(self.image_size, self.augment_config)
        )

    def counts(self) -> dict[str, int]:
        if self.split is None:
            raise RuntimeError("call setup() first")
        return self.split.counts()

    # ----------------------------------------------------------------------------- loaders
    def _loader(self, dataset: Dataset, **kwargs) -> DataLoader:
        workers = self.num_workers
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and workers > 0,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None and self.split is not None
        sampler = UnpairedSampler(
            len(self.split.normal_train), len(self.split.defect_train), seed=self.seed
        )
        return self._loader(self.train_set, sampler=sampler, drop_last=False)

    def eval_dataset(self, which: str) -> EvalDataset:
        """Un-augmented images at ``image_size``: ``normal_test``, ``normal_train``,
        ``defect_train`` or ``defect_test`` (the last two with masks)."""
        if self.split is None:
            self.setup()
        assert self.split is not None
        transform = EvalTransform(self.image_size)
        if which in ("normal_test", "normal_train"):
            paths = getattr(self.split, which)
            return EvalDataset([self.cache.image(p, self.image_size) for p in paths], transform)
        if which in ("defect_train", "defect_test"):
            samples = getattr(self.split, which)
            images = [self.cache.image(s.image, self.image_size) for s in samples]
            masks = [self.cache.mask(s.mask, self.image_size) for s in samples]
            return EvalDataset(images, transform, masks)
        raise ValueError(f"unknown evaluation set {which!r}")

    def preview_batch(self, n: int) -> torch.Tensor:
        """A fixed batch of ``n`` normal images for sample grids (test images where there are)."""
        which = "normal_test" if self.split and self.split.normal_test else "normal_train"
        dataset = self.eval_dataset(which)
        return torch.stack([dataset[i]["image"] for i in range(min(n, len(dataset)))])

    def describe(self) -> dict:
        return {
            "category": self.category,
            "defect": self.defect,
            "root": str(self.split.root) if self.split else self.root,
            "image_size": self.image_size,
            "load_size": self.load_size,
            "augment": asdict(self.augment_config),
            **({f"n_{k}": v for k, v in self.split.counts().items()} if self.split else {}),
        }
