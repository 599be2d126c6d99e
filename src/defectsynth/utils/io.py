"""Atomic file writing: a crash mid-write never leaves a half-written output behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from defectsynth.errors import ConfigError

MIN_FREE_BYTES = 200 * 2**20


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; outputs get the permissions a plain open() would give them
FILE_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, FILE_MODE)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def save_png(array: np.ndarray, path: Path | str) -> None:
    """Write an HxW or HxWx3 uint8 array as a PNG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def write_text(text: str, path: Path | str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def check_output_dir(path: Path) -> None:
    """Fail before training, not at the first checkpoint, when outputs cannot be written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with atomic_path(path / ".write_probe") as tmp:
            tmp.write_bytes(b"ok")
        (path / ".write_probe").unlink()
    except OSError as err:
        raise ConfigError(
            f"cannot write to the output folder {path} ({err}); choose another with "
            "hydra.run.dir=<folder> (or paths.log_dir=<folder>)."
        ) from err
    free = shutil.disk_usage(path).free
    if free < MIN_FREE_BYTES:
        raise ConfigError(
            f"only {free / 2**20:.0f} MiB free on the disk of {path}; checkpoints need more "
            f"(at least {MIN_FREE_BYTES / 2**20:.0f} MiB). Free space or set hydra.run.dir."
        )
