"""Decode and downscale every image once; keep the result in memory and on disk.

The reference implementations decode full-resolution PNGs on every training step (≈18 ms per
1024² image here); a cached, pre-resized array costs microseconds. The disk cache is keyed by the
file's resolved path, modification time, byte size and the target size, so an edited file is
decoded again and nothing stale is served.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from defectsynth.errors import ConfigError, DataError
from defectsynth.utils.io import atomic_path

log = logging.getLogger(__name__)
CACHE_VERSION = 1

#: what ``ImageCache.preload`` takes: ("image" or "mask", file, shorter side or None)
PreloadItem = tuple[str, Path | str, int | None]
#: files being decoded or decoded but not yet taken into the cache, per worker thread: enough
#: to keep every thread busy while the results are taken in order, and few enough that a run
#: over thousands of files never holds more than a handful of full-resolution images
IN_FLIGHT_PER_WORKER = 2
#: fewer files decode in about a second: no progress bar, no summary line
PROGRESS_MIN_ITEMS = 64


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity under taskset/cgroups, else all)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no sched_getaffinity on macOS/Windows
        return max(1, os.cpu_count() or 1)


def resolve_decode_workers(value: object) -> int:
    """``data.decode_workers``: ``auto`` (one thread per available CPU) or a number >= 1."""
    if value == "auto":
        return available_cpus()
    # bool is an int subclass: `true` is a typo for a number, not one worker
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ConfigError(
        f"data.decode_workers={value!r}; expected auto (one decoding thread per available CPU, "
        f"{available_cpus()} here) or a whole number of threads >= 1."
    )


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError as err:
        raise DataError(f"image file {path} does not exist.") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(
            f"cannot read image file {path}: {err}. Expected a readable PNG/JPEG/BMP/TIFF image."
        ) from err
    return image


def _to_uint8(image: Image.Image) -> np.ndarray:
    """8-bit array of any PIL mode; 16/32-bit integer images are rescaled, not clipped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image).astype(np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        return np.clip(np.rint(array * (255.0 / peak)), 0, 255).astype(np.uint8)
    if image.mode == "F":
        array = np.asarray(image)
        return np.clip(np.rint(array * (255.0 if array.max() <= 1.0 else 1.0)), 0, 255).astype(
            np.uint8
        )
    return np.asarray(image.convert("RGB" if image.mode not in ("L", "1") else "L"))


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            return image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"cannot read image file {path}: {err}.") from err


def _resized_shape(width: int, height: int, shorter_side: int) -> tuple[int, int]:
    scale = shorter_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def decode_image(path: Path, shorter_side: int | None) -> np.ndarray:
    """HxWx3 uint8 RGB; grayscale becomes 3-channel; shorter side resized (bicubic, antialiased)."""
    image = _open(path)
    # an 8-bit RGB file (most photos) is resized as decoded: the round trip through numpy gives
    # the same pixels but costs four full-resolution copies (~60 MB for a 2048² image), which
    # every parallel decoding thread would hold at once
    if image.mode != "RGB":
        image = Image.fromarray(_to_uint8(image)).convert("RGB")
    if shorter_side is not None:
        image = image.resize(_resized_shape(*image.size, shorter_side), Image.Resampling.BICUBIC)
    return np.ascontiguousarray(np.asarray(image))


# a mask's foreground by its value range: 0/1 masks as they are, 8-bit from 128, 16-bit from
# 32768. Half of the file's own maximum (the old rule) made a noise-only mask (max 3) a
# full-image defect; the range does not depend on what the file happens to contain.
MASK_THRESHOLDS = {8: 128, 16: 32768}
# bumped when the rule above changes, so no mask binarised by an older rule is served
MASK_RULE = 2


