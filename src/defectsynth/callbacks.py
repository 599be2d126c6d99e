"""Lightning callbacks of the project."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from defectsynth.utils.io import save_png
from defectsynth.utils.visualize import sample_panel

log = logging.getLogger(__name__)


class SampleGrid(L.Callback):
    """Every ``every_n_batches`` training batches and at the end of training, synthesise a fixed
    set of normal images and save source | synthetic | mask | overlay as a PNG (and to W&B)."""

    def __init__(self, dirpath: str, every_n_batches: int = 500, n_samples: int = 4) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_batches = every_n_batches
        self.n_samples = n_samples
        self.preview: torch.Tensor | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.n_samples > 0:
            self.preview = trainer.datamodule.preview_batch(self.n_samples)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        done = trainer.fit_loop.epoch_loop.batch_progress.total.ready
        if self.every_n_batches > 0 and done % self.every_n_batches == 0:
            self.write(trainer, pl_module, done)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write(trainer, pl_module, trainer.fit_loop.epoch_loop.batch_progress.total.ready)

    @rank_zero_only
    def write(self, trainer: L.Trainer, pl_module: L.LightningModule, batches_done: int) -> None:
        if self.preview is None:
            return
        source = self.preview.to(pl_module.device)
        image, mask = pl_module.synthesize(source)
        # a sampling model (DCGAN) only takes the preview's batch size: show no source for it
        shown = source if getattr(pl_module, "is_image_to_image", True) else None
        panel = sample_panel(shown, image, mask)
        path = self.dirpath / f"batch_{batches_done:07d}.png"
        save_png(panel, path)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(
                    "samples",
                    images=[panel],
                    step=batches_done,
                    caption=["normal | synthetic | mask | overlay"],
                )


class LastCheckpoint(ModelCheckpoint):
    """Only ``last.ckpt``, for resuming: refreshed every ``every_n_epochs`` epochs and, if set,
    every ``every_n_batches`` training batches (counted in batches, not in Lightning's
    optimizer steps, of which there are 3–4 per batch here) and every ``every_n_minutes`` of
    training — the cadence that suits a fast GPU, where a batch count means seconds. A class
    of its own so its checkpointed state never collides with the periodic ModelCheckpoint."""

    # how often (in batches) the clock is read for ``every_n_minutes``; under DDP each reading
    # is one broadcast of rank 0's decision, so every rank saves at the same batch
    CLOCK_EVERY = 20

    def __init__(
        self,
        dirpath: str,
        every_n_epochs: int = 1,
        every_n_batches: int = 0,
        every_n_minutes: float = 0.0,
        **kwargs,
    ) -> None:
        # no version counter: a resumed (or moved) run overwrites last.ckpt, never last-v1.ckpt
        super().__init__(
            dirpath=dirpath,
            save_top_k=0,
            save_last=True,
            every_n_epochs=every_n_epochs,
            enable_version_counter=False,
            **kwargs,
        )
        self.every_n_batches = every_n_batches
        self.every_n_minutes = float(every_n_minutes)
        self._saved_at = time.monotonic()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._saved_at = time.monotonic()  # minutes of training, not of data decoding

    def _time_is_up(self, trainer: L.Trainer, done: int | None = None) -> bool:
        """``every_n_minutes`` have passed since the last save (read every ``CLOCK_EVERY``
        batches when ``done`` is a batch count; always at an epoch's end)."""
        if self.every_n_minutes <= 0 or (done is not None and done % self.CLOCK_EVERY):
            return False
        due = time.monotonic() - self._saved_at >= 60.0 * self.every_n_minutes
        return bool(trainer.strategy.broadcast(due))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        done = trainer.fit_loop.epoch_loop.batch_progress.total.ready
        by_count = bool(self.every_n_batches) and done % self.every_n_batches == 0
        if not (by_count or self._time_is_up(trainer, done)):
            return
        if batch_idx + 1 >= trainer.num_training_batches:
            return  # the epoch-end save follows and records the epoch as complete
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        self._saved_at = time.monotonic()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # ModelCheckpoint writes last.ckpt only next to a top-k save; there are none here
        if self._should_skip_saving_checkpoint(trainer):
            return
        if (trainer.current_epoch + 1) % max(self._every_n_epochs, 1):
            return
        # with a time cadence an epoch's end saves only once it is due: short epochs (a GPU
        # does one in seconds) would otherwise write hundreds of checkpoints per run
        final = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
        if final or self.every_n_minutes <= 0 or self._time_is_up(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # stopped by max_steps or between periods: the final weights still reach last.ckpt
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
