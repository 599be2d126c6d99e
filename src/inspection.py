"""Defect inspection with synthetic defects (the paper's Table 4): binary classifiers trained on
real defect-free and synthetic defective images, tested on real defects.

python src/inspection.py scale=demo          # train (or reuse) a demo generator, then the study
python src/inspection.py ckpt=<run>/checkpoints/last.ckpt 'backbones=[resnet18,densenet121]'
python src/inspection.py samples=<folder from generate.py> protocol=paper 'seeds=[0,1,2]'
"""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))

import hydra
from omegaconf import DictConfig

from defectsynth.cli import run_task
from defectsynth.inspection.study import inspection


@hydra.main(version_base="1.3", config_path="../conf", config_name="inspection")
def main(cfg: DictConfig) -> float | None:
    return run_task(inspection, cfg)


if __name__ == "__main__":
    main()
