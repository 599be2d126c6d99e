"""The GPU path, checked on the CPU: decisions taken on the device training will run on, and
training steps that never wait for the device."""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Iterator
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset

from defectsynth.models import base
from defectsynth.models.base import TrainingDivergedError
from defectsynth.models.defect_gan import DefectGAN
from defectsynth.models.defect_gan_control import DefectGANControl
from tests.models.common import FakeBatches, changed, snapshot
from tests.models.test_defect_gan import TINY
from tests.models.test_defect_gan_control import ControlBatches


def attach_fake_trainer(model: DefectGAN, root: torch.device, precision: str) -> None:
    # the state of ``configure_model`` on a GPU run: the strategy knows its CUDA root device
    # while the module's parameters are still on the CPU
    model._trainer = SimpleNamespace(
        strategy=SimpleNamespace(root_device=root), precision=precision
    )


def test_compile_auto_is_decided_on_the_strategys_root_device(monkeypatch):
    model = DefectGAN(**TINY, compile="auto")
    attach_fake_trainer(model, torch.device("cuda", 0), "32-true")
    assert model.device.type == "cpu"
    assert model.target_device() == torch.device("cuda", 0)
    monkeypatch.setattr(base.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(base.shutil, "which", lambda name: None)  # no C++ compiler
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compiled.append(self))
    model.configure_model()
    # fp32 without a C++ compiler: the CPU rule says eager, the CUDA rule (Triton) compiles
    assert len(compiled) == len(model.networks())


def test_compile_auto_on_a_cpu_root_keeps_the_cpu_rule(monkeypatch):
    model = DefectGAN(**TINY, compile="auto")
    attach_fake_trainer(model, torch.device("cpu"), "32-true")
    monkeypatch.setattr(base.shutil, "which", lambda name: "/usr/bin/c++")
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compiled.append(self))
    model.configure_model()
    assert compiled == []  # fp32 on a CPU: measured not to pay off


@pytest.mark.parametrize(
    ("device", "precision", "triton", "compiler", "expected"),
    [
        ("cuda", "32-true", True, False, True),
        ("cuda", "bf16-mixed", False, True, False),
        ("cpu", "bf16-mixed", False, True, True),
        ("cpu", "32-true", True, True, False),
    ],
)
def test_compile_pays_off_rules(monkeypatch, device, precision, triton, compiler, expected):
    monkeypatch.setattr(base.importlib.util, "find_spec", lambda name: object() if triton else None)
    monkeypatch.setattr(base.shutil, "which", lambda name: "/usr/bin/c++" if compiler else None)
    assert base.compile_pays_off("auto", torch.device(device), precision) is expected


# ----------------------------------------------------------------------------- no host sync
# what reads a device tensor on the host (a wait for the device on a GPU); ``.numpy()`` stays
# allowed: it fails outright on a device tensor, so it can only ever read host-side draws
HOST_READS = ("item", "tolist", "cpu", "__bool__", "__float__", "__int__")


@contextlib.contextmanager
def host_reads_forbidden() -> Iterator[None]:
    originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def forbid(name: str):
        def read(self, *args, **kwargs):
            raise AssertionError(f"Tensor.{name} inside training_step: a per-step host sync")

        return read

    for name in HOST_READS:
        setattr(torch.Tensor, name, forbid(name))
    try:
        yield
    finally:
        for name, method in originals.items():
            setattr(torch.Tensor, name, method)


def watched(cls: type) -> type:
    """``cls`` whose training steps fail on any host read of a tensor."""

    class Watched(cls):
        def training_step(self, batch, batch_idx):
            with host_reads_forbidden():
                return super().training_step(batch, batch_idx)

    Watched.__name__ = cls.__name__
    return Watched


def fit_between_boundaries(model: L.LightningModule, data: Dataset, batches: int) -> L.Trainer:
    # no logging step and no batch-cadence checkpoint inside the run: every step is one that
    # must not wait for the device (the epoch-end boundary lies outside training_step)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=batches,
        log_every_n_steps=1000,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, DataLoader(data, batch_size=1))
    return trainer


FUSED = {"optimizer": {"fused": True}}  # the GPU's default: the guard skips on the device


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"nan_policy": "skip", "pool_size": 2},
        {"stabilize": {"warmup_batches": 2, "r1_gamma": 1.0, "compose": "paste"}},
    ],
    ids=["paper", "skip-pool-swaps", "stabilized"],
)
def test_defect_gan_steps_never_read_the_device_on_the_host(options):
    torch.manual_seed(0)
    model = watched(DefectGAN)(**TINY, **FUSED, **options)
    trainer = fit_between_boundaries(model, FakeBatches(5, size=16), batches=5)
    assert trainer.global_step == 5 * 4
    assert torch.isfinite(trainer.logged_metrics["train/loss_G_total_epoch"])