def mask_values(image: Image.Image) -> tuple[np.ndarray, int]:
    """HxW values of a mask as stored (the largest channel of a colour mask) and the bit depth
    (8 or 16) of their range. A float image in [0, 1] is scaled to 0..255."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image).astype(np.int64)
        # a 32-bit integer image (older Pillow reads 16-bit PNG so) is 16-bit when it uses it
        depth = 16 if image.mode.startswith("I;16") or values.max(initial=0) > 255 else 8
        return values, depth
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        return values * 255.0 if values.max(initial=0) <= 1.0 else values, 8
    if image.mode in ("1", "L"):
        return np.asarray(image.convert("L")), 8
    return np.asarray(image.convert("RGB")).max(axis=2), 8


def mask_threshold(values: np.ndarray, depth: int, threshold: float | None = None) -> float:
    """The value from which a pixel is foreground: ``threshold`` when given (the
    ``data.mask_threshold`` option), 1 for a 0/1 mask, else by the bit depth."""
    if threshold is not None:
        return float(threshold)
    if values.max(initial=0) <= 1:
        return 1.0
    return float(MASK_THRESHOLDS[depth])


def check_mask_threshold(threshold: float | None) -> float | None:
    if threshold is not None and not float(threshold) > 0:
        raise ConfigError(
            f"data.mask_threshold={threshold!r}; expected a value > 0 (a pixel whose stored "
            "value is at least this is foreground), or null for the value-range rule (0/1 "
            "masks as they are, 8-bit from 128, 16-bit from 32768)."
        )
    return None if threshold is None else float(threshold)


def read_mask(path: Path, threshold: float | None = None) -> np.ndarray:
    """HxW uint8 in {0, 1} at the file's size: every mask a user gives is binarised here."""
    values, depth = mask_values(_open(path))
    return (values >= mask_threshold(values, depth, threshold)).astype(np.uint8)


def describe_mask(path: Path, threshold: float | None = None) -> str:
    """The values of a mask file and the threshold applied, for messages about it."""
    values, depth = mask_values(_open(path))
    used = mask_threshold(values, depth, threshold)
    rule = "data.mask_threshold" if threshold is not None else f"the {depth}-bit rule"
    peak = values.max(initial=0)
    return f"largest value {peak:g}, foreground from {used:g} ({rule})"


def decode_mask(path: Path, shorter_side: int | None, threshold: float | None = None) -> np.ndarray:
    """HxW uint8 in {0, 1}: binarised by :func:`read_mask` (0/1 as is, 8-bit from 128, 16-bit
    from 32768, or from ``threshold``), then resized with nearest neighbour."""
    image = Image.fromarray(read_mask(path, threshold))
    if shorter_side is not None:
        image = image.resize(_resized_shape(*image.size, shorter_side), Image.Resampling.NEAREST)
    return np.array(image)  # a writable copy, as the training transforms expect


class DecodeOnAccess(Sequence[np.ndarray]):
    """Decode and resize on every access, as the reference implementations do. Only for
    benchmarks (``data.cache_images=false``): it costs milliseconds per image and step."""

    def __init__(
        self,
        paths: Sequence[Path],
        shorter_side: int | None,
        kind: str,
        mask_threshold: float | None = None,
    ) -> None:
        self.paths, self.shorter_side = list(paths), shorter_side
        self.kind, self.mask_threshold = kind, mask_threshold

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:  # type: ignore[override]
        if self.kind == "image":
            return decode_image(self.paths[index], self.shorter_side)
        return decode_mask(self.paths[index], self.shorter_side, self.mask_threshold)


