"""The training job behind ``src/train.py``: config → data, model, trainer → fit."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.plugins.io import AsyncCheckpointIO
from omegaconf import DictConfig, OmegaConf, open_dict

from defectsynth import config as _config  # noqa: F401  (registers resolvers)
from defectsynth.checkpoint import SafeCheckpointIO
from defectsynth.errors import ConfigError
from defectsynth.utils.io import check_output_dir, write_text
from defectsynth.utils.wandb import default_wandb_mode

log = logging.getLogger(__name__)


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry with a ``_target_`` of a config group (callbacks, loggers)."""
    if not group:
        return []
    return [
        instantiate(entry)
        for entry in group.values()
        if isinstance(entry, DictConfig) and "_target_" in entry
    ]


def instantiate_loggers(cfg: DictConfig) -> list[Any]:
    """The configured loggers; W&B goes offline first when no API key is configured."""
    group = cfg.get("logger")
    if group and any("Wandb" in str(v.get("_target_", "")) for v in group.values()):
        default_wandb_mode()
    return instantiate_group(group)


def sweep_overrides() -> list[str]:
    """The command-line overrides of this job (what distinguishes it within a multirun)."""
    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def checkpoint_io(cfg: DictConfig) -> CheckpointIO:
    """Atomic, ``weights_only`` checkpoint files; with ``async_checkpoints`` (``auto``: on a GPU)
    written by Lightning's background thread from a copy of the tensors taken at save time, so
    the checkpoint is the state of that batch while training goes on."""
    option = cfg.get("async_checkpoints", False)
    if option == "auto":
        accelerator = str(cfg.trainer.get("accelerator", "auto"))
        option = accelerator in ("gpu", "cuda") or (
            accelerator == "auto" and torch.cuda.is_available()
        )
    elif not isinstance(option, bool):
        raise ConfigError(f"async_checkpoints={option!r}; expected true, false or auto")
    return AsyncCheckpointIO(SafeCheckpointIO()) if option else SafeCheckpointIO()


def train(cfg: DictConfig) -> dict[str, float]:
    """Train the configured model; return the final logged metrics as floats."""
    output_dir = Path(cfg.paths.output_dir)
    check_output_dir(output_dir)
    saved_config = output_dir / ".hydra" / "config.yaml"
    if not saved_config.is_file():  # runs started in-process (tables.py) get one too
        write_text(OmegaConf.to_yaml(cfg, resolve=True), saved_config)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = instantiate(cfg.model)
    model.model_name = str(cfg.get("model_name") or type(model).__name__)

    loggers = instantiate_loggers(cfg)
    callbacks = instantiate_group(cfg.get("callbacks"))
    if not loggers:  # logger=none: nothing to send learning rates to
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[checkpoint_io(cfg)]
    )

    hparams = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "data": datamodule.describe(),
        "overrides": sweep_overrides(),
    }
    for logger in trainer.loggers:
        logger.log_hyperparams(hparams)
    log.info("output folder: %s", output_dir)

    # the DataModule's own state makes mid-epoch resume exact; Lightning cannot see that
    warnings.filterwarnings("ignore", message=".*ended before the epoch ended.*")
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if cfg.get("evaluate_after_training") and trainer.is_global_zero:
        metrics.update(evaluate_run(output_dir))
    return metrics


def evaluate_run(output_dir: Path) -> dict[str, float]:
    """Generate from ``<run>/checkpoints/last.ckpt`` and evaluate into ``<run>/evaluate``; a
    missing metric weight file makes that metric absent rather than failing the run."""
    from hydra import compose

    from defectsynth.evaluation import evaluate

    cfg = compose("evaluate", overrides=["logger=none", "metrics.skip_missing=true"])
    with open_dict(cfg):  # paths may hold characters the override grammar would parse
        cfg.ckpt = str(output_dir / "checkpoints" / "last.ckpt")
        cfg.paths.output_dir = str(output_dir / "evaluate")
    return {f"eval/{k}": v for k, v in evaluate(cfg).items()}
