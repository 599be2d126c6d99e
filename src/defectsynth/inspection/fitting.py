"""One Lightning fit of a study network, keeping the weights of its best validation epoch."""

from __future__ import annotations

import copy
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from defectsynth.errors import ConfigError
from defectsynth.utils.wandb import default_wandb_mode

log = logging.getLogger(__name__)
# a study fits dozens of networks: Lightning's per-fit banners (devices, tips, seeds) are noise
QUIET_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.seed")


# train.select → (logged metric, whether higher is better)
SELECTIONS = {"loss": ("val/loss", False), "auroc": ("val/auroc", True)}


class BestWeights(L.Callback):
    """Keep, in memory, the weights of the epoch with the best ``monitor`` — the lowest, or with
    ``higher_is_better`` the highest; the first such epoch on ties (the authors keep the best
    validation-loss checkpoint); ``restore`` loads them back. In memory because a study trains
    dozens of networks and needs none of them afterwards."""

    def __init__(self, monitor: str = "val/loss", higher_is_better: bool = False) -> None:
        self.monitor, self.higher_is_better = monitor, higher_is_better
        self.best: float | None = None
        self.epoch: int | None = None
        self.state: dict[str, torch.Tensor] | None = None

    def _improves(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.higher_is_better else value < self.best

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        if self._improves(value):
            self.best, self.epoch = value, trainer.current_epoch
            self.state = copy.deepcopy({k: v.detach() for k, v in pl_module.state_dict().items()})

    def restore(self, module: nn.Module) -> dict[str, Any]:
        if self.state is not None:
            module.load_state_dict(self.state)
        key = "best_" + self.monitor.replace("/", "_")
        return {"best_epoch": self.epoch, key: self.best, "selected_by": self.monitor}


def quiet_lightning() -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def run_loggers(cfg: DictConfig, folder: Path, name: str, group: str) -> list[Any]:
    """The configured loggers (``logger`` group) for one fit: its own folder and W&B run name."""
    entries = [
        entry
        for entry in (cfg.get("logger") or {}).values()
        if isinstance(entry, DictConfig) and "_target_" in entry
    ]
    loggers = []
    for entry in entries:
        extra: dict[str, Any] = {"save_dir": str(folder)}
        if "Wandb" in str(entry._target_):
            default_wandb_mode()
            extra.update(name=name, group=group)
        loggers.append(instantiate(entry, **extra))
    return loggers


def log_table_to_wandb(
    cfg: DictConfig, folder: Path, key: str, header: list[str], rows: list[list[str]]
) -> None:
    """The finished table as a W&B table in a run of its own (when W&B is configured)."""
    for entry in (cfg.get("logger") or {}).values():
        if isinstance(entry, DictConfig) and "Wandb" in str(entry.get("_target_", "")):
            default_wandb_mode()
            logger = instantiate(
                entry, save_dir=str(folder), name=f"{cfg.run_name}/{key}", group=cfg.task_name
            )
            logger.log_table(key=key, columns=header, data=rows)
            logger.finalize("success")
            finish_wandb()


def finish_wandb() -> None:
    """Runs in one process share one W&B process: close a run before the next starts."""
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.finish()


def fit(
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    options: DictConfig,
    folder: Path,
    loggers: list[Any],
) -> dict[str, Any]:
    """Train for ``options.epochs`` epochs, validating every epoch; load the best epoch's
    weights back into ``module`` — by ``options.select`` (``loss``, the default: the lowest
    validation loss; ``auroc``: the highest validation AUROC). Returns the best epoch, its
    value and the time."""
    select = str(options.get("select", "loss"))
    if select not in SELECTIONS:
        raise ConfigError(f"select={select!r}: expected one of {sorted(SELECTIONS)}")
    best = BestWeights(*SELECTIONS[select])
    trainer = L.Trainer(
        accelerator=options.get("accelerator", "auto"),
        devices=1,
        max_epochs=int(options.epochs),
        logger=loggers or False,
        callbacks=[best],
        enable_checkpointing=False,
        enable_progress_bar=bool(options.get("progress_bar", False)),
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        deterministic=bool(options.get("deterministic", False)),
        default_root_dir=str(folder),
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        # the data live in memory: loader workers would only add start-up time
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        trainer.fit(module, datamodule=datamodule)
    info = best.restore(module)
    info["fit_seconds"] = round(time.perf_counter() - start, 2)
    return info
