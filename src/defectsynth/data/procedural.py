"""Embedded default dataset: seeded procedural stand-ins for three MVTec AD products.

Every demo, test and benchmark runs on this data when no real MVTec AD folder is given, so the
renderers imitate the real inspection photos (texture statistics, lighting, defect shapes and
mask conventions) rather than drawing toy patterns:

* ``tile`` / ``crack``: speckled grey-green terrazzo ceramic with a thin, jagged, branching crack.
* ``wood`` / ``hole``: honey oak with wavy vertical grain and a dark round hole (or a cluster).
* ``transistor`` / ``cut_lead``: a black TO-92 on copper stripboard with one lead cut off.

Each product has a second defect type (``DEFECT_TYPES``), written only when the spec asks for
it (``all_defects``), so the paper's datasets and their cache folders stay exactly as they were:

* ``tile`` / ``glue_strip``: a darker, glossy, translucent band of glue across the tile.
* ``wood`` / ``scratch``: a long, thin, nearly straight bright or dark scratch.
* ``transistor`` / ``misplaced``: the package and its leads shifted and rotated off their place.

A defective sample is rendered on top of the very same clean instance, so the defect image
differs from the clean one only inside its mask, and the mask is the set of changed pixels grown
by a few pixels of margin, like the hand-drawn MVTec masks.

Geometry is expressed in units of the image side (or in pixels at 512 px scaled by
``size / 512``), so the products keep their look at every resolution; images smaller than
256 px are area-downscaled 256 px renders, so fine grains and fibres average out as they would
in a downscaled photo instead of vanishing.

Everything is seeded: each image's seed derives from (dataset seed, split, index), and the
clean instance and its defect use separate random streams, so the clean image of a seed is the
same whether or not a defect is rendered on it.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import shutil
import time
import uuid
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)

#: Bump whenever rendering changes, so cached datasets of older versions are not reused.
GENERATOR_VERSION = "1"

PRODUCTS: dict[str, str] = {"tile": "crack", "wood": "hole", "transistor": "cut_lead"}

#: Every defect type of each product; the first one is the paper's (``PRODUCTS``).
DEFECT_TYPES: dict[str, tuple[str, ...]] = {
    "tile": ("crack", "glue_strip"),
    "wood": ("hole", "scratch"),
    "transistor": ("cut_lead", "misplaced"),
}

# (train/good, test/good, test/<defect>) as in the real MVTec AD release.
_DEFAULT_COUNTS: dict[str, tuple[int, int, int]] = {
    "tile": (230, 33, 17),
    "wood": (247, 19, 10),
    "transistor": (213, 60, 10),
}

# Stable ids mixed into per-image seeds so that splits never share an instance.
_SPLIT_IDS = {"train_good": 0, "test_good": 1, "test_defect": 2}
# the k-th additional defect type (k >= 1) draws its instances from split id base + k, far from
# the ids above so that a new split can never collide with them
_EXTRA_DEFECT_SPLIT_BASE = 16
_MIN_SIZE = 32
_MIN_RENDER_SIZE = 256
_META_NAME = "procedural.json"

Rng = np.random.Generator
FloatImage = np.ndarray  # HxWx3 float32 in [0, 1]


def _check_category(category: str) -> None:
    if category not in PRODUCTS:
        raise ValueError(
            f"unknown procedural category {category!r}; available categories: "
            f"{', '.join(sorted(PRODUCTS))}"
        )


# =============================================================================== spec


@dataclass(frozen=True)
class ProceduralSpec:
    """What to generate. ``None`` counts resolve to the real MVTec AD counts of the category."""

    category: str
    image_size: int = 512
    n_train_good: int | None = None
    n_test_good: int | None = None
    n_defect: int | None = None
    seed: int = 0
    #: also write the category's additional defect types (``DEFECT_TYPES``), n_defect each
    all_defects: bool = False

    def __post_init__(self) -> None:
        _check_category(self.category)
        defaults = _DEFAULT_COUNTS[self.category]
        names = ("n_train_good", "n_test_good", "n_defect")
        for name, default in zip(names, defaults, strict=True):
            if getattr(self, name) is None:
                # frozen dataclass: resolving defaults is part of construction
                object.__setattr__(self, name, default)
        for name in names:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"ProceduralSpec.{name} must be an integer >= 0, got {value!r}")
        if not isinstance(self.image_size, int) or self.image_size < _MIN_SIZE:
            raise ValueError(
                f"ProceduralSpec.image_size must be an integer >= {_MIN_SIZE}, "
                f"got {self.image_size!r}"
            )
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"ProceduralSpec.seed must be an integer >= 0, got {self.seed!r}")
        if not isinstance(self.all_defects, bool):
            raise ValueError(
                f"ProceduralSpec.all_defects must be true or false, got {self.all_defects!r}"
            )

    @classmethod
    def for_category(cls, category: str, **overrides: int) -> ProceduralSpec:
        """Spec with the category's real MVTec AD counts, overridden by ``overrides``."""
        return cls(category=category, **overrides)

    @property
    def defect(self) -> str:
        return PRODUCTS[self.category]

    @property
    def defects(self) -> tuple[str, ...]:
        """The defect types written: the paper's one, or every type of the category."""
        return DEFECT_TYPES[self.category] if self.all_defects else (self.defect,)

    def fingerprint(self) -> str:
        """Short stable hash of every field and the generator version."""
        fields = asdict(self)
        if not self.all_defects:
            # the paper's datasets keep the fingerprint (and cache folder) they had before
            # additional defect types existed
            del fields["all_defects"]
        else:
            # adding a type later must not reuse a cache written without it
            fields["defect_types"] = list(self.defects)
        payload = json.dumps({"generator_version": GENERATOR_VERSION, **fields}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


# =============================================================================== primitives


def _smooth_noise(
    rng: Rng, size: int | tuple[int, int], sigma_x: float, sigma_y: float | None = None
) -> np.ndarray:
    """Zero-mean, unit-std Gaussian-correlated noise with correlation lengths in pixels.

    ``size`` is the side of a square or a (height, width) pair. Blurring white noise at a
    reduced resolution and upsampling keeps long correlation lengths cheap; separate x/y
    lengths give the streaky fields that wood grain and metal leads need.
    """
    height, width = (size, size) if isinstance(size, int) else size
    sigma_y = sigma_x if sigma_y is None else sigma_y
    fx, fy = max(1.0, sigma_x / 2.0), max(1.0, sigma_y / 2.0)
    pad = 4  # low-res cells of margin keep the reflected blur border out of the crop
    w, h = int(np.ceil(width / fx)) + 2 * pad, int(np.ceil(height / fy)) + 2 * pad
    white = rng.standard_normal((h, w), dtype=np.float32)
    low = cv2.GaussianBlur(
        white, (0, 0), sigmaX=max(sigma_x / fx, 0.3), sigmaY=max(sigma_y / fy, 0.3)
    )
    up = cv2.resize(low, (round(w * fx), round(h * fy)), interpolation=cv2.INTER_CUBIC)
    ox, oy = int(pad * fx), int(pad * fy)
    out = up[oy : oy + height, ox : ox + width]
    return ((out - out.mean()) / (out.std() + 1e-6)).astype(np.float32)


def _smoothstep(lo: float, hi: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x) in pixels, float32."""
    ax = np.arange(size, dtype=np.float32) + 0.5
    return np.meshgrid(ax, ax, indexing="ij")


def _lighting(rng: Rng, size: int, gradient: float, vignette: float) -> np.ndarray:
    """Multiplicative HxW light field: a tilted linear ramp (off-axis lamp) plus lens falloff."""
    yy, xx = _grid(size)
    u, v = xx / size - 0.5, yy / size - 0.5
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * u + np.sin(angle) * v
    cx, cy = rng.normal(0, 0.08, size=2)
    r2 = (u - cx) ** 2 + (v - cy) ** 2
    return (1.0 + gradient * rng.uniform(0.5, 1.0) * 2 * ramp - vignette * r2).astype(np.float32)


def _sensor(rng: Rng, img: FloatImage, noise: float, blur_px: float) -> FloatImage:
    """Camera softness and shot-like noise, so flat areas are never perfectly flat."""
    if blur_px > 0.25:
        img = cv2.GaussianBlur(img, (0, 0), blur_px)
    grain = rng.standard_normal(img.shape[:2], dtype=np.float32) * noise
    # per-channel noise only needs the right spread, and uniform draws are much cheaper
    chroma = (rng.random(img.shape, dtype=np.float32) - 0.5) * (noise * 0.4 * 12**0.5)
    return img + grain[..., None] + chroma


def _to_uint8(img: FloatImage) -> np.ndarray:
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _blend(base: FloatImage, color: np.ndarray, alpha: np.ndarray) -> FloatImage:
    a = alpha[..., None]
    return base * (1.0 - a) + color * a


def _chaikin(points: np.ndarray, iterations: int = 2) -> np.ndarray:
    """Corner-cutting keeps the end points and rounds the bends of a polyline (bent wire)."""
    for _ in range(iterations):
        p, q = points[:-1], points[1:]
        cut = np.empty((2 * len(p), 2), dtype=np.float64)
        cut[0::2], cut[1::2] = 0.75 * p + 0.25 * q, 0.25 * p + 0.75 * q
        points = np.vstack([points[:1], cut[1:-1], points[-1:]])
    return points


def _polyline_field(
    points: np.ndarray, ys: np.ndarray, xs: np.ndarray, reach: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distance to a polyline, signed side and arc length of the nearest point, per pixel of
    the grid (ys, xs); only pixels within ``reach`` of the polyline get finite distances.

    Analytic distances (rather than a rasterised distance transform) give clean anti-aliased
    wire edges and an exact, flat cut face where a lead is severed.
    """
    best = np.full(ys.shape, np.inf, dtype=np.float32)
    side = np.zeros(ys.shape, dtype=np.float32)
    arc = np.zeros(ys.shape, dtype=np.float32)
    oy, ox = float(ys[0, 0]), float(xs[0, 0])
    h, w = ys.shape
    start = 0.0
    for a, b in itertools.pairwise(points.tolist()):
        dx, dy = b[0] - a[0], b[1] - a[1]
        length = float(np.hypot(dx, dy))
        if length < 1e-9:
            continue
        # each segment only touches the pixels within reach of it
        r0 = max(0, int(min(a[1], b[1]) - reach - oy))
        r1 = min(h, int(max(a[1], b[1]) + reach - oy) + 2)
        c0 = max(0, int(min(a[0], b[0]) - reach - ox))
        c1 = min(w, int(max(a[0], b[0]) + reach - ox) + 2)
        if r1 > r0 and c1 > c0:
            win = (slice(r0, r1), slice(c0, c1))
            px, py = xs[win] - a[0], ys[win] - a[1]
            t = np.clip((px * dx + py * dy) / (length * length), 0.0, 1.0)
            dist = np.hypot(px - t * dx, py - t * dy)
            closer = dist < best[win]
            best[win] = np.where(closer, dist, best[win])
            side[win] = np.where(closer, (dx * py - dy * px) / length, side[win])
            arc[win] = np.where(closer, start + t * length, arc[win])
        start += length
    return best, side, arc


def _defect_mask(clean: np.ndarray, defect: np.ndarray, margin: int) -> np.ndarray:
    """Changed pixels grown by ``margin`` pixels, like the generous outline of an MVTec mask."""
    changed = np.any(clean != defect, axis=2).astype(np.uint8)
    if margin > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
        changed = cv2.dilate(changed, kernel)
    return changed


# =============================================================================== tile


_TILE_LIGHT = np.array([0.625, 0.665, 0.635], dtype=np.float32)
_TILE_DARK = np.array([0.27, 0.275, 0.265], dtype=np.float32)
_CRACK_CORE = np.array([0.11, 0.095, 0.085], dtype=np.float32)
_CRACK_LIP = np.array([0.8, 0.82, 0.8], dtype=np.float32)

# (blob radius in pixels at 512 px, blobs per 512x512 image): aggregate of many grain sizes
_TILE_GRAINS = ((1.4, 2400), (2.6, 1000), (4.2, 450), (6.0, 170), (8.5, 45))


def _tile_speckles(rng: Rng, size: int) -> np.ndarray:
    """Coverage (0..1) of dark aggregate: soft rounded grains of many sizes that merge into
    irregular blobs where they touch, spread a little unevenly over the tile."""
    s = size / 512
    density = 0.75 + 0.25 * np.tanh(_smooth_noise(rng, size, 60 * s))
    roughness = _smooth_noise(rng, size, 1.5 * s)
    cover = np.zeros((size, size), np.float32)
    for radius, count in _TILE_GRAINS:
        sigma = max(radius * s, 0.6)
        n = rng.poisson(count * rng.uniform(0.8, 1.2) * s * s)
        ys, xs = rng.integers(0, size, size=(2, n))
        keep = rng.random(n) < density[ys, xs]
        impulses = np.zeros((size, size), np.float32)
        # peak of a blurred impulse is weight / (2 pi sigma^2); the spread varies grain size
        np.add.at(
            impulses,
            (ys[keep], xs[keep]),
            2 * np.pi * sigma**2 * rng.uniform(0.7, 1.8, size=int(keep.sum())).astype(np.float32),
        )
        field = cv2.GaussianBlur(impulses, (0, 0), sigma)
        cover = np.maximum(cover, _smoothstep(0.22, 0.78, field + 0.12 * roughness))
    return cover


def _render_tile_clean(rng: Rng, size: int) -> FloatImage:
    s = size / 512
    cover = _tile_speckles(rng, size)
    tint = 1.0 + rng.normal(0, 0.015, size=3).astype(np.float32)  # glaze batch colour
    exposure = rng.uniform(0.88, 1.06)  # lamp/exposure drift between shots
    light = _TILE_LIGHT * tint * exposure
    dark = _TILE_DARK * rng.uniform(0.9, 1.12) * exposure
    # glaze mottling and uneven pigment in the grains keep large areas from looking flat
    mottle = 1.0 + 0.03 * _smooth_noise(rng, size, 30 * s) + 0.015 * _smooth_noise(rng, size, 2 * s)
    core = 1.0 + 0.1 * _smooth_noise(rng, size, 3 * s)
    light_img = light[None, None, :] * mottle[..., None]
    dark_img = dark[None, None, :] * core[..., None]
    img = light_img * (1 - cover[..., None]) + dark_img * cover[..., None]
    img = img * _lighting(rng, size, gradient=0.07, vignette=0.12)[..., None]
    return _sensor(rng, img, noise=0.01, blur_px=1.3 * s)


def _crack_walk(rng: Rng, start: np.ndarray, target: np.ndarray, step: float = 0.006) -> np.ndarray:
    """Fracture path in unit coordinates from ``start`` towards ``target``: mostly straight,
    with a small wobble and occasional kinks, ending at the target or at the tile border."""
    points, pos = [start.copy()], start.copy()
    d = target - start
    h = float(np.arctan2(d[1], d[0]))
    for _ in range(int(3 * np.hypot(*d) / step) + 4):
        d = target - pos
        dist = float(np.hypot(*d))
        if dist < 2 * step:
            break
        h_goal = float(np.arctan2(d[1], d[0]))
        h += rng.normal(0, 0.05)
        if rng.random() < 0.03 and dist > 0.1:
            h += rng.normal(0, 0.3)
        # steer back towards the goal (harder when close, so it never orbits the goal):
        # cracks run across the tile rather than curling up
        gain = 0.15 + 0.6 * float(np.clip(1 - dist / 0.1, 0, 1))
        h += gain * float(np.angle(np.exp(1j * (h_goal - h))))
        pos = pos + step * np.array([np.cos(h), np.sin(h)])
        points.append(pos + rng.normal(0, 0.001) * np.array([-np.sin(h), np.cos(h)]))
        if not (-0.02 <= pos[0] <= 1.02 and -0.02 <= pos[1] <= 1.02):
            break
    return np.array(points)


def _edge_point(rng: Rng, edge: int, lo: float = 0.12, hi: float = 0.88) -> np.ndarray:
    t = rng.uniform(lo, hi)
    # slightly outside the tile, so paths really reach the border
    return [np.array([t, -0.03]), np.array([1.03, t]), np.array([t, 1.03]), np.array([-0.03, t])][
        edge
    ]


def _crack_paths(rng: Rng) -> list[tuple[np.ndarray, float, bool]]:
    """(points, relative width, dies out at its end) of the main crack and its branches."""
    edge = int(rng.integers(4))
    # most real cracks run in from a border ...
    inside = rng.random() >= 0.85
    start = rng.uniform(0.2, 0.8, size=2) if inside else np.clip(_edge_point(rng, edge), 0, 1)
    dies = rng.random() >= 0.7  # ... and leave through another one
    for _ in range(50):  # a crack spans a large part of the tile, not just a corner
        if dies:
            target = rng.uniform(0.1, 0.9, size=2)
        else:
            target = _edge_point(rng, (edge + int(rng.integers(1, 4))) % 4)
        if np.hypot(*(target - start)) >= 0.6:
            break
    main = _crack_walk(rng, start, target)
    paths = [(main, 1.0, dies)]
    for _ in range(int(rng.choice([0, 1, 1, 1, 2]))):
        if len(main) < 10:
            break
        k = int(rng.uniform(0.2, 0.8) * (len(main) - 1))
        d = main[k + 1] - main[k - 1]
        base = float(np.arctan2(d[1], d[0]))
        h = base + rng.choice([-1, 1]) * rng.uniform(0.6, 1.6)
        reach = rng.uniform(0.25, 0.9)
        goal = main[k] + reach * np.array([np.cos(h), np.sin(h)])
        branch = _crack_walk(rng, main[k], goal)
        paths.append((branch, rng.uniform(0.6, 0.95), bool(rng.random() < 0.5)))
    return paths


def _draw_crack(rng: Rng, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Alpha maps (core, light lip) of a crack, drawn supersampled for sub-pixel widths."""
    s = size / 512
    ss = 2  # supersampling factor
    big = size * ss
    core = np.zeros((big, big), np.uint8)
    lip = np.zeros((big, big), np.uint8)
    width = rng.uniform(3.5, 6.0)  # visible crack width in pixels at 512 px
    shift = 3
    for points, rel, dies in _crack_paths(rng):
        n = len(points)
        # width breathes along the crack and thins out where it dies away
        ctrl = rng.uniform(0.6, 1.3, size=max(2, n // 12))
        along = np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(ctrl)), ctrl)
        taper = np.ones(n) if not dies else np.clip(np.linspace(1, 0, n) / 0.2, 0.15, 1.0)
        widths = width * rel * along * taper * s * ss
        px = points * big * (1 << shift)
        lip_side = rng.choice([-1.0, 1.0])
        lip_strength = rng.uniform(0.0, 0.7)
        for i in range(n - 1):
            p0, p1 = px[i], px[i + 1]
            thick = max(1, round(float(widths[i])))
            cv2.line(
                core, tuple(p0.astype(int)), tuple(p1.astype(int)), 255, thick, cv2.LINE_AA, shift
            )
            if lip_strength > 0.05:
                d = p1 - p0
                nrm = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9)
                off = nrm * lip_side * (widths[i] / 2 + 1.0 * ss) * (1 << shift)
                cv2.line(
                    lip,
                    tuple((p0 + off).astype(int)),
                    tuple((p1 + off).astype(int)),
                    int(255 * lip_strength),
                    max(1, round(1.2 * s * ss)),
                    cv2.LINE_AA,
                    shift,
                )
    core_a = cv2.resize(core, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    lip_a = cv2.resize(lip, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    return core_a / 255.0, lip_a / 255.0


def _render_tile_crack(rng: Rng, clean: FloatImage) -> FloatImage:
    size = clean.shape[0]
    core, lip = _draw_crack(rng, size)
    # crack walls shade the glaze right next to the gap a little
    shade = cv2.GaussianBlur(core, (0, 0), max(0.6, 1.2 * size / 512)) * 0.35
    shade[shade < 0.03] = 0.0  # keep the defect compact so the mask stays tight
    img = clean * (1.0 - shade[..., None])
    img = _blend(img, _CRACK_LIP, lip * (1.0 - core))
    depth = 1.0 + 0.25 * _smooth_noise(rng, size, 6 * size / 512)
    img = _blend(img, _CRACK_CORE[None, None, :] * depth[..., None], np.clip(core * 1.05, 0, 1))
    return img


_GLUE = np.array([0.47, 0.43, 0.33], dtype=np.float32)  # amber-grey dried glue
_GLOSS = np.array([0.93, 0.94, 0.92], dtype=np.float32)


def _band_path(rng: Rng) -> np.ndarray:
    """Centre line (unit coordinates) of a brushed band: in from one border, gently bowed,
    out through another border or ending on the tile where the brush lifted off."""
    edge = int(rng.integers(4))
    start = _edge_point(rng, edge, 0.2, 0.8)
    if rng.random() < 0.3:
        end = rng.uniform(0.3, 0.7, size=2)
    else:
        end = _edge_point(rng, (edge + int(rng.choice([1, 2, 2, 3]))) % 4, 0.2, 0.8)
    d = end - start
    normal = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9)
    bow = start + 0.5 * d + normal * rng.uniform(-0.12, 0.12) * np.hypot(*d)
    t = np.linspace(0.0, 1.0, 64)[:, None]
    return (1 - t) ** 2 * start + 2 * (1 - t) * t * bow + t**2 * end


def _render_tile_glue(rng: Rng, clean: FloatImage) -> FloatImage:
    size = clean.shape[0]
    s = size / 512
    points = _band_path(rng) * size
    half = rng.uniform(0.022, 0.05) * size
    yy, xx = _grid(size)
    dist, side, _ = _polyline_field(points, yy, xx, reach=2.0 * half)
    # the glue spreads unevenly: ragged, wandering edges rather than a ruler-straight band
    wobble = 1.0 + 0.3 * _smooth_noise(rng, size, 25 * s) + 0.1 * _smooth_noise(rng, size, 4 * s)
    width = half * np.clip(wobble, 0.5, 1.6)
    alpha = np.clip(width - dist + 0.75, 0, 1.5) / 1.5
    alpha[~np.isfinite(dist)] = 0.0
    # thicker (darker) towards the middle, thin at its ragged rims
    across = np.clip(np.abs(side) / np.maximum(width, 1.0), 0, 1)
    thickness = (1.0 - 0.5 * across**2) * (1.0 + 0.12 * _smooth_noise(rng, size, 10 * s))
    film = np.clip(alpha * rng.uniform(0.5, 0.7) * thickness, 0, 1)
    img = _blend(clean, _GLUE * rng.uniform(0.85, 1.1), film)
    # a wet-looking specular streak runs along the band, broken where the film is thin
    lane = rng.uniform(-0.5, 0.5)
    streak = np.exp(-((((side / np.maximum(width, 1.0)) - lane) / 0.18) ** 2))
    streak *= _smoothstep(-0.2, 1.2, _smooth_noise(rng, size, 18 * s))
    img = _blend(img, _GLOSS, np.clip(0.45 * streak * alpha, 0, 1))
    return img


# =============================================================================== wood


# measured on real oak: dark grain is redder, pale fibres are yellower than the mean colour
_WOOD_BASE = np.array([0.68, 0.49, 0.355], dtype=np.float32)
_WOOD_LIGHT = np.array([0.82, 0.645, 0.465], dtype=np.float32)
_WOOD_DARK = np.array([0.42, 0.28, 0.21], dtype=np.float32)
_HOLE_DARK = np.array([0.085, 0.06, 0.045], dtype=np.float32)
_HOLE_WALL = np.array([0.36, 0.23, 0.15], dtype=np.float32)


def _wood_warp(rng: Rng, size: int) -> np.ndarray:
    """Horizontal displacement that makes the grain wave gently and, sometimes, bend around
    a cathedral/knot figure."""
    s = size / 512
    warp = 5 * s * _smooth_noise(rng, size, 120 * s, 300 * s)
    warp += 1.5 * s * _smooth_noise(rng, size, 20 * s, 80 * s)
    if rng.random() < 0.3:
        yy, xx = _grid(size)
        x0, y0 = rng.uniform(0.15, 0.85, size=2) * size
        sx, sy = rng.uniform(30, 80) * s, rng.uniform(80, 200) * s
        # kept below the figure's width so grain lines bend but never fold over
        amp = rng.choice([-1, 1]) * rng.uniform(0.25, 0.6) * sx
        warp += amp * np.exp(-(((xx - x0) / sx) ** 2) - ((yy - y0) / sy) ** 2)
    return warp.astype(np.float32)


def _wood_tone(rng: Rng, size: int) -> np.ndarray:
    """Darkness field (0 = base colour, >0 darker, <0 lighter) of vertical oak grain."""
    s = size / 512
    bands = _smooth_noise(rng, size, 30 * s, 600 * s)  # broad light/dark growth zones
    streaks = _smooth_noise(rng, size, 2.5 * s, 150 * s)  # fibre bundles
    fibres = _smooth_noise(rng, size, 0.8 * s, 70 * s)  # single fibres, crisp in x
    late = _smoothstep(0.9, 1.7, _smooth_noise(rng, size, 1.0 * s, 60 * s))  # dark latewood
    early = _smoothstep(1.0, 1.8, _smooth_noise(rng, size, 1.0 * s, 80 * s))  # pale rays
    tone = 0.3 * bands + 0.2 * streaks + 0.18 * fibres + 0.42 * late - 0.35 * early
    warp = _wood_warp(rng, size)
    yy, xx = _grid(size)
    tone = cv2.remap(
        tone, xx - 0.5 + warp, yy - 0.5, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )
    # open pores of oak: short dark dashes along the grain, not displaced (they are tiny)
    pores = _smoothstep(2.4, 3.1, _smooth_noise(rng, size, 0.9 * s, 5 * s))
    return tone + 0.7 * pores


def _render_wood_clean(rng: Rng, size: int) -> FloatImage:
    s = size / 512
    tone = _wood_tone(rng, size)
    tone = tone * rng.uniform(0.85, 1.15) + rng.normal(0, 0.05)
    # board-to-board colour: mostly brightness, a little hue
    tint = (1.0 + rng.normal(0, 0.012, size=3)).astype(np.float32) * rng.uniform(0.93, 1.05)
    base, light, dark = _WOOD_BASE * tint, _WOOD_LIGHT * tint, _WOOD_DARK * tint
    t = np.clip(tone, -1.0, 1.4)[..., None]
    img = np.where(t > 0, base + (dark - base) * t, base + (light - base) * (-t))
    img = img * _lighting(rng, size, gradient=0.05, vignette=0.18)[..., None]
    return _sensor(rng, img.astype(np.float32), noise=0.01, blur_px=0.6 * s)


def _hole_specs(rng: Rng, size: int) -> list[tuple[float, float, float]]:
    """(cx, cy, radius) in pixels: one hole, or a small cluster of bore holes."""
    if rng.random() < 0.3:
        c = rng.uniform(0.18, 0.82, size=2) * size
        holes = []
        for _ in range(int(rng.integers(2, 5))):
            off = rng.normal(0, 0.045, size=2) * size
            holes.append((c[0] + off[0], c[1] + off[1], rng.uniform(0.007, 0.014) * size))
        return holes
    c = rng.uniform(0.15, 0.85, size=2) * size
    return [(c[0], c[1], rng.uniform(0.016, 0.042) * size)]


def _render_wood_hole(rng: Rng, clean: FloatImage) -> FloatImage:
    size = clean.shape[0]
    img = clean.copy()
    for cx, cy, r in _hole_specs(rng, size):
        r = max(r, 1.2)
        ext = int(np.ceil(r * 2.2)) + 2  # room for the ragged rim and its shadow ring
        x0, x1 = max(0, int(cx) - ext), min(size, int(cx) + ext + 1)
        y0, y1 = max(0, int(cy) - ext), min(size, int(cy) + ext + 1)
        if x1 <= x0 or y1 <= y0:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
        # elliptical, slightly ragged outline: torn fibres never leave a perfect circle
        ang = rng.uniform(0, np.pi)
        ratio = rng.uniform(0.7, 1.0)
        dx, dy = xx - cx, yy - cy
        u = dx * np.cos(ang) + dy * np.sin(ang)
        v = (-dx * np.sin(ang) + dy * np.cos(ang)) / ratio
        theta = np.arctan2(v, u)
        radius = np.full_like(theta, r)
        for k in (2, 3, 5, 8):
            radius += r * rng.normal(0, 0.12 / k**0.7) * np.cos(k * theta + rng.uniform(0, 6.3))
        rho = np.hypot(u, v) / radius
        edge_px = np.hypot(u, v) - radius
        inside = np.clip(0.5 - edge_px, 0, 1)
        # darkened, crushed fibres around the rim fade out within about half a radius
        ring = np.clip(1 - (rho - 1) / 0.55, 0, 1) ** 2 * (rho >= 0.9)
        ring = ring * rng.uniform(0.35, 0.6)
        ring[ring < 0.03] = 0
        patch = img[y0:y1, x0:x1] * (1 - ring[..., None])
        # the wall lit by the lamp shows as a brown crescent on one side of the cavity
        light_dir = rng.uniform(0, 2 * np.pi)
        crescent = np.clip(np.cos(theta - light_dir), 0, 1) * _smoothstep(0.55, 0.95, rho)
        interior = _HOLE_DARK + (_HOLE_WALL - _HOLE_DARK) * (0.8 * crescent[..., None])
        grain = 1.0 + 0.15 * rng.standard_normal(interior.shape[:2]).astype(np.float32)
        patch = _blend(patch, interior * grain[..., None], inside)
        img[y0:y1, x0:x1] = patch
    return img


_SCRATCH_LIGHT = np.array([0.9, 0.78, 0.62], dtype=np.float32)  # crushed, exposed fibres
_SCRATCH_DARK = np.array([0.25, 0.16, 0.11], dtype=np.float32)  # dirt-filled groove


def _render_wood_scratch(rng: Rng, clean: FloatImage) -> FloatImage:
    size = clean.shape[0]
    s = size / 512
    ss = 2  # supersampling factor, as for cracks: scratches are sub-pixel at small sizes
    big = size * ss
    shift = 3
    stroke = np.zeros((big, big), np.uint8)
    angle = rng.uniform(0, np.pi)
    length = rng.uniform(0.3, 0.75)
    centre = rng.uniform(0.25, 0.75, size=2)
    direction = np.array([np.cos(angle), np.sin(angle)])
    normal = np.array([-direction[1], direction[0]])
    bow = rng.uniform(-0.03, 0.03)
    width = rng.uniform(3.0, 5.0)  # pixels at 512 px
    # one main stroke, sometimes accompanied by a parallel one from the same tool
    n_strokes = 1 if rng.random() < 0.7 else 2
    for k in range(n_strokes):
        offset = normal * (k * rng.uniform(0.012, 0.03))
        t = np.linspace(-0.5, 0.5, 48)[:, None]
        pts = centre + offset + t * length * direction + (1 - 4 * t**2) * bow * normal
        px = pts * big * (1 << shift)
        # pressure varies along the stroke and fades at both ends
        pressure = np.clip(1.2 - (2 * np.abs(t[:, 0])) ** 4, 0, 1) * rng.uniform(0.7, 1.0, 48)
        for i in range(len(px) - 1):
            value = int(255 * pressure[i])
            if value < 20:
                continue
            thick = max(1, round(width * s * ss * (0.8 if k else 1.0)))
            cv2.line(
                stroke,
                tuple(px[i].astype(int)),
                tuple(px[i + 1].astype(int)),
                value,
                thick,
                cv2.LINE_AA,
                shift,
            )
    alpha = cv2.resize(stroke, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    alpha /= 255.0
    colour = _SCRATCH_LIGHT if rng.random() < 0.6 else _SCRATCH_DARK
    return _blend(clean, colour * rng.uniform(0.9, 1.05), np.clip(alpha * 0.95, 0, 1))


# =============================================================================== transistor


_COPPER = np.array([0.57, 0.4, 0.33], dtype=np.float32)
_BOARD_HOLE = np.array([0.12, 0.095, 0.095], dtype=np.float32)
_BOARD_GAP = np.array([0.12, 0.085, 0.08], dtype=np.float32)
_BODY = np.array([0.085, 0.072, 0.075], dtype=np.float32)
_BODY_SHEEN = np.array([0.06, 0.075, 0.11], dtype=np.float32)
_METAL = np.array([0.52, 0.52, 0.5], dtype=np.float32)
_CUT_FACE = np.array([0.93, 0.93, 0.9], dtype=np.float32)


@dataclass
class _Lead:
    points: np.ndarray  # polyline in pixels, from under the package down to the hole centre
    texture: np.ndarray  # plating texture in (across, along) lead coordinates
    highlight: float  # across-lead position of the specular streak, in [-1, 1]


@dataclass
class _TransistorScene:
    """Geometry and pre-rendered layers of one clean transistor instance."""

    size: int
    board: FloatImage
    body_rgb: FloatImage
    body_alpha: np.ndarray
    body_bottom: float  # lowest row of the package outline, pixels
    leads: list[_Lead]
    lead_width: float  # pixels
    hole_radius: float  # pixels
    light: np.ndarray
    sensor_seed: int


def _frame(size: int, centre: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates expressed in the (rotated) component frame, in units of the image."""
    yy, xx = _grid(size)
    dx, dy = (xx - float(centre[0])) / size, (yy - float(centre[1])) / size
    c, s = float(np.cos(angle)), float(np.sin(angle))
    return c * dx + s * dy, -s * dx + c * dy


def _to_pixels(uv: np.ndarray, size: int, centre: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    u, v = uv[:, 0], uv[:, 1]
    return np.stack([c * u - s * v, s * u + c * v], axis=1) * size + centre


def _render_board(
    rng: Rng,
    size: int,
    u: np.ndarray,
    v: np.ndarray,
    pitch: float,
    hole_row: float,
    hole_r: float,
) -> FloatImage:
    """Copper stripboard: strips along hole columns, dark gaps between them, drilled holes."""
    s = size / 512
    col = np.round(u / pitch)
    du = u - col * pitch
    dv = (v - hole_row) - np.round((v - hole_row) / pitch) * pitch
    # each copper strip oxidised and was brushed on its own, so its shade differs slightly
    strip_gain = rng.normal(1.0, 0.045, size=16).astype(np.float32)
    gain = strip_gain[(col.astype(np.int64) + 8) % 16]
    copper = _COPPER * (1 + rng.normal(0, 0.015, size=3)) * rng.uniform(0.92, 1.06)
    tarnish = 1.0 + 0.05 * _smooth_noise(rng, size, 30 * s) + 0.02 * _smooth_noise(rng, size, 2 * s)
    # a few fine scratches in the copper
    scratches = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(4, 14))):
        p = rng.uniform(0, size, size=2)
        a = rng.uniform(0, np.pi)
        q = p + rng.uniform(0.02, 0.12) * size * np.array([np.cos(a), np.sin(a)])
        cv2.line(
            scratches,
            tuple((p * 8).astype(int)),
            tuple((q * 8).astype(int)),
            int(rng.uniform(40, 110)),
            1,
            cv2.LINE_AA,
            3,
        )
    gap_half = rng.uniform(0.013, 0.016) * size
    gap = np.clip(gap_half - (pitch / 2 - np.abs(du)) * size + 0.5, 0, 1)
    gap_shade = 1 + 0.1 * _smooth_noise(rng, size, 4 * s)
    hole_d = np.hypot(du, dv) * size
    hole = np.clip(hole_r - hole_d + 0.5, 0, 1)
    rim = np.clip(1 - np.abs(hole_d - hole_r - 1.0 * s) / (1.5 * s + 0.5), 0, 1) * 0.25
    # the drilled bore shows its far wall a little lighter towards the bottom
    bore = 1 + 0.35 * np.clip(dv * size / hole_r, 0, 1)
    # per-material weights are single-channel; colour is applied once at the end (speed)
    shade = (1 - rim) * (1 - hole)
    w_copper = gain * tarnish * (1 + scratches.astype(np.float32) / (4 * 255.0)) * (1 - gap) * shade
    w_gap = gap_shade * gap * shade
    w_hole = bore * hole
    img = copper.astype(np.float32) * w_copper[..., None]
    img += _BOARD_GAP * w_gap[..., None]
    img += _BOARD_HOLE * w_hole[..., None]
    return img.astype(np.float32)


def _render_body(
    rng: Rng, size: int, u: np.ndarray, v: np.ndarray, half_w: float, half_h: float
) -> tuple[FloatImage, np.ndarray]:
    """Black TO-92 package from above: flat face, soft highlights, rounded lower edge, marking.

    ``u``, ``v`` are frame coordinates of any crop that holds the package; ``size`` is the
    image side, which sets the texture scale."""
    s = size / 512
    r_top, r_bottom = 0.01, 0.03  # the lower edge curves away from the camera
    r = np.where(v > 0, r_bottom, r_top)
    qx, qy = np.abs(u) - half_w + r, np.abs(v) - half_h + r
    sdf = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0) - r
    alpha = np.clip(0.5 - sdf * size, 0, 1).astype(np.float32)
    depth = -sdf  # distance inside the outline, units of the image
    lum = np.ones_like(u)
    # soft vertical bands from the moulded face's slight curvature
    band_u = rng.uniform(-0.6, 0.25) * half_w
    lum += rng.uniform(0.2, 0.45) * np.exp(-(((u - band_u) / 0.07) ** 2))
    lum -= 0.25 * np.exp(-(((u + half_w * 0.75) / 0.05) ** 2))
    # thin lighter lip where the top face meets the side
    lum += 0.45 * np.exp(-(((v + half_h - 0.006) / 0.004) ** 2)) * (depth > 0)
    # the rounded bottom turns towards the lamp: faint bluish sheen, then a dark edge
    bottom = _smoothstep(0.2, 0.95, (v + half_h) / (2 * half_h))
    sheen = bottom * np.exp(-((u / (half_w * 0.7)) ** 2)) * rng.uniform(0.6, 1.0)
    lum -= 0.35 * _smoothstep(0.0, 1.0, 1 - depth / 0.012) * (v > 0)
    lum += 0.06 * _smooth_noise(rng, u.shape, 1.2 * s) + 0.05 * _smooth_noise(rng, u.shape, 18 * s)
    # embossed circular marking with a bar: light on the upper-left lip, dark opposite
    mu = u - rng.normal(0, 0.004)
    mv = v + 0.1 * half_h + rng.normal(0, 0.004)
    mr = rng.uniform(0.055, 0.07)
    md = np.hypot(mu, mv)
    ring = np.exp(-(((md - mr) / 0.004) ** 2))
    facing = (-mu - mv) / (md + 1e-6)
    lum += 0.45 * ring + 0.45 * ring * facing
    bar = np.exp(-((mu / 0.004) ** 2)) * (np.abs(mv) < mr * 0.7)
    lum += 0.4 * bar
    rgb = _BODY * lum[..., None] + _BODY_SHEEN * sheen[..., None]
    return rgb.astype(np.float32), alpha


