"""Table 5 (`make table5`): the controllable model (model=defect_gan_control) against the paper
model (defect_gan, paper preset) and the authors' settings (experiment=author_code), same batches;
locality, diversity, placement and fidelity per cell, plus the codes × placements figure.

python src/table5.py                                         # demo scale, procedural tile, seed 0
python src/table5.py 'products=[tile,wood]' 'seeds=[0,1]'
python src/table5.py data_root=/work/shared/data/mvtec_mini  # + real MVTec AD tile/crack
"""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))

import hydra
from omegaconf import DictConfig

from defectsynth.cli import run_task
from defectsynth.table5 import table5


@hydra.main(version_base="1.3", config_path="../conf", config_name="table5")
def main(cfg: DictConfig) -> float | None:
    return run_task(table5, cfg)


if __name__ == "__main__":
    main()
