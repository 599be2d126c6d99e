"""What every GAN of the project shares: manual optimisation with one Adam per network group,
the epoch-wise linear-decay schedule, speed options, step/epoch loss logging, image-pool and
model-class checkpoint entries, and test-time synthesis in eval mode.

Subclasses define their networks, ``optimizer_groups`` and ``training_step``.
"""

from __future__ import annotations

import importlib.util
import logging
import random
import shutil
from collections.abc import Iterable
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from defectsynth.errors import ConfigError, DefectSynthError
from defectsynth.models.d_augment import DiscriminatorAugment
from defectsynth.models.image_pool import ImagePool
from defectsynth.models.losses import lsgan_discriminator_loss, r1_penalty
from defectsynth.models.options import merged_options
from defectsynth.models.schedule import LinearDecay

log = logging.getLogger(__name__)
NAN_POLICIES = ("stop", "skip", "off")
__all__ = ["GANModule", "merged_options", "seeded_pools"]

# low-data stabilisers (``model.stabilize``); the defaults are the paper's training
STABILIZE_DEFAULTS: dict[str, Any] = {
    # ramp the weights of the mask terms (defect_gan: λ_c and λ_b) linearly from 0 over this many
    # batches, so G first learns the identity/cycle mapping before D_C's gradient arrives
    "warmup_batches": 0,
    # R1 gradient penalty γ/2·E‖∇D(real)‖² on every discriminator's (augmented) reals
    "r1_gamma": 0.0,
    # what D_C sees (defect_gan): image ‖ mask (paper) or image⊙mask ‖ mask, where the image
    # outside the marked region is hidden, so D_C's gradient cannot reach the background
    "coherence_view": "image_mask",
    # make real and fake masks alike before D_C sees them, so it cannot win on the mask channel
    # alone: none (paper), blur (both Gaussian-blurred alike), binarize (the fake mask
    # thresholded at 0.5 with a straight-through gradient, as binary as the real ones)
    "mask_match": "none",
    "mask_blur_sigma": 1.5,
    # how G's two outputs make the defective image: none (the paper: the image branch paints the
    # whole image) or blend (m ⊙ G_img(x) + (1 − m) ⊙ x: the image branch paints only where
    # its mask is on, so the background is the source's own pixels from the first batch) or
    # paste (the same through the mask thresholded at 0.5, with a straight-through gradient)
    "compose": "none",
    # compose F (defective → normal) the same way, through F's own mask (else F's mask branch
    # is never run, as in the paper)
    "compose_inverse": False,
    # where F(G(x)) ≈ x and G(F(y)) ≈ y are asked for: all (paper) or outside_defect (not
    # under G's thresholded mask, resp. the real mask: a defect erases what was under it)
    "cycle_region": "all",
}
# options that only mean something for a model with a mask discriminator
MASK_STABILIZERS = (
    "warmup_batches",
    "coherence_view",
    "mask_match",
    "compose",
    "compose_inverse",
    "cycle_region",
)


class TrainingDivergedError(DefectSynthError):
    """A loss became NaN or infinite."""


def seeded_pools(pool_size: int, *names: str) -> dict[str, ImagePool]:
    """One image pool per name, seeded from torch's RNG (so ``seed_everything`` fixes them)
    and from different seeds; a pool of size 0 passes fakes through."""
    seed = int(torch.randint(2**31 - 1, (1,)))
    return {name: ImagePool(pool_size, seed=seed + i) for i, name in enumerate(names)}


def compile_pays_off(setting: bool | str, device: torch.device, precision: str) -> bool:
    """Resolve ``model.compile``: ``auto`` compiles where it was measured to win and can work —
    CUDA with Triton, or a CPU in bf16 with a C++ compiler (measured here: 256² step 3.4 s →
    2.3 s after ~1 min of compiling; in fp32 the gain was ≤ 9 %)."""
    if isinstance(setting, bool):
        return setting
    if setting != "auto":
        raise ValueError(f"model.compile={setting!r}; expected true, false or auto")
    if device.type == "cuda":
        return importlib.util.find_spec("triton") is not None
    has_compiler = any(shutil.which(cc) for cc in ("c++", "g++", "clang++"))
    return device.type == "cpu" and "bf16" in str(precision) and has_compiler