def _densify(points: np.ndarray, spacing: float) -> np.ndarray:
    """Resample a polyline so that corner rounding stays local to each bend."""
    out = [points[:1]]
    for a, b in itertools.pairwise(points):
        n = max(1, int(np.ceil(np.hypot(*(b - a)) / spacing)))
        t = np.linspace(0, 1, n + 1)[1:, None]
        out.append(a + t * (b - a))
    return np.vstack(out)


def _lead_paths(rng: Rng, pitch: float, half_h: float, hole_row: float) -> list[np.ndarray]:
    """Three leads in frame units: out of the package, bent outwards, down into their holes."""
    top = half_h - 0.02  # leads emerge from under the package
    spread = rng.uniform(0.105, 0.125)
    paths = []
    for k in (-1, 0, 1):
        x0 = k * spread + rng.normal(0, 0.004)
        hole = np.array([k * pitch + rng.normal(0, 0.003), hole_row + rng.normal(0, 0.004)])
        if k == 0:
            y_mid = top + rng.uniform(0.3, 0.6) * (hole[1] - top)
            pts = [[x0, top], [x0 + rng.normal(0, 0.005), y_mid], hole]
        else:
            # straight out of the package, a diagonal jog outwards, then straight into the board
            knee = top + 0.02 + rng.uniform(0.03, 0.09)
            settle = hole[1] - rng.uniform(0.08, 0.17)
            pts = [
                [x0, top],
                [x0 + k * rng.uniform(0, 0.008), knee],
                [hole[0] + rng.normal(0, 0.006), settle],
                hole,
            ]
        dense = _densify(np.array(pts, dtype=np.float64), spacing=0.012)
        paths.append(_chaikin(dense, iterations=2))
    return paths