def test_controllable_model_steps_never_read_the_device_on_the_host():
    torch.manual_seed(0)
    model = watched(DefectGANControl)(**TINY, **FUSED, control={"n_types": 2})
    trainer = fit_between_boundaries(model, ControlBatches(3, types=True), batches=3)
    assert trainer.global_step == 3 * 4
    assert 0 <= float(trainer.logged_metrics["train/mask_iou_epoch"]) <= 1


def test_a_nan_between_boundaries_freezes_the_weights_until_stop_reports_it():
    """With nothing reading the device mid-epoch, ``stop`` still keeps its promise: the
    poisoned batch and every later one leave the weights as they were after the last good
    batch, and the epoch's end names the batch."""
    torch.manual_seed(0)
    data = FakeBatches(4, size=16)
    data.items[1]["normal"][:] = float("nan")
    model = watched(DefectGAN)(**TINY, **FUSED)
    snapshots = {}

    class Snap(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            snapshots[batch_idx] = snapshot(module)

    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        log_every_n_steps=1000,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Snap()],
    )
    with pytest.raises(TrainingDivergedError, match=r"non-finite generator loss .*batch 1\b"):
        trainer.fit(model, DataLoader(data, batch_size=1))
    assert sorted(snapshots) == [0, 1, 2, 3]  # it ran on to the epoch's end
    for later in (1, 2, 3):
        assert not changed(snapshots[0], model) and snapshots[later].keys() == snapshots[0].keys()
        for key, value in snapshots[later].items():
            assert torch.equal(value, snapshots[0][key]), (later, key)


def test_under_ddp_one_ranks_nan_skips_the_step_on_every_rank(monkeypatch):
    """The guard's flag is summed over ranks before it decides: a finite loss here is still
    skipped when another rank's was not (else that rank's skip would hang this one). The sum is
    a plain all-reduce, queued on the device: Lightning's ``strategy.reduce`` would put a
    host-blocking barrier before it."""
    model = DefectGAN(**TINY, nan_policy="skip")
    ops = []

    def all_reduce(tensor: torch.Tensor, op) -> None:
        ops.append(op)
        tensor += 1.0  # the other rank's loss was non-finite

    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)

    def no_barrier(*args, **kwargs):
        raise AssertionError("strategy.reduce: a barrier per step")

    model._trainer = SimpleNamespace(
        world_size=2, strategy=SimpleNamespace(reduce=no_barrier), current_epoch=0
    )
    ok = model.guard_losses({"total": torch.tensor(1.0)}, "generator")
    assert ops == [torch.distributed.ReduceOp.SUM] and not bool(ok)


# ----------------------------------------------------------------------------- logging
class CountedLogs(DefectGAN):
    """Records (epoch, batch index, name) of every ``self.log``."""

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.calls: list[tuple[int, int, str]] = []

    def log(self, name, *args, **kwargs):
        loop = self.trainer.fit_loop.epoch_loop
        self.calls.append((self.current_epoch, loop.batch_idx, name))
        return super().log(name, *args, **kwargs)


def fit_logged(tmp_path, every: int, batches: int = 5, epochs: int = 2) -> CountedLogs:
    torch.manual_seed(0)
    model = CountedLogs(**TINY)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        log_every_n_steps=every,
        logger=CSVLogger(tmp_path, name="", version=""),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, DataLoader(FakeBatches(batches, size=16), batch_size=1))
    return model


def csv_rows(tmp_path) -> list[dict[str, float]]:
    with open(tmp_path / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f)]


def test_step_losses_are_handed_to_the_logger_only_where_it_writes_them(tmp_path):
    model = fit_logged(tmp_path, every=2)
    stepped = sorted({(e, b) for e, b, name in model.calls if name.endswith("_step")})
    # batches 2, 4 | 6, 8, 10 of the run are logging steps; each epoch's last batch also
    # updates trainer.logged_metrics
    assert stepped == [(0, 1), (0, 3), (0, 4), (1, 0), (1, 2), (1, 4)]
    rows = csv_rows(tmp_path)
    step_rows = [r for r in rows if "train/loss_gan_G_step" in r]
    assert [int(r["step"]) for r in step_rows] == [1, 3, 5, 7, 9]  # as Lightning wrote before
    names = {f"loss_{t}" for t in model.terms} | {"loss_G_total", "loss_D_X", "loss_D_Y"}
    names |= {"loss_D_C"}
    epoch_rows = [r for r in rows if "train/loss_G_total_epoch" in r]
    assert len(epoch_rows) == 2
    for name in names:
        assert all(f"train/{name}_step" in r for r in step_rows), name
        assert all(f"train/{name}_epoch" in r for r in epoch_rows), name
    assert all("daug/rt_D_X" in r for r in epoch_rows)


