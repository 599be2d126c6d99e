"""LightningDataModule serving unpaired (normal, defective, mask) batches.

With several defect types (``defect=[crack, glue_strip]``) each defective item also carries
``defect_type``, its index in ``defect_types``; with ``requested_masks`` every item gains a
``requested_mask`` drawn from the real training masks (see ``placement.py``).

An epoch has max(|normal|, |defective|) items. The sampler draws, per epoch and from its own
seed, a permutation for the normal side, a random defective image for each item and a seed for
the augmentation, so batches are reproducible whatever the number of workers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, replace
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from defectsynth.data import procedural
from defectsynth.data.cache import (
    DecodeOnAccess,
    ImageCache,
    PreloadItem,
    describe_mask,
    image_size,
    read_mask,
    resolve_decode_workers,
)
from defectsynth.data.mvtec import (
    BadFiles,
    DefectSample,
    MVTecSplit,
    check_defect_count,
    index_category,
    index_defect_types,
    index_folders,
    limit_defect_train,
)
from defectsynth.data.placement import (
    FOREGROUND_IMAGES,
    PLACEMENT_MODES,
    Foreground,
    Placement,
    PlacementConfig,
    RequestedMaskSampler,
    estimate_foreground,
    load_foreground,
    save_foreground,
)
from defectsynth.data.transforms import AugmentConfig, EvalTransform, TrainAugment
from defectsynth.errors import ConfigError, DataError

log = logging.getLogger(__name__)

Key = tuple[int, int, int, int]  # (normal index, defect index, augmentation seed, position)


class UnpairedSampler(Sampler[Key]):
    """Yields ``(normal_index, defect_index, augment_seed)``; the normal side cycles through a
    fresh permutation, the defective side is drawn uniformly at random (as in CycleGAN).

    Under DDP every rank draws the same epoch plan from the shared seed and keeps its own
    stride of it (padded so every rank runs the same number of batches), so the ranks see
    disjoint items and the unpaired sampling is the single-device one.

    ``position`` is the key's place in this rank's epoch; ``resume_from(epoch, position)``
    makes the next pass over that epoch start there (exact mid-epoch resume).
    """

    def __init__(
        self, n_normal: int, n_defect: int, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.n_normal, self.n_defect, self.seed = n_normal, n_defect, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._resume: tuple[int, int] | None = None

    @property
    def epoch_length(self) -> int:
        return max(self.n_normal, self.n_defect)

    def __len__(self) -> int:
        return -(-self.epoch_length // self.world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_from(self, epoch: int, position: int) -> None:
        self._resume = (epoch, position)

    def __iter__(self) -> Iterator[Key]:
        rng = np.random.default_rng([self.seed, self.epoch])
        length = self.epoch_length
        normal = rng.permutation(length) % self.n_normal
        defect = rng.integers(0, self.n_defect, size=length)
        seeds = rng.integers(0, 2**31 - 1, size=length)
        keys = list(zip(normal.tolist(), defect.tolist(), seeds.tolist(), strict=True))
        padded = len(self) * self.world_size
        keys += keys[: padded - length]
        start = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            start = self._resume[1]
        self._resume = None  # one-shot: later epochs run in full
        shard = keys[self.rank :: self.world_size]
        for position in range(start, len(shard)):
            yield (*shard[position], position)


# mixed into an item's seed for its requested mask, so that draw is independent of the
# augmentation of the defective image (which reads the item's seed itself)
_REQUESTED_SEED_SALT = 0x2545F491


class UnpairedDataset(Dataset):
    """In-memory arrays indexed by the sampler's keys. ``defect_types[d]`` is the type index
    of defective image ``d`` (None: one type, no ``defect_type`` key); ``requested`` draws the
    item's ``requested_mask`` (of the item's defect type) when given."""

    def __init__(
        self,
        normal: Sequence[np.ndarray],
        defect: Sequence[np.ndarray],
        mask: Sequence[np.ndarray],
        augment: TrainAugment,
        defect_types: Sequence[int] | None = None,
        requested: RequestedMaskSampler | None = None,
    ) -> None:
        self.normal, self.defect, self.mask, self.augment = normal, defect, mask, augment
        self.defect_types, self.requested = defect_types, requested

    def __len__(self) -> int:
        return max(len(self.normal), len(self.defect))

    def __getitem__(self, key: Key) -> dict[str, torch.Tensor]:
        n, d, seed, position = key
        item = self.augment(self.normal[n], self.defect[d], self.mask[d], seed)
        defect_type = None
        if self.defect_types is not None:
            defect_type = int(self.defect_types[d])
            item["defect_type"] = torch.tensor(defect_type, dtype=torch.long)
        if self.requested is not None:
            drawn = self.requested.sample(seed ^ _REQUESTED_SEED_SALT, defect_type)
            item["requested_mask"] = torch.from_numpy(drawn.mask).unsqueeze(0).float()
        item["position"] = torch.tensor(position)
        return item


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
    None. Images are decoded and downscaled once (memory + disk cache) in ``setup``.

    ``defect`` is one type (today's batches) or a list of types (items gain ``defect_type``,
    an index into ``defect_types``). ``requested_masks=True`` adds ``requested_mask`` to the
    training items, drawn as ``placement`` says (``PlacementConfig`` fields plus
    ``on_foreground``); the foreground is ``foreground`` (a mask file) or estimated from the
    defect-free training images, and written to ``foreground_png`` (default: the trainer's
    run folder). ``decode_workers`` threads decode the files (``auto``: one per available CPU).
    """

    def __init__(
        self,
        category: str,
        defect: str | list[str],
        root: str | None = None,
        image_size: int = 256,
        load_scale: float = 1.12,
        batch_size: int = 1,
        num_workers: int = 2,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        train_fraction: float = 0.8,
        augment: dict | None = None,
        procedural_spec: dict | None = None,
        cache_dir: str | None = None,
        seed: int = 0,
        cache_images: bool = True,
        on_bad_file: str = "error",
        mask_threshold: float | None = None,
        folders: dict | None = None,
        mask_suffix: str = "_mask",
        image_ext: str | list[str] | None = None,
        mask_ext: str | list[str] | None = None,
        requested_masks: bool = False,
        placement: dict | None = None,
        foreground: str | None = None,
        foreground_png: str | None = None,
        defect_train_limit: int | None = None,
        decode_workers: int | str = "auto",
    ) -> None:
        super().__init__()
        # stored in checkpoints, so generate/evaluate know what the model was trained on;
        # decode_workers is how this machine decodes, not what: a checkpoint taken to another
        # machine decodes with that machine's own setting
        self.save_hyperparameters(ignore=["decode_workers"])
        self.decode_workers = resolve_decode_workers(decode_workers)
        if image_size % 4:
            raise ConfigError(
                f"data.image_size={image_size} must be a multiple of 4 (the generator "
                "down-samples twice by 2 and up-samples back)."
            )
        if load_scale < 1.0:
            raise ConfigError(f"data.load_scale={load_scale} must be >= 1 (resize, then crop).")
        self.category, self.root = category, root
        # one type keeps the paper's batches; a list (even of one) adds ``defect_type``
        self.multi_type = not isinstance(defect, str)
        self.defect_types: list[str] = self._defect_types(defect)
        self.defect = "+".join(self.defect_types)  # names outputs, as one type's name does
        self.requested_masks = bool(requested_masks)
        placement = dict(placement or {})
        self.on_foreground = bool(placement.pop("on_foreground", False))
        if "scale" in placement:
            placement["scale"] = tuple(placement["scale"])
        try:
            self.placement_config = PlacementConfig(**placement)
        except ConfigError:
            raise
        except (TypeError, ValueError) as err:  # unknown key, or a scale that is not a pair
            raise ConfigError(
                f"data.placement={placement} cannot be used ({err}); expected on_foreground "
                f"and {sorted(PlacementConfig.__dataclass_fields__)}, scale a pair [low, high]."
            ) from err
        self.foreground_option, self.foreground_png = foreground, foreground_png
        self.foreground: Foreground | None = None
        self.requested_sampler: RequestedMaskSampler | None = None
        # floor: 1.12 · 256 → 286, the load size of CycleGAN and of the authors' code
        self.image_size, self.load_size = image_size, int(load_scale * image_size)
        self.batch_size, self.num_workers = batch_size, num_workers
        # page-locked batches only help host→GPU copies
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers, self.cache_images = persistent_workers, cache_images
        self.train_fraction, self.seed = train_fraction, seed
        if defect_train_limit is not None and (
            isinstance(defect_train_limit, bool)
            or not isinstance(defect_train_limit, int)
            or defect_train_limit < 1
        ):
            raise ConfigError(
                f"data.defect_train_limit={defect_train_limit!r}; expected a positive number of "
                "training defects per type, or null for all of them"
            )
        self.defect_train_limit = defect_train_limit
        self.augment_config = AugmentConfig(**(augment or {}))
        self.procedural_spec = dict(procedural_spec or {})
        self.mask_threshold = mask_threshold
        self.cache = ImageCache(cache_dir, mask_threshold)
        self.bad_files = BadFiles(on_bad_file)
        # data=folder: explicit folders instead of the MVTec layout
        self.folders = dict(folders) if folders else None
        self.mask_suffix = mask_suffix
        self.image_ext, self.mask_ext = image_ext, mask_ext
        self.cache_dir = cache_dir
        self.split: MVTecSplit | None = None
        self.train_set: UnpairedDataset | None = None
        self.sampler: UnpairedSampler | None = None
        self._consumed: dict[str, int] = {"epoch": 0, "position": 0}

    @staticmethod
    def _defect_types(defect: str | Sequence[str]) -> list[str]:
        if isinstance(defect, str):
            return [defect]
        types = list(defect) if isinstance(defect, Sequence) else None
        if not types or not all(isinstance(t, str) and t for t in types):
            raise ConfigError(
                f"data.defect={defect!r}; expected a defect type name or a non-empty list of "
                "names (data.defect=[crack,glue_strip])."
            )
        if len(set(types)) != len(types):
            raise ConfigError(f"data.defect={types} names a type twice; name each type once.")
        return types

    # ----------------------------------------------------------------------------- data root
    def _spec(self) -> procedural.ProceduralSpec:
        if self.category not in procedural.PRODUCTS:
            raise DataError(
                f"data.root is unset, so the built-in procedural data is used, which has the "
                f"products {sorted(procedural.PRODUCTS)}, not data.category={self.category!r}. "
                "Set data.root=<MVTec AD folder> to use real data."
            )
        available = procedural.DEFECT_TYPES[self.category]
        unknown = [d for d in self.defect_types if d not in available]
        if unknown:
            raise DataError(
                f"the procedural product {self.category!r} has the defect {available[0]!r} "
                f"(and {', '.join(map(repr, available[1:]))}), not data.defect="
                f"{', '.join(map(repr, unknown))}. Available defects: {list(available)}."
            )
        # the paper's type alone keeps the cached dataset (and fingerprint) it always had
        extra = any(d != procedural.PRODUCTS[self.category] for d in self.defect_types)
        spec = dict(self.procedural_spec)
        spec.setdefault("all_defects", extra)
        return procedural.ProceduralSpec.for_category(self.category, **spec)

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
        if self.root is None and self.folders is None:
            self.data_root()

    # ----------------------------------------------------------------------------- loading
    # ----------------------------------------------------------------------------- validation
    def _usable_image(self, path: Path, size: int) -> bool:
        try:
            self.cache.image(path, size)
            return True
        except DataError as err:
            self.bad_files.handle(path, err)
            return False

    def _usable_sample(self, sample: DefectSample, size: int) -> bool:
        try:
            image_wh, mask_wh = image_size(sample.image), image_size(sample.mask)
            if image_wh != mask_wh:
                raise DataError(
                    f"mask {sample.mask} is {mask_wh[0]}x{mask_wh[1]} but its image "
                    f"{sample.image} is {image_wh[0]}x{image_wh[1]}; expected equal sizes."
                )
            self.cache.image(sample.image, size)
            if not self.cache.mask(sample.mask, size).any():
                self._check_not_empty(sample, size)
            return True
        except DataError as err:
            self.bad_files.handle(sample.image, err)
            return False

    def _check_not_empty(self, sample: DefectSample, size: int) -> None:
        """A defect image whose mask marks nothing is no defect example: D_C must never learn
        "defective" from an empty mask. (A region that only vanishes when the mask is
        downscaled is kept, with a warning: the file itself is right.)"""
        if read_mask(sample.mask, self.mask_threshold).any():
            log.warning(
                "the defect of mask %s vanishes at %d px (nearest-neighbour downscale); its "
                "image trains with an empty mask",
                sample.mask,
                size,
            )
            return
        raise DataError(
            f"mask {sample.mask} of defect image {sample.image} has no foreground pixel "
            f"({describe_mask(sample.mask, self.mask_threshold)}), so the image is no defect "
            "example. Fix the mask, set data.mask_threshold if the defect is stored with lower "
            "values, or data.on_bad_file=skip to leave the image out."
        )

    def _preload(self, items: Sequence[PreloadItem], description: str) -> None:
        """Decode ``items`` in parallel into the memory cache, ahead of the loops that read them
        one by one (and then find them in memory)."""
        self.cache.preload(items, self.decode_workers, description)

    def _validated(self, split: MVTecSplit) -> MVTecSplit:
        """Decode every file once, now, in this process: a bad file fails here with its name
        (or is dropped with ``on_bad_file=skip``), never later inside a loader worker."""
        train_size, test_size = self.load_size, self.image_size
        items: list[PreloadItem] = [("image", p, train_size) for p in split.normal_train]
        for samples, size in ((split.defect_train, train_size), (split.defect_test, test_size)):
            for s in samples:
                items += [("image", s.image, size), ("mask", s.mask, size)]
        items += [("image", p, test_size) for p in split.normal_test]
        # the parallel pass only fills the cache; the checks below stay a plain loop, so a bad
        # file is met, reported or skipped exactly as before. Under on_bad_file=error the pass
        # stops at the first bad file and its error is dropped here: the loop meets that file
        # again and reports it (or an earlier size mismatch the pass does not check). Under
        # skip the pass decodes the rest and the loop meets the bad ones again.
        policy = "raise" if self.bad_files.policy == "error" else "collect"
        with contextlib.suppress(DataError):
            self.cache.preload(items, self.decode_workers, "decoding images", errors=policy)
        split = replace(
            split,
            normal_train=tuple(p for p in split.normal_train if self._usable_image(p, train_size)),
            defect_train=tuple(s for s in split.defect_train if self._usable_sample(s, train_size)),
            defect_test=tuple(
                s for s in split.defect_test if self._usable_sample(s, self.image_size)
            ),
            normal_test=tuple(
                p for p in split.normal_test if self._usable_image(p, self.image_size)
            ),
        )
        if not split.normal_train:
            raise DataError(f"no usable defect-free training images in {split.root}")
        for defect in split.defect_types:
            samples = split.defect_train + split.defect_test
            n = sum(1 for s in samples if s.defect in (None, defect))
            check_defect_count(n, split.root / split.category / "test" / defect)
        return split

    def setup(self, stage: str | None = None) -> None:
        if self.split is not None:
            return
        if self.folders is not None and self.multi_type:
            raise ConfigError(
                "data=folder holds one defect type; data.defect must be a single name there."
            )
        if self.folders is not None:
            split = index_folders(
                **self.folders,
                category=self.category,
                defect_name=self.defect,
                mask_suffix=self.mask_suffix,
                train_fraction=self.train_fraction,
                bad=self.bad_files,
                image_ext=self.image_ext,
                mask_ext=self.mask_ext,
            )
        elif self.multi_type:
            split = index_defect_types(
                self.data_root(),
                self.category,
                self.defect_types,
                self.train_fraction,
                self.bad_files,
            )
        else:
            split = index_category(
                self.data_root(), self.category, self.defect, self.train_fraction, self.bad_files
            )
        # fewer training defects (data.defect_train_limit): the same test defects
        self.split = split = limit_defect_train(self._validated(split), self.defect_train_limit)
        counts = split.counts()
        notes = list(split.ignored)
        if self.bad_files.skipped:
            notes.append(f"{len(self.bad_files.skipped)} bad file(s) skipped")
        log.info(
            "data %s/%s from %s: %s%s",
            split.category,
            split.defect,
            split.root,
            ", ".join(f"{k}={v}" for k, v in counts.items()),
            f" (ignored: {'; '.join(notes)})" if notes else "",
        )
        if self.cache_images:
            normal = [self.cache.image(p, self.load_size) for p in split.normal_train]
            defect = [self.cache.image(s.image, self.load_size) for s in split.defect_train]
            mask = [self.cache.mask(s.mask, self.load_size) for s in split.defect_train]
        else:  # reference-implementation behaviour, for benchmarks
            normal = DecodeOnAccess(split.normal_train, self.load_size, "image")
            defect = DecodeOnAccess([s.image for s in split.defect_train], self.load_size, "image")
            mask = DecodeOnAccess(
                [s.mask for s in split.defect_train], self.load_size, "mask", self.mask_threshold
            )
        types = None
        if self.multi_type:
            types = [self.defect_types.index(s.defect) for s in split.defect_train]
        if self.requested_masks:
            self.requested_sampler = self._requested_sampler(split, types, self.on_foreground)
        self.train_set = UnpairedDataset(
            normal,
            defect,
            mask,
            TrainAugment(self.image_size, self.augment_config),
            defect_types=types,
            requested=self.requested_sampler,
        )

    # ----------------------------------------------------------------------------- placement
    def foreground_mask(self) -> Foreground:
        """The product's foreground at ``image_size``: ``data.foreground`` or estimated from
        the defect-free training images (computed once)."""
        if self.foreground is None:
            if self.split is None:
                self.setup()
            assert self.split is not None
            size = self.image_size
            if self.foreground_option:
                self.foreground = load_foreground(self.foreground_option, size, self.mask_threshold)
            else:
                # an evenly spaced subset is as good an estimate and decodes far fewer files
                paths = self.split.normal_train
                paths = paths[:: max(1, len(paths) // FOREGROUND_IMAGES)][:FOREGROUND_IMAGES]
                self._preload([("image", p, size) for p in paths], "decoding foreground images")
                images = [self._square(self.cache.image(p, size)) for p in paths]
                self.foreground = estimate_foreground(images, size)
            log.info(
                "foreground (%s): %.0f %% of the image%s",
                self.foreground.source,
                100 * self.foreground.coverage,
                "" if self.foreground.is_object else " (no object found: the whole image)",
            )
        return self.foreground

    def _square(self, array: np.ndarray) -> np.ndarray:
        """The centre crop the evaluation transform takes (masks and images alike)."""
        h, w = array.shape[:2]
        top, left = (h - self.image_size) // 2, (w - self.image_size) // 2
        return array[top : top + self.image_size, left : left + self.image_size]

    def _requested_sampler(
        self, split: MVTecSplit, types: list[int] | None, on_foreground: bool
    ) -> RequestedMaskSampler:
        """Real training masks at ``image_size`` (centre crop) as requested-mask sources."""
        self._preload(
            [("mask", s.mask, self.image_size) for s in split.defect_train], "decoding masks"
        )
        masks = [self._square(self.cache.mask(s.mask, self.image_size)) for s in split.defect_train]
        names = [str(s.mask) for s in split.defect_train]
        foreground = self.foreground_mask().mask if on_foreground else None
        return RequestedMaskSampler(
            masks,
            names,
            self.image_size,
            types=types,
            foreground=foreground,
            config=self.placement_config,
        )

    def placement(self, option: str, mask_suffix: str = "_mask") -> Placement:
        """Requested masks for generation: ``random`` / ``foreground`` draw from this product's
        real training masks (with ``data.placement``'s transform settings), anything else is a
        folder of the user's masks (see :class:`Placement`)."""
        if option not in PLACEMENT_MODES:
            return Placement(option, mask_suffix=mask_suffix, mask_threshold=self.mask_threshold)
        if self.split is None:
            self.setup()
        assert self.split is not None
        types = None
        if self.multi_type:
            types = [self.defect_types.index(s.defect) for s in self.split.defect_train]
        sampler = self._requested_sampler(self.split, types, option == "foreground")
        return Placement(option, sampler, mask_suffix=mask_suffix)

    def write_foreground(self, path: str | Path) -> Path | None:
        """Save the foreground used for requested masks as a PNG (nothing when none is used)."""
        if self.foreground is None:
            return None
        return save_foreground(self.foreground, path)

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
        trainer = self.trainer
        self.sampler = UnpairedSampler(
            len(self.split.normal_train),
            len(self.split.defect_train),
            seed=self.seed,
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
        )
        if self._consumed["position"] > 0:
            self.sampler.resume_from(self._consumed["epoch"], self._consumed["position"])
        if self.foreground is not None and (trainer is None or trainer.is_global_zero):
            target = self.foreground_png
            if target is None and trainer is not None:
                target = str(Path(trainer.default_root_dir) / "foreground.png")
            if target is not None:
                self.write_foreground(target)
        return self._loader(self.train_set, sampler=self.sampler, drop_last=False)

    # ----------------------------------------------------------------------------- resume
    def on_before_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Record how far into the epoch training got: the batch is consumed next. (Before
        the transfer, so reading the position never waits for the GPU.)"""
        if self.trainer is not None and self.trainer.training and "position" in batch:
            self._consumed = {
                "epoch": self.trainer.current_epoch,
                "position": int(batch["position"].max()) + 1,
            }
        return batch

    def state_dict(self) -> dict[str, int]:
        """Saved in checkpoints: the epoch and the position in it of the next unseen item, so a
        run resumed from a mid-epoch checkpoint sees exactly the batches it had not seen."""
        return dict(self._consumed)

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._consumed = {"epoch": int(state["epoch"]), "position": int(state["position"])}
        if self.sampler is not None and self._consumed["position"] > 0:
            self.sampler.resume_from(self._consumed["epoch"], self._consumed["position"])

    def eval_dataset(self, which: str) -> EvalDataset:
        """Un-augmented images at ``image_size``: ``normal_test``, ``normal_train``,
        ``defect_train`` or ``defect_test`` (the last two with masks)."""
        if self.split is None:
            self.setup()
        assert self.split is not None
        transform = EvalTransform(self.image_size)
        if which in ("normal_test", "normal_train"):
            paths = getattr(self.split, which)
            self._preload([("image", p, self.image_size) for p in paths], f"decoding {which}")
            return EvalDataset([self.cache.image(p, self.image_size) for p in paths], transform)
        if which in ("defect_train", "defect_test"):
            samples = getattr(self.split, which)
            # the order of the loops below: the first bad file raises as it did there
            items: list[PreloadItem] = [("image", s.image, self.image_size) for s in samples]
            items += [("mask", s.mask, self.image_size) for s in samples]
            self._preload(items, f"decoding {which}")
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
            **({"defect_types": list(self.defect_types)} if self.multi_type else {}),
            **(
                {
                    "requested_masks": {
                        "placement": asdict(self.placement_config),
                        "on_foreground": self.on_foreground,
                        "foreground": self.foreground.source if self.foreground else None,
                    }
                }
                if self.requested_masks
                else {}
            ),
            **({f"n_{k}": v for k, v in self.split.counts().items()} if self.split else {}),
        }
