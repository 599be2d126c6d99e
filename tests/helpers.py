"""Test helpers: tiny MVTec-layout folders written to disk."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def run_script(
    script: str, *args: str, cache_dir: Path, check: bool = True
) -> subprocess.CompletedProcess:
    """Run ``src/<script>`` as a user would, with the test session's data cache."""
    env = {
        **os.environ,
        "DEFECTSYNTH_CACHE": str(cache_dir),
        "NO_ALBUMENTATIONS_UPDATE": "1",
        "PYTHONPATH": str(REPO),  # lets a run load test callbacks (tests.helpers)
    }
    proc = subprocess.run(
        [sys.executable, str(REPO / "src" / script), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def make_mvtec(
    root: Path,
    category: str = "widget",
    defect: str = "scratch",
    n_train: int = 7,
    n_test_good: int = 3,
    n_defect: int = 10,
    size: int = 40,
    seed: int = 0,
) -> Path:
    """A synthetic MVTec-layout folder; defect images are bright inside a rectangle mask."""
    rng = np.random.default_rng(seed)
    base = root / category

    def noise() -> np.ndarray:
        return rng.integers(0, 120, (size, size, 3), dtype=np.uint8)

    for i in range(n_train):
        write_png(base / "train" / "good" / f"{i:03d}.png", noise())
    for i in range(n_test_good):
        write_png(base / "test" / "good" / f"{i:03d}.png", noise())
    # created in reverse order so that sorting by name, not by creation, is what is tested
    for i in reversed(range(n_defect)):
        image, mask = noise(), np.zeros((size, size), np.uint8)
        top, left = rng.integers(0, size // 2, 2)
        mask[top : top + size // 4, left : left + size // 4] = 255
        image[mask > 0] = 250
        write_png(base / "test" / defect / f"{i:03d}.png", image)
        write_png(base / "ground_truth" / defect / f"{i:03d}_mask.png", mask)
    return root


class WeightsDigest(L.Callback):
    """A Lightning callback for tests: each rank writes a digest of its weights at the end."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        digest = hashlib.sha256()
        for key, value in sorted(pl_module.state_dict().items()):
            digest.update(key.encode())
            digest.update(value.detach().cpu().numpy().tobytes())
        self.dirpath.mkdir(parents=True, exist_ok=True)
        (self.dirpath / f"rank{trainer.global_rank}.txt").write_text(digest.hexdigest())


class KillAt(L.Callback):
    """A Lightning callback for tests: SIGKILL this process after training batch ``batch``
    (counted over the whole run), before that batch's checkpoint is written."""

    def __init__(self, batch: int) -> None:
        self.batch = batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.total.ready == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)
