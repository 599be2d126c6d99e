"""The studies' configs: every preset composes for both entry points and resolves."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from defectsynth import config as _config  # noqa: F401  (registers the ${names:…} resolver)
from tests.helpers import REPO

SIZES = {"smoke": (32, 32), "demo": (64, 64), "paper": (224, 256)}


@pytest.mark.parametrize("scale", sorted(SIZES))
@pytest.mark.parametrize("classifier", ["resnet18", "densenet121"])
def test_presets_compose_and_resolve(scale, classifier):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("inspection", overrides=[f"scale={scale}", f"classifier={classifier}"])
        seg = compose("segmentation", overrides=[f"scale={scale}"])
    for c in (cfg, seg):
        with open_dict(c):
            c.paths.output_dir = "/tmp/defectsynth-test"
        OmegaConf.resolve(c)
        assert c.protocol == "clean" and c.generator.scale == scale and c.preset == scale
        assert c.cut_paste.enabled and list(c.split.normal) == [0.6, 0.2, 0.2]
    assert list(cfg.backbones) == [classifier] and cfg.classifier.pretrained is False
    assert (cfg.train.image_size, seg.segmenter.image_size) == SIZES[scale]
    assert cfg.run_name == f"table4-clean-{scale}"
    if scale == "paper":  # the authors' classifier setting
        assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.lr) == (100, 50, 2e-4)
    # the real-defect rows: the full grid at paper scale, a budget at demo scale
    for c in (cfg, seg):
        assert c.real.enabled and 0 in c.real.ratios
        assert c.real.seeds is None or set(c.real.seeds) <= set(c.seeds)
    real = cfg.real
    expected = {
        "smoke": ([0, 1], [], "all", None),
        "demo": ([0, 1, 4], [], "first", None),
        "paper": ([0, 1, 4, 16], [1, 2, 4], "all", None),
    }[scale]
    seeds = None if real.seeds is None else list(real.seeds)
    assert (list(real.ratios), list(real.counts), real.backbones, seeds) == expected
    # make table4's 30-minute budget: two seeds at demo scale, the same for every row
    assert list(cfg.seeds) == {"smoke": [0], "demo": [0, 1], "paper": [0, 1, 2, 3, 4]}[scale]
