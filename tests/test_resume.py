"""Faults during training: kill -9 and exact resume, corrupt checkpoints, NaN losses."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from defectsynth.callbacks import LastCheckpoint
from defectsynth.checkpoint import SafeCheckpointIO, load_checkpoint
from defectsynth.models.base import TrainingDivergedError
from defectsynth.models.defect_gan import DefectGAN
from tests.helpers import load, run_script
from tests.models.common import FakeBatches
from tests.models.test_defect_gan import TINY

RUN = (
    "experiment=smoke",
    "trainer.deterministic=true",
    "data.batch_size=1",
    "trainer.limit_train_batches=1.0",
    "model.schedule.n_epochs=1",
    "model.schedule.n_epochs_decay=2",
    "callbacks.last_checkpoint.every_n_batches=1",
    "callbacks.sample_grid.every_n_batches=0",
    "logger=none",
)


def final_state(run_dir) -> dict[str, torch.Tensor]:
    return load(run_dir / "checkpoints" / "last.ckpt")["state_dict"]


def test_kill_minus_9_then_resume_gives_the_uninterrupted_weights(tmp_path, cache_dir):
    # 3 epochs × 8 batches; the kill lands at a random batch, mid-epoch
    kill_at = random.Random(7).choice([b for b in range(3, 22) if b % 8])
    run_script("train.py", *RUN, f"hydra.run.dir={tmp_path / 'straight'}", cache_dir=cache_dir)
    killed = run_script(
        "train.py",
        *RUN,
        f"hydra.run.dir={tmp_path / 'killed'}",
        "+callbacks.kill._target_=tests.helpers.KillAt",
        f"+callbacks.kill.batch={kill_at}",
        cache_dir=cache_dir,
        check=False,
    )
    assert killed.returncode == -9  # SIGKILL: no cleanup, no final checkpoint
    interrupted = load(tmp_path / "killed" / "checkpoints" / "last.ckpt")
    assert interrupted["global_step"] == (kill_at - 1) * 4  # the last batch-end checkpoint
    run_script(
        "train.py",
        *RUN,
        f"hydra.run.dir={tmp_path / 'killed'}",
        "ckpt_path=last",
        cache_dir=cache_dir,
    )
    straight, resumed = final_state(tmp_path / "straight"), final_state(tmp_path / "killed")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    done = load(tmp_path / "killed" / "checkpoints" / "last.ckpt")
    # Lightning stores the 0-based index of the epoch that just finished
    assert done["epoch"] == 2 and done["global_step"] == 3 * 8 * 4


def test_truncated_last_checkpoint_is_a_clear_error_naming_the_file(smoke_run, cache_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    proc = run_script(
        "train.py",
        "product=tile",
        "ablation=no_LB",
        "experiment=smoke",
        f"hydra.run.dir={run}",
        "ckpt_path=last",
        cache_dir=cache_dir,
        check=False,
    )
    assert proc.returncode == 2
    assert "last.ckpt cannot be loaded" in proc.stderr and "Traceback" not in proc.stderr


def checkpointing_trainer(tmp_path, callbacks, io=None, epochs: int = 1) -> L.Trainer:
    """A quiet CPU trainer that writes checkpoints into ``tmp_path`` through ``io``."""
    return L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        plugins=[io or SafeCheckpointIO()],
        callbacks=callbacks,
    )


def fit_with_nan(policy: str, tmp_path, fused: bool = False) -> tuple[DefectGAN, L.Trainer]:
    torch.manual_seed(0)
    data = FakeBatches(3, size=16)
    data.items[1]["normal"][:] = float("nan")  # the second batch poisons every loss
    # fused Adam: the GPU's path, where the guard skips a step on the device (``found_inf``)
    model = DefectGAN(**TINY, nan_policy=policy, optimizer={"fused": fused})
    trainer = checkpointing_trainer(tmp_path, [LastCheckpoint(str(tmp_path), every_n_batches=1)])
    trainer.fit(model, DataLoader(data, batch_size=1))
    return model, trainer


@pytest.mark.parametrize("fused", [False, True])
def test_nan_loss_stops_with_a_clear_message_and_the_last_checkpoint_intact(tmp_path, fused):
    with pytest.raises(TrainingDivergedError, match=r"non-finite generator loss .*batch 1"):
        fit_with_nan("stop", tmp_path, fused)
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 4  # after batch 0, before the poisoned batch
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())


@pytest.mark.parametrize("fused", [False, True])
def test_nan_policy_skip_skips_only_the_poisoned_batch(tmp_path, fused):
    model, trainer = fit_with_nan("skip", tmp_path, fused)
    assert model.skipped_steps == 1
    assert trainer.global_step == 2 * 4  # two healthy batches, four optimizers each
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_unwritable_output_folder_is_a_clear_error_before_anything_runs(tmp_path, cache_dir):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc = run_script(
        "train.py",
        "experiment=smoke",
        f"hydra.run.dir={blocker}/run",
        cache_dir=cache_dir,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "cannot write to the output folder" in proc.stderr


def test_full_disk_is_reported_before_training(tmp_path, monkeypatch):
    from collections import namedtuple

    from defectsynth.errors import ConfigError
    from defectsynth.utils import io

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(io.shutil, "disk_usage", lambda _: usage(10**9, 10**9 - 2**20, 2**20))
    with pytest.raises(ConfigError, match=r"only 1 MiB free"):
        io.check_output_dir(tmp_path / "run")


def test_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io = SafeCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, path)

    def killed_mid_write(obj, fh):
        fh.write(b"half a checkpoint")
        raise KeyboardInterrupt  # e.g. the job is stopped while saving

    monkeypatch.setattr(torch, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1  # the previous checkpoint, intact
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary file left
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (renames.append(a), real_replace(a, b)))
    io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 2}, path)
    assert load_checkpoint(path)["epoch"] == 2
    # an atomic rename needs the temporary file on the checkpoint's own file system
    assert [Path(a).parent for a in renames] == [path.parent]


def test_last_checkpoint_follows_the_clock_mid_epoch_and_at_epoch_ends(tmp_path, monkeypatch):
    from defectsynth import callbacks as cb

    now = [0.0]
    monkeypatch.setattr(cb.time, "monotonic", lambda: now[0])
    saves: list[int] = []

    class Spy(LastCheckpoint):
        def _save_last_checkpoint(self, trainer, candidates) -> None:
            saves.append(trainer.fit_loop.epoch_loop.batch_progress.total.ready)
            super()._save_last_checkpoint(trainer, candidates)

    class Clock(L.Callback):  # 10 s of training per batch
        def on_train_batch_end(self, *args) -> None:
            now[0] += 10.0

    torch.manual_seed(0)
    trainer = checkpointing_trainer(
        tmp_path, [Clock(), Spy(str(tmp_path), every_n_minutes=1.0)], epochs=2
    )
    trainer.fit(DefectGAN(**TINY), DataLoader(FakeBatches(50, 16), batch_size=1))
    # 50 batches per epoch; the clock is read every 20 batches and at each epoch end: due at
    # batch 20 (200 s since the start), 40, the end of epoch 1 (50: 100 s after 40), 60, 80, and
    # the end of epoch 2 (100) — which is also the end of training, saved once
    assert saves == [20, 40, 50, 60, 80, 100]
    assert (tmp_path / "last.ckpt").is_file()
    assert load_checkpoint(tmp_path / "last.ckpt")["epoch"] == 1


def test_async_checkpoints_are_chosen_by_config_and_write_the_final_state(tmp_path):
    from lightning.pytorch.plugins.io import AsyncCheckpointIO
    from omegaconf import OmegaConf

    from defectsynth.errors import ConfigError
    from defectsynth.training import checkpoint_io

    def io(option, accelerator="cpu"):
        cfg = OmegaConf.create(
            {"async_checkpoints": option, "trainer": {"accelerator": accelerator}}
        )
        return checkpoint_io(cfg)

    assert type(io("auto")) is SafeCheckpointIO  # CPU: the plain atomic writer
    assert isinstance(io("auto", "gpu"), AsyncCheckpointIO)
    assert isinstance(io(True).checkpoint_io, SafeCheckpointIO)  # still atomic, weights_only
    assert type(io(False)) is SafeCheckpointIO
    with pytest.raises(ConfigError, match="async_checkpoints"):
        io("sometimes")

    torch.manual_seed(0)
    model = DefectGAN(**TINY)
    trainer = checkpointing_trainer(
        tmp_path, [LastCheckpoint(str(tmp_path), every_n_batches=1)], io=io(True)
    )
    trainer.fit(model, DataLoader(FakeBatches(4, 16), batch_size=1))
    saved = load_checkpoint(tmp_path / "last.ckpt")["state_dict"]
    for key, value in model.state_dict().items():
        assert torch.equal(saved[key], value), key
    assert not list(tmp_path.glob("*.tmp*"))  # no temporary file left behind
