"""Reproduce the paper's tables: train → generate → evaluate per cell, then Markdown + CSV.

python src/tables.py table=table2 scale=demo
python src/tables.py table=table3 scale=paper train_overrides=[trainer=gpu]
"""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))

import hydra
from omegaconf import DictConfig

from defectsynth.cli import run_task
from defectsynth.tables import tables


@hydra.main(version_base="1.3", config_path="../conf", config_name="tables")
def main(cfg: DictConfig) -> float | None:
    return run_task(tables, cfg)


if __name__ == "__main__":
    main()
