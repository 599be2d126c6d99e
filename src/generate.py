"""Turn defect-free images into defective images with masks, in the MVTec AD layout.

python src/generate.py ckpt=outputs/runs/<run>/checkpoints/last.ckpt [out=<dir>]
python src/generate.py ckpt=<ckpt> input=<folder of images> n_per_image=4
"""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))

import hydra
from omegaconf import DictConfig

from defectsynth.cli import run_task
from defectsynth.generation import generate


@hydra.main(version_base="1.3", config_path="../conf", config_name="generate")
def main(cfg: DictConfig) -> float | None:
    return run_task(generate, cfg)


if __name__ == "__main__":
    main()
