"""Checkpoint loading that never executes code from the file, with clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from defectsynth.errors import DefectSynthError


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
    """Lightning's checkpoint IO (its save is already atomic: temp file, then move) with loading
    restricted to ``weights_only`` and failures reported by file name."""

    def load_checkpoint(
        self, path: Any, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return load_checkpoint(path, map_location=map_location or "cpu")
