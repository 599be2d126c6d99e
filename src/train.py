"""Train the defect synthesis GAN.

python src/train.py product=tile ablation=no_LB
python src/train.py -m loss.lambda_c=50,150 loss.lambda_b=0.01,0.05
"""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))

import hydra
from omegaconf import DictConfig

from defectsynth.cli import run_task
from defectsynth.training import train


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run_task(train, cfg)


if __name__ == "__main__":
    main()
