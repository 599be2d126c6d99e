"""Checkpoint loading that never executes code from the file, with clear errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from defectsynth.errors import DefectSynthError
from defectsynth.utils.io import atomic_path


class CheckpointError(DefectSynthError):
    """A checkpoint file is missing, truncated, corrupt or not a defectsynth checkpoint."""


def load_checkpoint(path: Path | str, map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load(weights_only=True)``: tensors and plain containers only, no pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist.")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for truncated/corrupt/unsafe files
        raise CheckpointError(
            f"checkpoint {path} cannot be loaded ({type(err).__name__}: {str(err)[:300]}). It is "
            "truncated, corrupt, or holds objects other than tensors and plain containers."
        ) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no 'state_dict').")
    return checkpoint


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with atomic local saves and loading restricted to
    ``weights_only``, failures reported by file name.

    Lightning's own save goes through a temporary file in the system temp folder and then
    ``shutil.move``, which degrades to a non-atomic copy when that folder is on another file
    system (a local /tmp and a network output folder); here the temporary file sits next to
    the checkpoint and ``os.replace`` swaps it in, so a crash while saving leaves the previous
    ``last.ckpt`` intact.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):  # remote storage: Lightning's way
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            torch.save(checkpoint, fh)
            fh.flush()
            os.fsync(fh.fileno())

    def load_checkpoint(
        self, path: Any, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return load_checkpoint(path, map_location=map_location or "cpu")
