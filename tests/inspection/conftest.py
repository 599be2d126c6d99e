"""Fixtures of the inspection studies: a small MVTec-layout folder with known counts and an
untrained (randomly initialised) tiny generator checkpoint for it — enough to exercise every
path of the studies in seconds, with no training run and no procedural data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from tests.helpers import REPO, make_mvtec

CATEGORY, DEFECT = "widget", "scratch"
# 7 train/good + 3 test/good = a pool of 10; 10 defects → the GAN's split 8 train / 2 test
COUNTS = {"n_train": 7, "n_test_good": 3, "n_defect": 10}


@pytest.fixture(scope="session")
def study_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_mvtec(tmp_path_factory.mktemp("study") / "mvtec", CATEGORY, DEFECT, **COUNTS)


def write_checkpoint(
    path: Path, root: Path, cache_dir: Path, image_size: int = 32, model: str = "defect_gan"
) -> Path:
    """A checkpoint in the layout src/train.py writes, of a freshly initialised smoke-sized
    ``model`` whose data are ``root``."""
    overrides = [
        f"model={model}",
        "experiment=smoke",
        f"data.category={CATEGORY}",
        f"data.defect={DEFECT}",
        f"data.image_size={image_size}",
    ]
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    torch.manual_seed(0)
    network = instantiate(cfg.model)
    data = {
        **instantiate(cfg.data, root=str(root), cache_dir=str(cache_dir)).hparams,
        "root": str(root),
    }
    checkpoint = {
        "state_dict": network.state_dict(),
        "hyper_parameters": dict(network.hparams),
        "datamodule_hyper_parameters": dict(data),
        "defectsynth": {"model_class": f"{type(network).__module__}.{type(network).__qualname__}"},
        "epoch": 0,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory, study_root: Path, cache_dir: Path) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "last.ckpt", study_root, cache_dir)