class GANModule(L.LightningModule):
    """Base of the proposed model and the baselines."""

    #: whether ``synthesize`` returns a mask (False: the tables mark mask metrics as n/a)
    has_mask_output: bool = True
    #: whether the model translates a source image (False: it samples latent codes)
    is_image_to_image: bool = True
    #: the model config's name (``model=...``), set by training and kept in checkpoints
    model_name: str | None = None

    def __init__(
        self,
        optimizer: dict[str, Any] | None = None,
        schedule: dict[str, Any] | None = None,
        compile: bool | str = False,
        channels_last: bool = False,
        nan_policy: str = "stop",
        d_augment: dict[str, Any] | None = None,
        stabilize: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if nan_policy not in NAN_POLICIES:
            raise ValueError(f"model.nan_policy={nan_policy!r}; expected one of {NAN_POLICIES}")
        self.nan_policy = nan_policy
        self.skipped_steps = 0
        # the NaN guard's device-side state (see ``guard_losses``), read only at log, epoch and
        # checkpoint boundaries
        self._guard: dict[str, Any] = {}
        # this epoch's loss sums and counts per set of logged names, on the device
        self._epoch_losses: dict[tuple[str, ...], tuple[torch.Tensor, torch.Tensor]] = {}
        self.automatic_optimization = False
        self.optimizer_config = {"lr": 2e-4, "betas": (0.5, 0.999), **(optimizer or {})}
        self.schedule_config = {"n_epochs": 100, "n_epochs_decay": 200, **(schedule or {})}
        self.compile_networks, self.channels_last = compile, channels_last
        self.pools: dict[str, ImagePool] = {}
        # one augmentation object for every discriminator of every model (model.d_augment)
        self.d_augment = DiscriminatorAugment(d_augment)
        self.stabilize = merged_options(STABILIZE_DEFAULTS, stabilize, "model.stabilize")
        if float(self.stabilize["r1_gamma"]) < 0 or int(self.stabilize["warmup_batches"]) < 0:
            raise ConfigError("model.stabilize.r1_gamma and warmup_batches must be ≥ 0")
        # batches started since training began (checkpointed: warm-up follows it exactly
        # across a resume); ``batch_step`` is the 0-based index of the running batch
        self.batches_seen = 0
        self.batch_step = 0

    # ------------------------------------------------------------------ hooks for subclasses
    def optimizer_groups(self) -> dict[str, Iterable[nn.Parameter]]:
        """Name → parameters of each optimiser, in the order ``training_step`` steps them."""
        raise NotImplementedError

    def dead_parameters(self) -> list[nn.Parameter]:
        """Parameters that feed no loss term in this configuration: kept in the module (and in
        checkpoints, so every checkpoint loads either way) but out of the optimiser and, frozen
        in ``configure_model``, out of DDP's buckets and its unused-parameter search."""
        return []

    def live_groups(self) -> dict[str, list[nn.Parameter]]:
        """``optimizer_groups`` without the dead parameters."""
        dead = {id(p) for p in self.dead_parameters()}
        return {
            name: [p for p in params if id(p) not in dead]
            for name, params in self.optimizer_groups().items()
        }

    def networks(self) -> list[nn.Module]:
        return [m for m in self.children() if isinstance(m, nn.Module)]

    def generate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Test-time mapping of normal images (N, 3, H, W) in [-1, 1] to (image, mask | None)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared behaviour
    def configure_model(self) -> None:
        """Speed options, applied once the module is on its device. ``nn.Module.compile``
        compiles in place, so state-dict keys (and checkpoints) are unchanged."""
        # before Lightning wraps the module in DDP, which registers what requires a gradient
        for param in self.dead_parameters():
            param.requires_grad_(False)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        precision = str(self.trainer.precision) if self._trainer is not None else "32-true"
        if compile_pays_off(self.compile_networks, self.target_device(), precision):
            log.info("compiling the networks with torch.compile (the first steps are slower)")
            for net in self.networks():
                net.compile()

    def target_device(self) -> torch.device:
        """The device training runs on. In ``configure_model`` the module still sits on the CPU
        (Lightning moves it afterwards), so ``self.device`` would apply the CPU's rules to a
        GPU run; the strategy already knows its root device."""
        if self._trainer is not None:
            return self.trainer.strategy.root_device
        return self.device

    def configure_optimizers(self) -> list[dict[str, Any]]:
        """One Adam per group, each with the epoch-wise linear-decay schedule (stepped in
        ``on_train_epoch_end``, so it follows epochs, not Lightning's optimizer-step count)."""
        cfg = self.optimizer_config
        decay = LinearDecay(
            self.schedule_config["n_epochs"], self.schedule_config["n_epochs_decay"]
        )
        # fused Adam (one kernel for all parameters) on CUDA; the default foreach path elsewhere
        fused = cfg.get("fused")
        fused = self.target_device().type == "cuda" if fused is None else bool(fused)
        configs = []
        for name, params in self.live_groups().items():
            opt = torch.optim.Adam(params, lr=cfg["lr"], betas=tuple(cfg["betas"]), fused=fused)
            scheduler = torch.optim.lr_scheduler.LambdaLR(opt, decay)
            configs.append(
                {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "name": f"lr/{name}"}}
            )
        return configs

    def on_train_epoch_end(self) -> None:
        # before the epoch-end checkpoints (monitoring callbacks run after this hook)
        self.settle_nonfinite()
        self.log_epoch_losses()
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            scheduler.step()
        # the overfitting signal r_t per discriminator (and ADA's p), once per epoch
        metrics = self.d_augment.epoch_metrics()
        if metrics:
            self.log_dict(metrics, on_step=False, on_epoch=True, sync_dist=True)
        self.d_augment.reset_epoch()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # here, not at batch end: checkpoint callbacks run their batch-end hook before the
        # module's, so state changed there would miss the checkpoint of that batch
        self.batch_step = self.batches_seen
        self.batches_seen += 1
        if self.nan_policy == "skip" and self._guard:
            self._guard["carry"] = None  # a new batch: nothing poisoned yet
        self.d_augment.update(self._sum_over_ranks if self._world_size() > 1 else None)

    def _world_size(self) -> int:
        return self.trainer.world_size if self._trainer is not None else 1

    def _sum_over_ranks(self, values: torch.Tensor) -> torch.Tensor:
        reduced = self.trainer.strategy.reduce(values.to(self.device), reduce_op="sum")
        return reduced.cpu()

    # ------------------------------------------------------------------ discriminators
    def warmup(self) -> float:
        """Weight of the mask terms at the running batch: 0 → 1 over ``warmup_batches``."""
        n = int(self.stabilize["warmup_batches"])
        return 1.0 if n <= 0 else min(1.0, self.batch_step / n)

    def judge(self, name: str, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """D(augment(x)): every discriminator call of the G step goes through here, so G is
        judged on inputs drawn like the ones D learns from (gradients flow through)."""
        return net(self.d_augment.augment(name, x))

    def discriminator_loss(
        self,
        name: str,
        net: nn.Module,
        real: torch.Tensor,
        fake: torch.Tensor,
        loss: Any = lsgan_discriminator_loss,
        threshold: float = 0.5,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``loss(D(aug(real)), D(aug(fake)))`` (+ γ/2·R1 on the augmented reals), recording
        r_t; ``threshold`` splits D's real/fake scores (0.5 for LSGAN targets 1/0, 0 for
        logits). Returns the loss and extra terms to log."""
        gamma = float(self.stabilize["r1_gamma"])
        real_in = self.d_augment.augment(name, real)
        if gamma > 0:
            real_in = real_in.detach().requires_grad_(True)
        pred_real = net(real_in)
        pred_fake = net(self.d_augment.augment(name, fake.detach()))
        value = loss(pred_real, pred_fake)
        self.d_augment.observe(name, pred_real, threshold)
        extras: dict[str, torch.Tensor] = {}
        if gamma > 0:
            penalty = r1_penalty(pred_real, real_in)
            value = value + 0.5 * gamma * penalty
            extras[f"r1_{name}"] = penalty
        return value, extras

    def ignore_mask_stabilizers(self) -> None:
        """For models without D_C: say which ``model.stabilize`` options have no effect."""
        ignored = [k for k in MASK_STABILIZERS if self.stabilize[k] != STABILIZE_DEFAULTS[k]]
        if ignored:
            log.warning(
                "model.stabilize options %s act on D_C / the mask terms; %s has none, so they "
                "are ignored",
                ignored,
                type(self).__name__,
            )

    def step(
        self,
        optimizer: Any,
        loss: torch.Tensor,
        stage: str = "generator",
        terms: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """One optimiser step on ``loss``, guarded against NaN/Inf without waiting for the
        device: a non-finite loss (``loss`` or one of ``terms``, which also name the culprits)
        turns this step and every later one of the batch into a no-op — and, with
        ``nan_policy=stop``, every later step of the run, until the next log or checkpoint
        boundary raises (``settle_nonfinite``). No weight and no Adam moment ever moves on a
        non-finite loss."""
        ok = self.guard_losses({"total": loss, **(terms or {})}, stage)
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if ok is None:
            optimizer.step()
            return
        raw = getattr(optimizer, "optimizer", optimizer)
        if getattr(raw, "_step_supports_amp_scaling", False) and raw.defaults.get("fused"):
            # fused Adam skips its whole update (moments and step count included) on the device
            # when ``found_inf`` is 1 — the mechanism GradScaler uses
            raw.found_inf = (~ok).float()
            try:
                optimizer.step()
            finally:
                raw.__dict__.pop("found_inf", None)
            self._guard["masked"] = self._guard["masked"] + (~ok).long()
        elif bool(ok):
            # a foreach/for-loop optimiser cannot skip on the device: ask the host (free on a
            # CPU; on a GPU set model.optimizer.fused=true to avoid this wait)
            optimizer.step()

    def guard_losses(self, losses: dict[str, torch.Tensor], stage: str) -> torch.Tensor | None:
        """Record which of ``losses`` are non-finite, on the device (identical on every DDP
        rank), and return whether this step may update weights (None: ``nan_policy=off``)."""
        if self.nan_policy == "off":
            return None
        values = torch.stack([v.detach().float().reshape(()) for v in losses.values()])
        bad = ~torch.isfinite(values)
        if self._world_size() > 1:
            # one rank's skip must be every rank's, or the others wait for it forever
            bad = all_reduce_sum(bad.float()) > 0
        own_bad = bad.any()
        g = self._guard
        if not g:
            zero = torch.zeros((), dtype=torch.long, device=values.device)
            g.update(
                count=zero, masked=zero, epoch=zero - 1, batch=zero - 1, culprits={}, carry=None
            )
        epoch, batch = self.current_epoch, self.batch_step
        carry = g["carry"]
        # a loss that is non-finite on its own counts once; the later steps of a poisoned
        # batch (or, with ``stop``, of the run) are skipped without counting again
        new = own_bad if carry is None else own_bad & carry
        first_here = (g["batch"] < 0) | ((g["epoch"] == epoch) & (g["batch"] == batch))
        names, previous = g["culprits"].get(stage, (tuple(losses), torch.zeros_like(bad)))
        g["culprits"][stage] = (names, torch.where(new & first_here, bad, previous))
        g["epoch"] = torch.where(new & (g["batch"] < 0), epoch, g["epoch"])
        g["batch"] = torch.where(new & (g["batch"] < 0), batch, g["batch"])
        g["count"] = g["count"] + new.long()
        ok = ~own_bad if carry is None else ~own_bad & carry
        g["carry"] = ok
        return ok

    def batch_ok(self) -> torch.Tensor | None:
        """Device flag: no loss of this batch (with ``stop``: of the run) was non-finite so far
        (None: nothing checked yet). Image pools take a batch's fakes only while it holds."""
        return self._guard.get("carry")

    def settle_nonfinite(self) -> int:
        """Read the guard's device counters (one host sync): raise for ``nan_policy=stop``,
        count and report skipped steps for ``skip``, and take the steps fused Adam masked out
        off Lightning's optimiser-step count (so ``global_step`` counts weight updates, as a
        skipped step never called the optimiser). Returns the number of masked steps."""
        g = self._guard
        if not g:
            return 0
        count, masked = int(g["count"]), int(g["masked"])
        if masked and self._trainer is not None:
            progress = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
            for tracker in (progress.total, progress.current):
                tracker.ready -= masked
                tracker.completed -= masked
        g["masked"] = g["masked"] - masked
        if count == 0:
            return masked
        epoch, batch = int(g["epoch"]), int(g["batch"])
        stage, bad = "generator", ["?"]
        for name, (names, flags) in g["culprits"].items():
            hits = [n for n, f in zip(names, flags.tolist(), strict=True) if f]
            if hits:
                stage, bad = name, hits
                break
        where = f"epoch {epoch}, batch {self._batch_in_epoch(batch)}"
        if self.nan_policy == "stop":
            raise TrainingDivergedError(
                f"non-finite {stage} loss ({', '.join(bad)}) at {where}; training stopped before "
                "updating any weights with it or after it, so the last checkpoint is intact. "
                "Lower the learning rate or the λ weights, check the data, or set "
                "model.nan_policy=skip."
            )
        self.skipped_steps += count
        log.warning(
            "skipped %d poisoned step(s) (the first: %s at %s, non-finite %s)",
            count,
            stage,
            where,
            ", ".join(bad),
        )
        zero = torch.zeros_like(g["count"])
        g.update(count=zero, epoch=zero - 1, batch=zero - 1, culprits={})
        return masked

    def _batch_in_epoch(self, batch_step: int) -> int:
        """The epoch's batch index of a running-batch number recorded in this epoch."""
        if self._trainer is None:
            return batch_step
        loop = self.trainer.fit_loop.epoch_loop
        return loop.batch_idx - (self.batch_step - batch_step)

    def at_sync_boundary(self) -> bool:
        """Whether this batch ends at a point that reads the device anyway: a logging step or
        a batch-cadence checkpoint/sample callback (they run before the module's batch-end
        hook, so the guard settles at the end of ``training_step``)."""
        if self._trainer is None:
            return True
        trainer = self.trainer
        if trainer._logger_connector.should_update_logs:
            return True
        done = trainer.fit_loop.epoch_loop.batch_progress.total.ready
        for callback in trainer.callbacks:
            n = getattr(callback, "every_n_batches", 0) or 0
            if n > 0 and done % n == 0:
                return True
            if getattr(callback, "_every_n_train_steps", 0):
                return True  # a step-cadence ModelCheckpoint: its steps are counted here
        return False

    def end_of_step(self) -> None:
        """Settle the NaN guard where the step syncs anyway (see ``at_sync_boundary``)."""
        if self._guard and self.at_sync_boundary():
            self.settle_nonfinite()
            if self.nan_policy == "skip":
                self.log("train/skipped_steps", float(self.skipped_steps), on_step=True)

    def log_losses(self, losses: dict[str, torch.Tensor], batch_size: int) -> None:
        """Stack a step's losses into one tensor: add it (batch-size weighted, finite values
        only) to the epoch's sums on the device, and hand it to the logger only where Lightning
        writes step metrics (every ``log_every_n_steps``, and the epoch's last batch, which
        ``trainer.logged_metrics`` shows) — a few kernels per step instead of a dozen
        ``self.log`` calls. Epoch means over all ranks are logged in ``on_train_epoch_end``."""
        names = tuple(losses)
        values = torch.stack([v.detach().float().reshape(()) for v in losses.values()])
        finite = torch.isfinite(values)
        sums = torch.where(finite, values, 0.0) * batch_size
        counts = finite.float() * batch_size
        if names in self._epoch_losses:
            old_sums, old_counts = self._epoch_losses[names]
            sums = old_sums.to(sums.device) + sums
            counts = old_counts.to(counts.device) + counts
        self._epoch_losses[names] = (sums, counts)
        if self._trainer is not None and self._writes_step_metrics():
            self.log_dict(
                {f"train/{k}_step": v for k, v in zip(names, values.unbind(), strict=True)},
                batch_size=batch_size,
            )

    def _writes_step_metrics(self) -> bool:
        trainer = self.trainer
        if trainer._logger_connector.should_update_logs:
            return True
        progress = trainer.fit_loop.epoch_loop.batch_progress
        return progress.is_last_batch or progress.current.ready >= trainer.num_training_batches

    def log_epoch_losses(self) -> None:
        """The epoch's mean of each loss over every rank's batches (one all-reduce), logged as
        ``train/<name>_epoch``; then the sums start over."""
        totals: dict[str, list[torch.Tensor]] = {}
        for names, (sums, counts) in self._epoch_losses.items():
            for i, name in enumerate(names):
                acc = totals.setdefault(name, [sums.new_zeros(()), sums.new_zeros(())])
                acc[0] = acc[0] + sums[i].to(acc[0].device)
                acc[1] = acc[1] + counts[i].to(acc[1].device)
        self._epoch_losses = {}
        if not totals:
            return
        stacked = torch.stack([torch.stack(acc) for acc in totals.values()])
        if self._world_size() > 1:
            stacked = self.trainer.strategy.reduce(stacked.to(self.device), reduce_op="sum")
        means = stacked[:, 0] / stacked[:, 1].clamp_min(1e-12)
        seen = (stacked[:, 1] > 0).tolist()
        self.log_dict(
            {
                f"train/{name}_epoch": mean
                for name, mean, ok in zip(totals, means.unbind(), seen, strict=True)
                if ok
            },
            on_step=False,
            on_epoch=True,
            # equal on every rank already: the mean over ranks leaves them as they are
            sync_dist=True,
            batch_size=1,
        )

    @torch.no_grad()
    def synthesize(
        self, x: torch.Tensor, **controls: Any
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``generate`` in eval mode (BatchNorm uses its running statistics, as in the authors'
        code; InstanceNorm is unaffected), restoring the training mode afterwards. ``controls``
        go to ``generate`` (a controllable model's requested masks, codes, types)."""
        was_training = self.training
        self.eval()
        try:
            return self.generate(x, **controls)
        finally:
            self.train(was_training)

    def on_fit_start(self) -> None:
        # after a resume the pools hold the checkpoint's CPU tensors: every swap would be a
        # blocking host→device copy
        for pool in self.pools.values():
            pool.to(self.device)

    def on_train_end(self) -> None:
        self.settle_nonfinite()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # a save outside the boundaries the guard knows: stop before writing a poisoned run,
        # and keep the recorded step count to the weight updates
        masked = self.settle_nonfinite()
        if masked:
            checkpoint["global_step"] = self.trainer.global_step
            checkpoint["loops"] = self.trainer._checkpoint_connector._get_loops_state_dict()
        cls = type(self)
        checkpoint["defectsynth"] = {
            "model_class": f"{cls.__module__}.{cls.__qualname__}",
            "model_name": self.model_name,
        }
        checkpoint["rng_states"] = rng_states()
        if self.pools:
            checkpoint["image_pools"] = {k: pool.state_dict() for k, pool in self.pools.items()}
        checkpoint["low_data"] = {
            "batches_seen": self.batches_seen,
            "d_augment": self.d_augment.state_dict(),
            # a resume mid-epoch still logs the whole epoch's means
            "epoch_losses": [
                [list(names), sums.cpu(), counts.cpu()]
                for names, (sums, counts) in self._epoch_losses.items()
            ],
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._drop_dead_optimizer_states(checkpoint)
        for key, state in (checkpoint.get("image_pools") or {}).items():
            if key in self.pools:
                self.pools[key].load_state_dict(state)
        if "rng_states" in checkpoint:
            set_rng_states(checkpoint["rng_states"])
        state = checkpoint.get("low_data") or {}
        self.batches_seen = int(state.get("batches_seen", 0))
        if "d_augment" in state:
            self.d_augment.load_state_dict(state["d_augment"])
        self._epoch_losses = {
            tuple(names): (sums, counts) for names, sums, counts in state.get("epoch_losses", [])
        }

    def _drop_dead_optimizer_states(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint whose optimisers still held the dead parameters (written before they
        were left out) resumes: their entries are dropped and the rest renumbered, so every
        live parameter keeps its Adam moments."""
        states = checkpoint.get("optimizer_states")
        if not states:
            return
        live = self.live_groups()
        for state, (name, params) in zip(states, self.optimizer_groups().items(), strict=False):
            full = list(params)
            groups = state.get("param_groups") or []
            if len(groups) != 1 or len(groups[0]["params"]) != len(full):
                continue  # already without them, or not this layout
            if len(live[name]) == len(full):
                continue
            alive = {id(p) for p in live[name]}
            old_ids = groups[0]["params"]
            renumber = {
                old: new
                for new, old in enumerate(
                    i for i, p in zip(old_ids, full, strict=True) if id(p) in alive
                )
            }
            state["state"] = {
                renumber[i]: value for i, value in state["state"].items() if i in renumber
            }
            groups[0]["params"] = list(range(len(renumber)))
            log.info(
                "optimizer %s: dropped the state of %d parameters that feed no loss",
                name,
                len(full) - len(renumber),
            )


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the DDP ranks, in place, queued on the device. Not Lightning's
    ``strategy.reduce``: that puts a barrier first, which under NCCL blocks the host until the
    device has caught up — a host sync on every call."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
    return tensor


def rng_states() -> dict[str, Any]:
    """Global RNG states as tensors and plain values (loadable with ``weights_only``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
