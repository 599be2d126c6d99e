"""Requested masks: where (and in what shape) a controllable generator is asked to put a defect.

Three pieces, shared by training and generation:

* :func:`estimate_foreground` finds the object in a product's defect-free images (bottle,
  transistor, screw …) and answers "the whole image" for textures (tile, wood, carpet …), where
  no confident object/background separation exists. :func:`load_foreground` reads a user's mask
  instead, :func:`save_foreground` writes one (atomically) into a run folder.
* :class:`RequestedMaskSampler` draws a requested mask from real training masks: a random
  source mask (of the requested defect type), flipped, rotated, scaled and elastically warped
  with albumentations, then moved to a random place (on the foreground when one is given).
  Every draw is a pure function of its seed.
* :class:`Placement` turns the generation option ``placement=random|foreground|<folder>`` into
  ``(N, 1, H, W)`` masks plus one manifest description per mask.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A
import cv2
import numpy as np
import torch

from defectsynth.data.cache import describe_mask, read_mask
from defectsynth.data.mvtec import list_images
from defectsynth.data.transforms import _seed_stream
from defectsynth.errors import ConfigError, DataError
from defectsynth.utils.io import save_png

log = logging.getLogger(__name__)

Size = tuple[int, int]  # (height, width)


# =============================================================================== foreground


@dataclass(frozen=True)
class Foreground:
    """A product's foreground: ``mask`` HxW uint8 in {0, 1}; ``is_object`` is False when no
    object was separated from its background (textures), and the mask is then all ones."""

    mask: np.ndarray
    is_object: bool
    source: str  # "estimated", "whole image" or the file it was read from

    @property
    def coverage(self) -> float:
        return float(self.mask.mean())


# work resolution of the estimate: objects are large, 128 px resolves them and keeps it fast
_FG_WORK = 128
_FG_RING = 0.06  # border ring, fraction of the side, that samples the background
_FG_MAD_FLOOR = 3.0  # Lab units: a flat background must not turn sensor noise into objects
_FG_CORE_Z = 4.0
_FG_FINE_Z = 2.0
FOREGROUND_IMAGES = 32  # defect-free images an estimate looks at (evenly spaced)
_FG_FINE_VOTE = 0.2  # share of the images in which a thin part must show
_FG_MARGIN = 0.07  # safety margin around the object, fraction of the side


def _border_z(image: np.ndarray, sigma: float) -> np.ndarray:
    """Robust distance (max over Lab channels, in MADs) of the locally averaged colour from
    the colours of the border ring. Averaging first makes periodic backgrounds (a stripboard
    with holes, a woven texture) one colour, so only a different *material* stands out."""
    size = min(image.shape[:2])
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab = cv2.GaussianBlur(lab, (0, 0), sigma * size)
    k = max(2, round(_FG_RING * size))
    ring = np.ones(image.shape[:2], bool)
    ring[k:-k, k:-k] = False
    samples = lab[ring]
    median = np.median(samples, axis=0)
    # the median and MAD ignore an object that touches the border here and there
    mad = 1.4826 * np.median(np.abs(samples - median), axis=0)
    return (np.abs(lab - median) / np.maximum(mad, _FG_MAD_FLOOR)).max(axis=2)


def _rgb(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 from a grey (HxW, HxWx1) or RGB(A) image."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _components_touching(mask: np.ndarray, seeds: np.ndarray, min_area: int) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    touched = np.unique(labels[seeds.astype(bool) & mask.astype(bool)])
    keep[touched] = True
    keep[0] = False
    keep &= stats[:, cv2.CC_STAT_AREA] >= min_area
    return keep[labels]


def estimate_foreground(
    images: Sequence[np.ndarray], size: Size | int, max_coverage: float = 0.95
) -> Foreground:
    """Estimate the object region from defect-free HxWx3 uint8 RGB images of one product.

    The background is what the border ring of each image shows. A confident *core* is where
    the coarsely averaged colour lies far (> 4 MADs) from the border's in most images; it is
    then grown, within 0.3 of the image side, into the finely averaged pixels that differ
    moderately (> 2 MADs in 20 % of the images: thin parts such as leads), closed, replaced
    by its convex hull and dilated by a safety margin. No core, or a result covering more
    than ``max_coverage`` of the image, means "no object": the whole image is returned with
    ``is_object=False``.
    """
    if not images:
        raise DataError("cannot estimate a foreground from zero defect-free images.")
    height, width = (size, size) if isinstance(size, int) else size
    step = max(1, len(images) // FOREGROUND_IMAGES)
    work = [
        cv2.resize(_rgb(im), (_FG_WORK, _FG_WORK), interpolation=cv2.INTER_AREA)
        for im in list(images)[::step][:FOREGROUND_IMAGES]
    ]
    whole = Foreground(np.ones((height, width), np.uint8), False, "whole image")
    n = _FG_WORK
    coarse = np.median(np.stack([_border_z(im, 0.05) for im in work]), axis=0)
    core = cv2.morphologyEx((coarse > _FG_CORE_Z).astype(np.uint8), cv2.MORPH_OPEN, _disk(2))
    min_area = round(0.01 * n * n)
    core = _components_touching(core, core, min_area)
    if not core.any():
        return whole
    # thin parts (leads, wires) show at fine scale only, and not in every image where they
    # are bent: a minority vote keeps them
    fine = np.mean([_border_z(im, 0.015) > _FG_FINE_Z for im in work], axis=0) > _FG_FINE_VOTE
    # bounded growth: parts attached to the object, not a texture leaking along strips
    near = cv2.dilate(core.astype(np.uint8), _disk(round(0.3 * n))).astype(bool)
    grown = _components_touching(core | (fine & near), core, min_area)
    grown = cv2.morphologyEx(grown.astype(np.uint8), cv2.MORPH_CLOSE, _disk(round(0.03 * n)))
    # an object's region is its convex outline: the gaps between leads belong to it (a bent
    # lead moves into them), as does the inside of a ring such as a bottle's mouth
    hull = np.zeros_like(grown)
    contours, _ = cv2.findContours(grown, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    for contour in contours:
        cv2.fillConvexPoly(hull, cv2.convexHull(contour), 1)
    grown = cv2.dilate(hull, _disk(round(_FG_MARGIN * n)))
    if grown.mean() > max_coverage:
        return whole
    mask = cv2.resize(grown.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return Foreground((mask >= 0.5).astype(np.uint8), True, "estimated")


def read_binary_mask(path: Path | str, what: str, threshold: float | None = None) -> np.ndarray:
    """Read a mask file as HxW uint8 in {0, 1}, binarised as every user mask is (see
    :func:`read_mask`: 0/1 as is, 8-bit from 128, 16-bit from 32768, or from ``threshold``);
    an unreadable or empty one is a DataError naming the file."""
    path = Path(path)
    try:
        mask = read_mask(path, threshold)
    except DataError as err:
        raise DataError(f"{what} {path} cannot be read as an image ({err}).") from err
    if not mask.any():
        raise DataError(
            f"{what} {path} is empty: no foreground pixel ({describe_mask(path, threshold)}); "
            "expected a non-empty region (set data.mask_threshold if its values are lower)."
        )
    return mask


def _resize_mask(mask: np.ndarray, size: Size) -> np.ndarray:
    height, width = size
    if mask.shape == (height, width):
        return mask
    # area-average then majority: a thin structure does not vanish as with nearest sampling
    small = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
    out = (small >= 0.5).astype(np.uint8)
    if not out.any():
        out[np.unravel_index(int(np.argmax(small)), small.shape)] = 1
    return out


def _fit_mask(mask: np.ndarray, size: Size) -> np.ndarray:
    """A mask drawn on a source image, taken to ``size`` the way the image is: shorter side
    scaled to the output's, then the centre crop."""
    height, width = size
    h, w = mask.shape
    scale = max(height / h, width / w)
    scaled = _resize_mask(mask, (max(height, round(h * scale)), max(width, round(w * scale))))
    top, left = (scaled.shape[0] - height) // 2, (scaled.shape[1] - width) // 2
    return scaled[top : top + height, left : left + width]