def test_epoch_means_are_the_means_of_the_step_losses(tmp_path):
    fit_logged(tmp_path, every=1, batches=3, epochs=1)
    rows = csv_rows(tmp_path)
    steps = [r for r in rows if "train/loss_cycle_step" in r]
    (epoch,) = [r for r in rows if "train/loss_cycle_epoch" in r]
    assert len(steps) == 3
    for name in ("loss_cycle", "loss_G_total", "loss_D_Y"):
        mean = sum(r[f"train/{name}_step"] for r in steps) / 3
        assert epoch[f"train/{name}_epoch"] == pytest.approx(mean, rel=1e-5)


# ----------------------------------------------------------------------------- dead parameters
def g_group(model: DefectGAN) -> set[int]:
    return {id(p) for p in model.configure_optimizers()[0]["optimizer"].param_groups[0]["params"]}


def ids(module: torch.nn.Module) -> set[int]:
    return {id(p) for p in module.parameters()}


@pytest.mark.parametrize(
    ("options", "f_mask", "g_mask"),
    [
        ({}, False, True),
        ({"stabilize": {"compose": "blend", "compose_inverse": True}}, True, True),
        ({"ablation": {"coherence": False, "background": False}}, False, False),
        (
            {
                "ablation": {"coherence": False, "background": False},
                "stabilize": {"compose": "paste"},
            },
            False,
            True,
        ),
        ({"ablation": {"coherence": False, "background": True}}, False, True),
    ],
    ids=["paper", "compose_inverse", "no_LC_LB", "no_LC_LB-paste", "no_LC"],
)
def test_mask_branches_that_feed_no_loss_are_out_of_the_optimiser(options, f_mask, g_mask):
    model = DefectGAN(**TINY, **options)
    group = g_group(model)
    assert (ids(model.F.mask_branch) <= group) is f_mask
    assert (ids(model.G.mask_branch) <= group) is g_mask
    assert ids(model.F.image_branch) <= group and ids(model.G.trunk) <= group
    assert not (ids(model.F.mask_branch) & group) or f_mask
    model.configure_model()
    # frozen, so DDP neither buckets them nor looks for their gradients
    assert all(p.requires_grad is f_mask for p in model.F.mask_branch.parameters())
    assert all(p.requires_grad is g_mask for p in model.G.mask_branch.parameters())
    # still in the state dict: checkpoints of either kind load strictly
    assert any(k.startswith("F.mask_branch.") for k in model.state_dict())


def test_controllable_model_trains_gs_mask_through_mask_follow():
    ablated = {"ablation": {"coherence": False, "background": False}}
    follows = DefectGANControl(**TINY, **ablated)
    assert ids(follows.G.mask_branch) <= g_group(follows)
    free = DefectGANControl(**TINY, **ablated, control={"mask_follow": False})
    assert not ids(free.G.mask_branch) & g_group(free)


def test_a_fit_leaves_dead_branches_as_initialised_and_trains_the_rest():
    torch.manual_seed(0)
    model = DefectGAN(**TINY, ablation={"coherence": False, "background": False})
    before = snapshot(model)
    fit_between_boundaries(model, FakeBatches(2, size=16), batches=2)
    for prefix, dead in (("F.mask_branch.", True), ("G.mask_branch.", True), ("G.trunk.", False)):
        moved = [
            not torch.equal(before[k], v)
            for k, v in model.state_dict().items()
            if k.startswith(prefix) and v.is_floating_point()
        ]
        assert (not any(moved)) is dead, prefix


def test_an_old_checkpoints_optimizer_state_with_the_dead_branch_still_resumes():
    """Checkpoints written when F's mask branch was in G's Adam: its entries are dropped and
    every live parameter keeps its own moments."""
    torch.manual_seed(0)
    model = DefectGAN(**TINY)
    full = [*model.G.parameters(), *model.F.parameters()]
    old = torch.optim.Adam(full, lr=1e-3)
    for i, p in enumerate(full):
        p.grad = torch.full_like(p, float(i + 1))
    old.step()
    checkpoint = {"optimizer_states": [old.state_dict()]}
    model.on_load_checkpoint(checkpoint)
    new = model.configure_optimizers()[0]["optimizer"]
    new.load_state_dict(checkpoint["optimizer_states"][0])
    live = new.param_groups[0]["params"]
    assert len(live) == len(full) - len(list(model.F.mask_branch.parameters()))
    for p in live:
        assert torch.equal(new.state[p]["exp_avg"], old.state[p]["exp_avg"])


# ----------------------------------------------------------------------------- image pools
def test_pools_restored_on_the_cpu_follow_the_model_to_its_device_at_fit_start():
    model = DefectGAN(**TINY, pool_size=2)
    model.pools["X"].query(torch.rand(2, 3, 4, 4))
    state = model.pools["X"].state_dict()
    model.pools["X"].load_state_dict(state)  # as a resume leaves them: CPU tensors
    model.to("meta")  # stands for the GPU: any device other than the checkpoint's CPU
    model.on_fit_start()
    assert [img.device.type for img in model.pools["X"].images] == ["meta", "meta"]