def _build_transistor(rng: Rng, size: int) -> _TransistorScene:
    s = size / 512
    centre = np.array([0.5 + rng.normal(0, 0.015), 0.35 + rng.normal(0, 0.015)]) * size
    angle = float(np.deg2rad(rng.uniform(-3.0, 3.0)))
    pitch = 0.22 * rng.uniform(0.98, 1.02)
    half_w = 0.205 * rng.uniform(0.96, 1.04)
    half_h = 0.205 * rng.uniform(0.96, 1.04)
    hole_row = 0.54 + rng.normal(0, 0.008)
    hole_r = 0.043 * rng.uniform(0.95, 1.05) * size
    lead_width = 0.041 * rng.uniform(0.92, 1.08) * size
    u, v = _frame(size, centre, angle)
    board = _render_board(rng, size, u, v, pitch, hole_row, hole_r)
    # the package is rendered on its bounding box only: a third of the pixels
    corners = np.array([[-half_w, -half_h], [half_w, -half_h], [-half_w, half_h], [half_w, half_h]])
    px = _to_pixels(corners, size, centre, angle)
    x0, y0 = np.maximum(0, np.floor(px.min(axis=0)).astype(int) - 3)
    x1, y1 = np.minimum(size, np.ceil(px.max(axis=0)).astype(int) + 4)
    box = (slice(y0, y1), slice(x0, x1))
    body_rgb = np.zeros((size, size, 3), np.float32)
    body_alpha = np.zeros((size, size), np.float32)
    body_rgb[box], body_alpha[box] = _render_body(rng, size, u[box], v[box], half_w, half_h)
    rows = np.nonzero(body_alpha.max(axis=1) > 0.5)[0]
    leads = []
    for path in _lead_paths(rng, pitch, half_h, hole_row):
        pts = _to_pixels(path, size, centre, angle)
        length = float(np.hypot(*np.diff(pts, axis=0).T).sum())
        across = max(4, int(np.ceil(lead_width)) + 2)
        # plating streaks run along the wire: long correlation along, short across
        texture = _smooth_noise(rng, (across, int(np.ceil(length)) + 4), 4.0 * s, 1.2 * s)
        leads.append(_Lead(pts, texture, float(rng.uniform(-0.45, 0.15))))
    return _TransistorScene(
        size=size,
        board=board,
        body_rgb=body_rgb,
        body_alpha=body_alpha,
        body_bottom=float(rows.max()) if len(rows) else 0.0,
        leads=leads,
        lead_width=lead_width,
        hole_radius=hole_r,
        light=_lighting(rng, size, gradient=0.06, vignette=0.2),
        sensor_seed=int(rng.integers(2**31)),
    )