class ImageCache:
    """Decoded, resized arrays by (file, size): memory first, then disk, then decode. Masks
    are binarised with ``mask_threshold`` (None: by their value range, see ``read_mask``)."""

    def __init__(
        self, cache_dir: Path | str | None = None, mask_threshold: float | None = None
    ) -> None:
        if cache_dir is not None and "${" in str(cache_dir):
            raise ConfigError(f"paths.cache_dir={str(cache_dir)!r} is an unresolved interpolation")
        self.cache_dir = Path(cache_dir) / "images" if cache_dir is not None else None
        self.mask_threshold = check_mask_threshold(mask_threshold)
        self._memory: dict[tuple[str, str, int | None], np.ndarray] = {}

    def image(self, path: Path, shorter_side: int | None) -> np.ndarray:
        return self._get("image", Path(path), shorter_side)

    def mask(self, path: Path, shorter_side: int | None) -> np.ndarray:
        return self._get("mask", Path(path), shorter_side)

    def preload(
        self,
        items: Iterable[PreloadItem],
        workers: int = 1,
        description: str = "decoding images",
        errors: str = "raise",
    ) -> dict[int, DataError]:
        """Decode (or read from the disk cache) every item not yet in memory, ``workers`` at a
        time in threads, and keep the results in memory: later ``image``/``mask`` calls return
        them without decoding. Arrays, disk cache files and errors are those of calling
        ``image``/``mask`` on each item in turn.

        Pillow's decoders and resampling release the GIL, so threads decode in parallel; at
        most ``IN_FLIGHT_PER_WORKER * workers`` files are under way at once, and only the
        resized arrays are kept. A bar shows the progress on a terminal (from
        ``PROGRESS_MIN_ITEMS`` files to decode).

        ``errors="raise"`` raises the DataError of the first unusable item (in the order of
        ``items``, as a loop would), after the others under way have stopped;
        ``errors="collect"`` decodes everything else and returns the errors by the item's
        index (its first occurrence), caching nothing for those items.
        """
        if errors not in ("raise", "collect"):
            raise ValueError(f"errors={errors!r}; expected 'raise' or 'collect'")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers={workers!r}; expected an int >= 1")
        todo: list[tuple[int, tuple[str, str, int | None]]] = []
        queued: set[tuple[str, str, int | None]] = set()
        for index, (kind, path, shorter_side) in enumerate(items):
            if kind not in ("image", "mask"):
                raise ValueError(f"item {index}: kind {kind!r}; expected 'image' or 'mask'")
            key = (kind, str(Path(path)), shorter_side)  # as `_get` keys it
            if key not in self._memory and key not in queued:  # each file once
                queued.add(key)
                todo.append((index, key))
        failures: dict[int, DataError] = {}
        if not todo:
            return failures
        start = time.perf_counter()
        limit = IN_FLIGHT_PER_WORKER * workers
        waiting = iter(todo)
        # results are taken in submission order: the first error is the one a loop would meet,
        # and the memory cache fills in the order of ``items``
        pending: deque[tuple[int, tuple[str, str, int | None], Future[np.ndarray]]] = deque()
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
        try:
            with _progress(len(todo), description) as advance:
                while True:
                    # top up to the limit: never thousands of futures at once
                    for index, key in itertools.islice(waiting, limit - len(pending)):
                        future = pool.submit(self._from_disk, key[0], Path(key[1]), key[2])
                        pending.append((index, key, future))
                    if not pending:
                        break
                    index, key, future = pending.popleft()
                    try:
                        self._memory[key] = future.result()
                    except DataError as err:
                        if errors == "raise":
                            raise
                        failures[index] = err
                    advance()
        finally:
            # on an error (or Ctrl-C) the queued files are dropped, the running ones finish
            pool.shutdown(wait=True, cancel_futures=True)
        if len(todo) >= PROGRESS_MIN_ITEMS:
            seconds = time.perf_counter() - start
            log.info(
                "%s: %d file(s) in %.1f s (%.1f/s, %d thread(s))%s",
                description,
                len(todo),
                seconds,
                len(todo) / max(seconds, 1e-9),
                workers,
                f", {len(failures)} unusable" if failures else "",
            )
        return failures

    def _key(self, kind: str, path: Path, shorter_side: int | None) -> str:
        try:
            stat = path.stat()
        except OSError as err:
            raise DataError(f"image file {path} cannot be accessed: {err}.") from err
        ident = (
            f"{CACHE_VERSION}|{kind}|{path.resolve()}|{stat.st_mtime_ns}|{stat.st_size}|"
            f"{shorter_side}"
        )
        if kind == "mask":  # image keys stay as they were: their cached arrays are still valid
            ident += f"|rule{MASK_RULE}|{self.mask_threshold}"
        return hashlib.sha1(ident.encode()).hexdigest()

    def _get(self, kind: str, path: Path, shorter_side: int | None) -> np.ndarray:
        memory_key = (kind, str(path), shorter_side)
        if memory_key in self._memory:
            return self._memory[memory_key]
        array = self._from_disk(kind, path, shorter_side)
        self._memory[memory_key] = array
        return array

    def _from_disk(self, kind: str, path: Path, shorter_side: int | None) -> np.ndarray:
        def decode(path: Path, shorter_side: int | None) -> np.ndarray:
            if kind == "image":
                return decode_image(path, shorter_side)
            return decode_mask(path, shorter_side, self.mask_threshold)

        if self.cache_dir is None:
            return decode(path, shorter_side)
        file = self.cache_dir / f"{self._key(kind, path, shorter_side)}.npy"
        if file.is_file():
            try:
                return np.load(file, allow_pickle=False)
            except (OSError, ValueError):
                log.warning("ignoring unreadable cache file %s", file)
        array = decode(path, shorter_side)
        try:
            with atomic_path(file) as tmp, open(tmp, "wb") as fh:
                np.save(fh, array, allow_pickle=False)
        except OSError as err:  # a read-only or full cache disk must not stop training
            log.warning("could not write cache file %s: %s", file, err)
        return array


@contextlib.contextmanager
def _progress(total: int, description: str) -> Iterator[Callable[[], None]]:
    """A function advancing a progress bar on stderr by one, shown for ``total`` >=
    ``PROGRESS_MIN_ITEMS`` on a terminal only: in a log file or a captured test run a bar
    redrawn many times is noise (``preload`` logs one summary line instead)."""
    console = Console(stderr=True)
    if total < PROGRESS_MIN_ITEMS or not console.is_terminal:
        yield lambda: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda: progress.advance(task)