def load_foreground(
    path: Path | str, size: Size | int, threshold: float | None = None
) -> Foreground:
    """A user's foreground (``data.foreground=<file>``, or a folder with exactly one mask)."""
    path = Path(path).expanduser()
    if path.is_dir():
        files = list_images(path)
        if len(files) != 1:
            raise ConfigError(
                f"data.foreground={str(path)!r} is a folder with {len(files)} images; expected "
                "exactly one foreground mask (or give the file itself)."
            )
        path = files[0]
    if not path.is_file():
        raise ConfigError(
            f"data.foreground={str(path)!r} does not exist; expected a binary mask image "
            "(white = product), or null to estimate it from the defect-free images."
        )
    size = (size, size) if isinstance(size, int) else size
    mask = read_binary_mask(path, "foreground", threshold)
    return Foreground(_resize_mask(mask, size), True, str(path))


def save_foreground(foreground: Foreground, path: Path | str) -> Path:
    """Write the foreground as a 0/255 PNG, atomically (a picture the user can check)."""
    save_png(foreground.mask * 255, path)
    return Path(path)


# =============================================================================== sampler


@dataclass(frozen=True)
class PlacementConfig:
    """How a real mask is turned into a requested one. Lengths are fractions of the side."""

    rotate: float = 180.0  # rotation drawn uniformly in [-rotate, rotate] degrees
    scale: tuple[float, float] = (0.7, 1.4)  # linear scale, drawn uniformly
    flip: bool = True  # mirror half of the draws
    elastic_p: float = 0.7
    elastic_sigma: float = 0.04  # smoothness of the warp field
    elastic_shift: float = 0.01  # typical displacement
    min_on_foreground: float = 0.9  # share of the mask that must lie on the foreground
    max_attempts: int = 40  # placements tried (a new warped shape every 4) before falling back

    def __post_init__(self) -> None:
        lo, hi = self.scale
        checks = {
            "rotate": 0 <= self.rotate <= 180,
            "scale": 0 < lo <= hi,
            "elastic_p": 0 <= self.elastic_p <= 1,
            "elastic_sigma": self.elastic_sigma > 0,
            "elastic_shift": self.elastic_shift >= 0,
            "min_on_foreground": 0 < self.min_on_foreground <= 1,
            "max_attempts": self.max_attempts >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(
                    f"placement.{name}={getattr(self, name)!r} is out of range (rotate in [0, "
                    "180], 0 < scale[0] <= scale[1], elastic_p in [0, 1], elastic_sigma > 0, "
                    "elastic_shift >= 0, min_on_foreground in (0, 1], max_attempts >= 1)."
                )


_PLACES_PER_WARP = 4


@dataclass
class RequestedMask:
    """One drawn mask (HxW uint8 in {0, 1}) and how it was made, for manifests."""

    mask: np.ndarray
    description: dict = field(default_factory=dict)


def _shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Integer translation with zero fill (what leaves the frame is lost)."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    if ys.stop > ys.start and xs.stop > xs.start:
        out[yd, xd] = mask[ys, xs]
    return out


def _box_centre(mask: np.ndarray) -> tuple[float, float, int, int]:
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    return (y0 + y1) / 2, (x0 + x1) / 2, int(y1 - y0 + 1), int(x1 - x0 + 1)


class RequestedMaskSampler:
    """Draws requested masks from real ``masks`` (any sizes, resized to ``size``).

    ``types[i]`` is the defect type index of ``masks[i]`` (None: one type). ``foreground``, an
    HxW {0, 1} array of ``size``, restricts placements: a draw is kept when at least
    ``config.min_on_foreground`` of it lies on the foreground; after ``max_attempts`` draws
    the best one is used and counted in ``fallbacks`` (and logged).
    """

    def __init__(
        self,
        masks: Sequence[np.ndarray],
        names: Sequence[str],
        size: Size | int,
        types: Sequence[int] | None = None,
        foreground: np.ndarray | None = None,
        config: PlacementConfig | None = None,
    ) -> None:
        if not masks:
            raise DataError("no real masks to draw requested masks from.")
        if len(names) != len(masks) or (types is not None and len(types) != len(masks)):
            raise ValueError("masks, names and types must have one entry per mask")
        self.size: Size = (size, size) if isinstance(size, int) else tuple(size)  # type: ignore[assignment]
        self.config = config or PlacementConfig()
        self.names = list(names)
        self.masks = []
        for mask, name in zip(masks, names, strict=True):
            if not np.asarray(mask).any():
                raise DataError(f"mask {name} is empty; requested masks are drawn from real ones.")
            self.masks.append(_resize_mask((np.asarray(mask) > 0).astype(np.uint8), self.size))
        self.types = list(types) if types is not None else [0] * len(masks)
        self.by_type: dict[int, list[int]] = {}
        for i, t in enumerate(self.types):
            self.by_type.setdefault(int(t), []).append(i)
        if foreground is not None:
            foreground = _resize_mask(np.asarray(foreground), self.size)
            if not foreground.any():
                raise DataError("the foreground is empty; requested masks need somewhere to go.")
            self._foreground_pixels = np.nonzero(foreground)
        self.foreground = foreground
        self._pipeline = self._build_pipeline()
        self._blank = np.zeros(self.size, np.uint8)  # albumentations wants an image target
        self.draws = 0
        self.fallbacks = 0

    def _build_pipeline(self) -> A.Compose:
        c = self.config
        side = min(self.size)
        sigma = c.elastic_sigma * side
        # displacement std of a blurred uniform(-1, 1) field is about 0.163 * alpha / sigma
        alpha = c.elastic_shift * side * sigma / 0.163
        return A.Compose(
            [
                A.HorizontalFlip(p=0.5 if c.flip else 0.0),
                A.Affine(
                    rotate=(-c.rotate, c.rotate),
                    scale=c.scale,
                    keep_ratio=True,  # one scale for both axes: shapes are not squashed
                    border_mode=cv2.BORDER_CONSTANT,
                    fill=0,
                    fill_mask=0,
                    p=1.0,
                ),
                A.ElasticTransform(
                    alpha=alpha,
                    sigma=sigma,
                    noise_distribution="uniform",
                    border_mode=cv2.BORDER_CONSTANT,
                    fill=0,
                    fill_mask=0,
                    p=c.elastic_p,
                ),
            ],
            save_applied_params=True,  # the drawn angle and scale go into the manifest
        )

    def _warp(self, mask: np.ndarray, seed: int) -> tuple[np.ndarray, dict]:
        h, w = self.size
        # centred first, so rotation and scaling (about the image centre) keep it in frame
        cy, cx, _, _ = _box_centre(mask)
        centred = _shift(mask, round(h / 2 - cy), round(w / 2 - cx))
        _seed_stream(self._pipeline, seed)  # one shared stream: flip, affine, warp independent
        out = self._pipeline(image=self._blank, mask=centred)
        applied = dict(out["applied_transforms"])
        affine = applied["Affine"]
        params = {
            "rotate": float(affine["rotate"]),
            "scale": float(affine["scale"]["x"]),
            "hflip": "HorizontalFlip" in applied,
            "elastic": "ElasticTransform" in applied,
        }
        return out["mask"].astype(np.uint8), params

    def _place(self, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        h, w = self.size
        cy, cx, bh, bw = _box_centre(mask)
        if self.foreground is not None:
            # aim the mask's centre at a random foreground pixel
            ys, xs = self._foreground_pixels
            k = int(rng.integers(len(ys)))
            ty, tx = float(ys[k]), float(xs[k])
        else:
            # uniform over the positions that keep the whole box in frame
            ty = rng.uniform(bh / 2, h - bh / 2) if bh < h else h / 2
            tx = rng.uniform(bw / 2, w - bw / 2) if bw < w else w / 2
        dy, dx = round(ty - cy), round(tx - cx)
        return _shift(mask, dy, dx), {
            "centre_y": float((cy + dy) / h),
            "centre_x": float((cx + dx) / w),
        }

    def on_foreground(self, mask: np.ndarray) -> float:
        if self.foreground is None:
            return 1.0
        return float((mask & self.foreground).sum() / max(1, mask.sum()))

    def sample(self, seed: int, defect_type: int | None = None) -> RequestedMask:
        """One requested mask, a pure function of ``(seed, defect_type)``."""
        rng = np.random.default_rng([seed, 0x9E3779B9])
        pool = self.by_type.get(0 if defect_type is None else int(defect_type))
        if not pool:
            raise ValueError(f"no real masks of defect type {defect_type} to draw from")
        best: tuple[float, np.ndarray, dict] | None = None
        self.draws += 1
        warped = np.zeros(0)
        for attempt in range(self.config.max_attempts):
            # warping costs far more than moving: a few places are tried per warped shape
            if attempt % _PLACES_PER_WARP == 0 or not warped.any():
                index = pool[int(rng.integers(len(pool)))]
                warped, params = self._warp(self.masks[index], int(rng.integers(2**31)))
            if not warped.any():  # a thin mask can warp away; never hand out an empty one
                continue
            placed, where = self._place(warped, rng)
            if not placed.any():
                continue
            share = self.on_foreground(placed)
            description = {
                "source": self.names[index],
                **params,
                **where,
                "attempts": attempt + 1,
                "on_foreground": share,
            }
            if best is None or share > best[0]:
                best = (share, placed, description)
            if share >= self.config.min_on_foreground:
                return RequestedMask(placed, description)
        self.fallbacks += 1
        if self.fallbacks == 1 or self.fallbacks % 100 == 0:
            log.warning(
                "requested masks: %d of %d draws found no placement with >= %.0f %% on the "
                "foreground in %d attempts; the best attempt was used",
                self.fallbacks,
                self.draws,
                100 * self.config.min_on_foreground,
                self.config.max_attempts,
            )
        if best is None:  # every attempt warped away: the source mask, untransformed
            index = pool[int(rng.integers(len(pool)))]
            mask = self.masks[index]
            return RequestedMask(mask.copy(), {"source": self.names[index], "fallback": True})
        best[2]["fallback"] = True
        return RequestedMask(best[1], best[2])


# =============================================================================== generation


PLACEMENT_MODES = ("random", "foreground")


class Placement:
    """Requested masks for generation (``placement=random|foreground|<folder of masks>``).

    ``random`` and ``foreground`` draw from ``sampler`` (built on the real training masks; for
    ``foreground`` with the product's foreground). A folder holds the user's own masks
    (binarised as every user mask is, ``mask_threshold`` overriding the value-range rule):
    matched to the source images by stem (``<stem>.png`` or ``<stem>_mask.png``) when every
    source has one, cycled in name order when none has, an error otherwise.
    """

    def __init__(
        self,
        option: str,
        sampler: RequestedMaskSampler | None = None,
        mask_suffix: str = "_mask",
        mask_threshold: float | None = None,
    ) -> None:
        self.option, self.sampler, self.mask_suffix = str(option), sampler, mask_suffix
        self.folder: Path | None = None
        if self.option in PLACEMENT_MODES:
            if sampler is None:
                raise ValueError(f"placement={self.option} needs a RequestedMaskSampler")
            if self.option == "foreground" and sampler.foreground is None:
                raise ValueError("placement=foreground needs a sampler with a foreground")
            return
        folder = Path(self.option).expanduser()
        if not folder.is_dir():
            raise ConfigError(
                f"placement={self.option!r} is neither one of {list(PLACEMENT_MODES)} nor a "
                "folder of binary masks."
            )
        self.folder = folder
        self.files = list_images(folder)
        if not self.files:
            raise ConfigError(f"placement={self.option!r}: the folder holds no mask images.")
        # every file is checked now, so a bad one is named before any generation work
        self.user_masks = {
            p: read_binary_mask(p, "placement mask", mask_threshold) for p in self.files
        }

    def _match(self, stems: Sequence[str] | None, n: int) -> tuple[list[Path], bool]:
        """The mask file of each source, and whether they were matched by stem."""
        by_stem: dict[str, Path] = {}
        for p in self.files:
            stem = p.stem
            if self.mask_suffix and stem.endswith(self.mask_suffix):
                stem = stem[: -len(self.mask_suffix)]
            if stem in by_stem:
                raise DataError(
                    f"placement folder {self.folder}: {by_stem[stem].name} and {p.name} both "
                    f"match source stem {stem!r}; keep one."
                )
            by_stem[stem] = p
        if stems is not None:
            found = [s in by_stem for s in stems]
            if all(found):
                return [by_stem[s] for s in stems], True
            if any(found):
                missing = [s for s, ok in zip(stems, found, strict=True) if not ok]
                raise DataError(
                    f"placement folder {self.folder} has masks for some source images but not "
                    f"for {missing[:5]}{'…' if len(missing) > 5 else ''}; give one mask per "
                    f"source (<stem>.png or <stem>{self.mask_suffix}.png) or none of them "
                    "(then the masks are cycled in name order)."
                )
        if stems is not None:
            log.info("placement: no mask in %s matches a source image; cycling them", self.folder)
        return [self.files[i % len(self.files)] for i in range(n)], False

    def masks(
        self,
        n: int,
        size: Size | int,
        seed: int,
        stems: Sequence[str] | None = None,
        defect_types: Sequence[int] | None = None,
        source_sizes: Sequence[Size] | None = None,
    ) -> tuple[torch.Tensor, list[dict]]:
        """``n`` requested masks as a float tensor (n, 1, H, W) in {0, 1} and a description
        per mask (source mask, transform parameters) for the manifest. ``stems`` names the
        source images (for matching a folder); ``defect_types`` the type of each mask;
        ``source_sizes`` the (height, width) of each source image as stored, which a mask
        matched to it by stem must have.

        A folder's masks take the source images' path to ``size``: the shorter side scaled to
        it, then the centre crop (what the evaluation transform does to the images)."""
        height, width = (size, size) if isinstance(size, int) else size
        for name, values in (("stems", stems), ("source_sizes", source_sizes)):
            if values is not None and len(values) != n:
                raise ValueError(f"{name} must have one entry per mask")
        out, descriptions = [], []
        if self.folder is not None:
            matched, by_stem = self._match(stems, n)
            for i, path in enumerate(matched):
                mask = self.user_masks[path]
                if source_sizes is not None and by_stem and mask.shape != tuple(source_sizes[i]):
                    h, w = source_sizes[i]
                    raise DataError(
                        f"placement mask {path} is {mask.shape[1]}x{mask.shape[0]} but its "
                        f"source image ({stems[i] if stems else i}) is {w}x{h}; expected "
                        "equal sizes."
                    )
                fitted = _fit_mask(mask, (height, width))
                if not fitted.any():
                    raise DataError(
                        f"placement mask {path} has its region outside the centre crop that "
                        "generation uses; nothing would be requested."
                    )
                out.append(fitted)
                descriptions.append({"placement": "folder", "source": str(path)})
        else:
            assert self.sampler is not None
            if self.sampler.size != (height, width):
                raise ValueError(f"the sampler draws {self.sampler.size} masks, not {size}")
            seeds = np.random.default_rng(seed).integers(0, 2**31 - 1, size=n)
            for i in range(n):
                t = None if defect_types is None else int(defect_types[i])
                drawn = self.sampler.sample(int(seeds[i]), t)
                out.append(drawn.mask)
                descriptions.append({"placement": self.option, **drawn.description})
        masks = torch.from_numpy(np.stack(out)).unsqueeze(1).float()
        return masks, descriptions

    def describe(self) -> dict:
        config = asdict(self.sampler.config) if self.sampler is not None else {}
        return {"placement": self.option, **({"config": config} if config else {})}