def _render_lead(
    scene: _TransistorScene, lead: _Lead, cut_at: float | None
) -> tuple[FloatImage, np.ndarray, tuple[slice, slice]]:
    """Shaded metal lead (rgb, alpha) on its bounding box; ``cut_at`` is an arc length."""
    size, half, points = scene.size, scene.lead_width / 2, lead.points
    pad = int(half + 4)
    x0 = max(0, int(points[:, 0].min()) - pad)
    x1 = min(size, int(points[:, 0].max()) + pad + 1)
    y0 = max(0, int(points[:, 1].min()) - pad)
    y1 = min(size, int(points[:, 1].max()) + pad + 1)
    box = (slice(y0, y1), slice(x0, x1))
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
    dist, side, arc = _polyline_field(points, ys, xs, reach=half + 2)
    alpha = np.clip(half - dist + 0.5, 0, 1)
    q = np.clip(side / half, -1, 1)
    across = (q + 1) / 2 * (lead.texture.shape[0] - 1)
    tex = cv2.remap(
        lead.texture,
        arc.astype(np.float32),
        across.astype(np.float32),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT,
    )
    # flattened tinned wire: a specular streak, rolled-off dark edges, streaky plating
    lum = 0.9 + 0.7 * np.exp(-(((q - lead.highlight) / 0.3) ** 2)) - 0.75 * np.abs(q) ** 4
    lum += 0.25 * tex + 0.4 * _smoothstep(1.2, 2.3, tex)
    # where the wire drops into its hole it falls into shadow
    end = points[-1]
    to_end = np.hypot(xs - end[0], ys - end[1]) / scene.hole_radius
    lum *= 0.3 + 0.7 * _smoothstep(0.3, 1.0, to_end)
    rgb = _METAL * np.clip(lum, 0.1, 2.0)[..., None]
    if cut_at is not None:
        # flat cut across the wire; the freshly sheared face catches the light
        alpha = alpha * np.clip((cut_at - arc) + 0.5, 0, 1)
        face = np.clip(1 - (cut_at - arc) / max(1.5, 0.2 * scene.lead_width), 0, 1)
        rgb = _blend(rgb, _CUT_FACE, face * (np.abs(q) < 0.9) * 0.9)
    return rgb.astype(np.float32), alpha.astype(np.float32), box


