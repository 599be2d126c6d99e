"""Do the synthetic masks teach a segmenter? A U-Net trained on synthetic (image, mask) pairs,
tested on real defects with their ground-truth masks; cut-paste and the 4-channel baselines
side by side.

python src/segmentation.py scale=demo        # reuses the generator inspection.py trained
python src/segmentation.py ckpt=<proposed.ckpt> 'baselines=[<cyclegan4.ckpt>,<dcgan4.ckpt>]'
"""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))

import hydra
from omegaconf import DictConfig

from defectsynth.cli import run_task
from defectsynth.inspection.study import segmentation


@hydra.main(version_base="1.3", config_path="../conf", config_name="segmentation")
def main(cfg: DictConfig) -> float | None:
    return run_task(segmentation, cfg)


if __name__ == "__main__":
    main()
