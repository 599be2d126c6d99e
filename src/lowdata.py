"""Low-data study (`make table6`): the paper preset against the data-efficient preset
(experiment=low_data), same batches, products and seeds; train → generate → evaluate per cell.

python src/lowdata.py                                   # demo scale, tile, 2 seeds
python src/lowdata.py 'products=[tile,wood,transistor]' 'seeds=[0,1,2]'
python src/lowdata.py data_root=/work/shared/data/mvtec_mini   # real MVTec AD tile/crack
"""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))

import hydra
from omegaconf import DictConfig

from defectsynth.cli import run_task
from defectsynth.lowdata import lowdata


@hydra.main(version_base="1.3", config_path="../conf", config_name="lowdata")
def main(cfg: DictConfig) -> float | None:
    return run_task(lowdata, cfg)


if __name__ == "__main__":
    main()