def _compose_transistor(
    scene: _TransistorScene, cut: tuple[int, float] | None = None
) -> FloatImage:
    """Board, contact shadows, leads, package; ``cut`` = (lead index, arc length of the cut)."""
    size = scene.size
    s = size / 512
    img = scene.board.copy()
    lead_alpha = np.zeros((size, size), np.float32)
    lead_rgb = np.zeros((size, size, 3), np.float32)
    for i, lead in enumerate(scene.leads):
        cut_at = cut[1] if cut is not None and cut[0] == i else None
        rgb, alpha, box = _render_lead(scene, lead, cut_at)
        lead_rgb[box] = lead_rgb[box] * (1 - alpha[..., None]) + rgb * alpha[..., None]
        lead_alpha[box] = np.maximum(lead_alpha[box], alpha)
    # soft contact shadows of leads and package on the board (lamp slightly upper-left)
    shift = np.float32([[1, 0, 2.0 * s], [0, 1, 3.0 * s]])
    caster = np.maximum(lead_alpha * 0.5, scene.body_alpha * 0.7)
    shadow = cv2.warpAffine(caster, shift, (size, size))
    shadow = cv2.GaussianBlur(shadow, (0, 0), max(0.8, 3.0 * s))
    shadow[shadow < 0.02] = 0  # compact, so a removed lead changes only nearby pixels
    img = img * (1 - shadow[..., None])
    img = img * (1 - lead_alpha[..., None]) + lead_rgb
    img = _blend(img, scene.body_rgb, scene.body_alpha)
    img = img * scene.light[..., None]
    return _sensor(np.random.default_rng(scene.sensor_seed), img, noise=0.007, blur_px=1.0 * s)


