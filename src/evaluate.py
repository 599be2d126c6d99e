"""Measure synthetic defects (FID, KID, LPIPS, Dist. to train, IC-LPIPS, mask coherence), each
with a bootstrap interval over images.

python src/evaluate.py ckpt=outputs/runs/<run>/checkpoints/last.ckpt
python src/evaluate.py samples=<folder written by generate.py>
python src/evaluate.py ckpt=<ckpt> metrics.real_set=all metrics.bootstrap.n=0
"""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))

import hydra
from omegaconf import DictConfig

from defectsynth.cli import run_task
from defectsynth.evaluation import evaluate


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    return run_task(evaluate, cfg)


if __name__ == "__main__":
    main()
