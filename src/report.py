"""Write a self-contained report.html (config, loss curves, metrics, sample gallery) for a run.

python src/report.py run=outputs/runs/<run>
"""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))

import hydra
from omegaconf import DictConfig

from defectsynth.cli import run_task
from defectsynth.report import report


@hydra.main(version_base="1.3", config_path="../conf", config_name="report")
def main(cfg: DictConfig) -> float | None:
    return run_task(report, cfg)


if __name__ == "__main__":
    main()