def _choose_cut(rng: Rng, scene: _TransistorScene) -> tuple[int, float]:
    """Pick a lead and where to sever it, leaving a visible stub below the package."""
    i = int(rng.integers(3))
    pts = scene.leads[i].points
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(pts, axis=0).T))])
    below = pts[:, 1] > scene.body_bottom + 2
    visible = float(arc[np.argmax(below)]) if below.any() else 0.0
    free = arc[-1] - visible - scene.hole_radius  # the part above the hole
    return i, visible + float(rng.uniform(0.15, 0.7)) * max(free, 1.0)


def _misplace(rng: Rng, scene: _TransistorScene) -> _TransistorScene:
    """The same component, shifted and rotated off its place on the board: the package layers
    are warped, the lead polylines moved with them (their plating texture travels along)."""
    size = scene.size
    ys, xs = np.nonzero(scene.body_alpha > 0.5)
    pivot = (float(xs.mean()), float(ys.mean())) if len(xs) else (size / 2, size / 2)
    angle = float(rng.choice([-1.0, 1.0]) * rng.uniform(5.0, 15.0))
    heading = rng.uniform(0, 2 * np.pi)
    shift = rng.uniform(0.015, 0.045) * size * np.array([np.cos(heading), np.sin(heading)])
    matrix = cv2.getRotationMatrix2D(pivot, angle, 1.0)
    matrix[:, 2] += shift
    warp = lambda layer: cv2.warpAffine(  # noqa: E731
        layer, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=0
    )
    body_alpha = warp(scene.body_alpha)
    rows = np.nonzero(body_alpha.max(axis=1) > 0.5)[0]
    leads = [
        replace(lead, points=lead.points @ matrix[:, :2].T + matrix[:, 2]) for lead in scene.leads
    ]
    return replace(
        scene,
        body_rgb=warp(scene.body_rgb),
        body_alpha=body_alpha,
        body_bottom=float(rows.max()) if len(rows) else 0.0,
        leads=leads,
    )


