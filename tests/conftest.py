"""Shared fixtures: a small MVTec-layout folder with known counts, the real samples, and a
session-wide cache so the procedural smoke dataset is generated once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import make_mvtec, run_script

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

REPO = Path(__file__).resolve().parents[1]
MVTEC_MINI = Path(
    os.environ.get("DEFECTSYNTH_MVTEC_MINI", REPO.parent / "shared" / "data" / "mvtec_mini")
)


@pytest.fixture(scope="session")
def mvtec_mini() -> Path:
    if not (MVTEC_MINI / "tile" / "train" / "good").is_dir():
        pytest.skip(
            f"real MVTec AD samples not found at {MVTEC_MINI} "
            "(set DEFECTSYNTH_MVTEC_MINI to a folder in MVTec AD layout)"
        )
    return MVTEC_MINI


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def tiny_mvtec(tmp_path: Path) -> Path:
    return make_mvtec(tmp_path / "mvtec")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """One seconds-long training run (product=tile ablation=no_LB experiment=smoke), shared."""
    run_dir = tmp_path_factory.mktemp("smoke")
    run_script(
        "train.py",
        "product=tile",
        "ablation=no_LB",
        "experiment=smoke",
        f"hydra.run.dir={run_dir}",
        cache_dir=cache_dir,
    )
    return run_dir