# =============================================================================== dispatch


def _category_rngs(category: str, seed: int, defect_index: int = 0) -> tuple[Rng, Rng]:
    """Independent streams for the clean instance and its defect, so that adding a defect
    never changes the clean render of the same seed. Each defect type has its own stream
    (the paper's type keeps the one it always had: spawned children do not depend on how
    many are spawned)."""
    tag = zlib.crc32(category.encode())
    root = np.random.SeedSequence(entropy=seed, spawn_key=(tag,))
    children = root.spawn(2 + defect_index)
    return np.random.default_rng(children[0]), np.random.default_rng(children[1 + defect_index])


def _render_pair(
    category: str,
    size: int,
    rng_clean: Rng,
    rng_defect: Rng,
    defective: bool,
    defect: str | None = None,
) -> tuple[FloatImage, FloatImage | None]:
    defect = defect or PRODUCTS[category]
    if category == "tile":
        clean = _render_tile_clean(rng_clean, size)
        if not defective:
            return clean, None
        render = _render_tile_crack if defect == "crack" else _render_tile_glue
        return clean, render(rng_defect, clean)
    if category == "wood":
        clean = _render_wood_clean(rng_clean, size)
        if not defective:
            return clean, None
        render = _render_wood_hole if defect == "hole" else _render_wood_scratch
        return clean, render(rng_defect, clean)
    scene = _build_transistor(rng_clean, size)
    clean = _compose_transistor(scene)
    if not defective:
        return clean, None
    if defect == "misplaced":
        return clean, _compose_transistor(_misplace(rng_defect, scene))
    return clean, _compose_transistor(scene, _choose_cut(rng_defect, scene))


_MASK_MARGIN = {"tile": 2.0, "wood": 2.0, "transistor": 3.0}  # pixels at 512 px


def _check_defect(category: str, defect: str) -> int:
    """Index of ``defect`` among the category's types; an unknown name lists the known ones."""
    types = DEFECT_TYPES[category]
    if defect not in types:
        raise ValueError(
            f"the procedural product {category!r} has no defect type {defect!r}; available "
            f"defect types: {', '.join(types)}"
        )
    return types.index(defect)


def render_sample(
    category: str, size: int, seed: int, defective: bool, defect: str | None = None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Return (clean HxWx3 uint8 RGB, defective HxWx3 uint8 or None, mask HxW uint8 in {0,1}
    or None). Deterministic in (category, size, seed, defect); the clean image is the same
    whether or not ``defective`` is set and whatever the defect type. ``defect`` is one of
    ``DEFECT_TYPES[category]``; None is the paper's type."""
    _check_category(category)
    if size < _MIN_SIZE:
        raise ValueError(f"size must be >= {_MIN_SIZE}, got {size}")
    defect = defect or PRODUCTS[category]
    rng_clean, rng_defect = _category_rngs(category, seed, _check_defect(category, defect))
    # small images are downscaled renders, as real photos would be: rendering directly at
    # 64 px would lose sub-pixel grains and fibres and shift the colour statistics
    work = max(size, _MIN_RENDER_SIZE)
    clean_f, defect_f = _render_pair(category, work, rng_clean, rng_defect, defective, defect)
    if work != size:
        clean_f = cv2.resize(clean_f, (size, size), interpolation=cv2.INTER_AREA)
        if defect_f is not None:
            defect_f = cv2.resize(defect_f, (size, size), interpolation=cv2.INTER_AREA)
    clean = _to_uint8(clean_f)
    if defect_f is None:
        return clean, None, None
    defect = _to_uint8(defect_f)
    margin = max(1, round(_MASK_MARGIN[category] * size / 512))
    mask = _defect_mask(clean, defect, margin)
    if not mask.any():  # a defect that vanished under quantisation would be a mislabelled sample
        raise RuntimeError(f"{category} seed {seed}: rendered defect changed no pixel")
    # guarantees pixel-exact equality with the clean instance outside the mask
    defect = np.where(mask[..., None].astype(bool), defect, clean)
    return clean, defect, mask


# =============================================================================== dataset files


def _image_seed(base_seed: int, split: str, index: int) -> int:
    """Per-image seed from (dataset seed, split, index); splits never share an instance."""
    return _seed_of(base_seed, _SPLIT_IDS[split], index)


def _seed_of(base_seed: int, split_id: int, index: int) -> int:
    ss = np.random.SeedSequence(entropy=base_seed, spawn_key=(split_id, index))
    return int(ss.generate_state(1, dtype=np.uint64)[0])


def _defect_image_seed(base_seed: int, category: str, defect: str, index: int) -> int:
    """Seed of the ``index``-th image of a defect type: the paper's type keeps its
    ``test_defect`` seeds; every other type gets instances of its own."""
    k = _check_defect(category, defect)
    if k == 0:
        return _image_seed(base_seed, "test_defect", index)
    return _seed_of(base_seed, _EXTRA_DEFECT_SPLIT_BASE + k, index)


def _write_png(path: Path, array: np.ndarray) -> None:
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    # low compression: generation speed matters more than a few hundred kB of cache
    if not cv2.imwrite(str(path), array, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise OSError(f"could not write {path}")


def _metadata(spec: ProceduralSpec) -> dict:
    return {
        "generator_version": GENERATOR_VERSION,
        "fingerprint": spec.fingerprint(),
        "spec": asdict(spec),
        "defect": spec.defect,
        "defects": list(spec.defects),
    }


def _jobs(spec: ProceduralSpec, folder: Path) -> list[Callable[[], None]]:
    """One closure per image so the images can be rendered in a thread pool."""
    cat, size = spec.category, spec.image_size

    def good(split: str, index: int, out: Path) -> Callable[[], None]:
        def job() -> None:
            clean, _, _ = render_sample(cat, size, _image_seed(spec.seed, split, index), False)
            _write_png(out / f"{index:03d}.png", clean)

        return job

    def bad(defect: str, index: int) -> Callable[[], None]:
        def job() -> None:
            seed = _defect_image_seed(spec.seed, cat, defect, index)
            _, image, mask = render_sample(cat, size, seed, True, defect)
            assert image is not None and mask is not None
            _write_png(folder / "test" / defect / f"{index:03d}.png", image)
            _write_png(folder / "ground_truth" / defect / f"{index:03d}_mask.png", mask * 255)

        return job

    jobs = [good("train_good", i, folder / "train" / "good") for i in range(spec.n_train_good)]
    jobs += [good("test_good", i, folder / "test" / "good") for i in range(spec.n_test_good)]
    jobs += [bad(d, i) for d in spec.defects for i in range(spec.n_defect)]
    return jobs


def write_dataset(spec: ProceduralSpec, root: Path) -> Path:
    """Write ``<root>/<category>/{train/good, test/good, test/<defect>, ground_truth/<defect>}``
    in the MVTec AD layout, plus ``<root>/<category>/procedural.json``; return ``root``.

    Files are written into a hidden temporary sibling folder that is renamed into place at the
    end, so an interrupted run never leaves a half-written dataset. Raises ``FileExistsError``
    if ``<root>/<category>`` already exists (or appears meanwhile from a concurrent writer).
    """
    root = Path(root)
    target = root / spec.category
    if target.exists():
        raise FileExistsError(f"procedural dataset folder {target} already exists")
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{spec.category}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        subfolders = ["train/good", "test/good"]
        subfolders += [f"{kind}/{d}" for d in spec.defects for kind in ("test", "ground_truth")]
        for sub in subfolders:
            (tmp / sub).mkdir(parents=True)
        workers = max(1, min(8, os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(job) for job in _jobs(spec, tmp)]
            try:
                for future in futures:
                    future.result()  # re-raise the first failure
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        (tmp / _META_NAME).write_text(json.dumps(_metadata(spec), indent=2, sort_keys=True))
        try:
            os.rename(tmp, target)
        except OSError as err:
            if target.exists():
                raise FileExistsError(f"procedural dataset folder {target} already exists") from err
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _matches(folder: Path, spec: ProceduralSpec) -> bool:
    try:
        meta = json.loads((folder / _META_NAME).read_text())
    except (OSError, ValueError):
        return False
    recorded = meta.get("spec")
    if not isinstance(recorded, dict):
        return False
    # datasets cached before ``all_defects`` existed hold the paper's type only
    recorded = {"all_defects": False, **recorded}
    return meta.get("fingerprint") == spec.fingerprint() and recorded == asdict(spec)


def ensure_dataset(spec: ProceduralSpec, cache_dir: Path) -> Path:
    """Return a data root holding ``spec.category`` in MVTec layout, generating it once under
    ``cache_dir/procedural/<category>-<fingerprint>/``. Concurrent callers are safe: the final
    rename lets one writer win and the others use its result."""
    root = Path(cache_dir) / "procedural" / f"{spec.category}-{spec.fingerprint()}"
    target = root / spec.category
    if _matches(target, spec):
        return root
    if target.exists():
        # foreign or damaged content under our fingerprint: move it aside atomically first, so
        # that a concurrent reader never sees a half-deleted folder
        stale = root / f".{spec.category}.stale-{uuid.uuid4().hex[:8]}"
        with contextlib.suppress(OSError):
            os.rename(target, stale)
        shutil.rmtree(stale, ignore_errors=True)
    n_defects = spec.n_defect * len(spec.defects)
    n_images = spec.n_train_good + spec.n_test_good + n_defects
    start = time.perf_counter()
    try:
        write_dataset(spec, root)
    except FileExistsError:
        if _matches(target, spec):  # another process won the race
            return root
        raise
    logger.info(
        "generated procedural %s/%s dataset: %d images (+%d masks) at %d px in %.1f s -> %s",
        spec.category,
        "+".join(spec.defects),
        n_images,
        n_defects,
        spec.image_size,
        time.perf_counter() - start,
        target,
    )
    return root
