"""Data-efficient discriminator training: differentiable augmentation of everything a
discriminator sees (DiffAugment, Zhao et al. 2020) with a fixed or adaptive probability (ADA,
Karras et al. 2020), and the overfitting signal r_t that drives the adaptation.

With 8–14 real defect images every discriminator memorises its real set within a few hundred
batches (measured at demo scale: D_Y's loss → 0.002, D_C's → 0.045), after which its gradient
into G is large and uninformative. Showing D only randomly transformed real *and* fake inputs —
drawn from one distribution, and differentiably so that G's step sees the same D — enlarges the
real set without leaking the transforms into G's outputs (G is rewarded for fooling D on
augmented fakes, which it can only do by producing realistic un-augmented ones).

Channels: the first three channels of a discriminator input are the RGB image in [-1, 1];
any further channel (D_C's mask, the 4-channel baselines' mask) only takes the *geometric* and
cut-out transforms, drawn once for all channels, so image and mask stay aligned.

The transforms are kornia's (differentiable, batched, per-sample parameters). Kornia draws from
torch's global CPU RNG; the draws here run on a private generator swapped in around each call
(and saved in checkpoints), so other users of the global RNG — e.g. the DataLoader drawing a base
seed whenever it starts an iterator, which a resumed run does at a different moment — cannot
shift the sequence of transforms, and exact resume stays exact.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import kornia.augmentation as K
import torch
from torch import nn

from defectsynth.errors import ConfigError
from defectsynth.models.options import merged_options

MODES = ("none", "diffaugment", "ada")
OPS = ("color", "translation", "affine", "cutout")
AUGMENT_DEFAULTS: dict[str, Any] = {
    "mode": "none",
    # probability of each transform: fixed (diffaugment) or the starting value (ada)
    "p": 0.0,
    "ops": ["color", "translation", "cutout"],
    # ADA: target of r_t = E[sign(D(real) − threshold)], checked every ``interval`` batches;
    # p moves by interval / speed_batches per check (so 0 → 1 takes ``speed_batches`` batches)
    "target": 0.6,
    "interval": 4,
    "speed_batches": 500,
    "p_max": 1.0,
    # strengths, as fractions of the image side (translation, cut-out) or factors (colour)
    "translation": 0.125,
    "cutout": 0.5,
    "brightness": 0.5,
    "contrast": 0.5,
    "saturation": 1.0,
    "rotation": 10.0,
    "scale": 0.2,
}


class _Pipeline(nn.Module):
    """The transforms of one discriminator, with one shared probability ``p``."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        super().__init__()
        o = options
        ops = list(o["ops"])
        self.color = (
            nn.ModuleList(
                [
                    # additive brightness and multiplicative contrast/saturation as in
                    # DiffAugment; no clipping, so the gradient reaches every pixel
                    K.RandomBrightness(
                        (1 - o["brightness"], 1 + o["brightness"]), clip_output=False
                    ),
                    K.RandomContrast((1 - o["contrast"], 1 + o["contrast"]), clip_output=False),
                    K.RandomSaturation((max(0.0, 1 - o["saturation"]), 1 + o["saturation"])),
                ]
            )
            if "color" in ops
            else nn.ModuleList()
        )
        geometric: list[nn.Module] = []
        if "translation" in ops:
            t = float(o["translation"])
            # reflection padding: a zero (grey) border would be a give-away of the transform
            geometric.append(
                K.RandomAffine(degrees=0.0, translate=(t, t), padding_mode="reflection")
            )
        if "affine" in ops:
            s = float(o["scale"])
            geometric.append(
                K.RandomAffine(
                    degrees=float(o["rotation"]), scale=(1 - s, 1 + s), padding_mode="reflection"
                )
            )
        self.geometric = nn.ModuleList(geometric)
        side = float(o["cutout"])
        # a square of ``side`` × ``side`` of the image (DiffAugment: half the side), zeroed in
        # every channel (mid-grey for the image, "no defect" for a mask)
        self.cutout = (
            K.RandomErasing(scale=(side * side, side * side), ratio=(1.0, 1.0), value=0.0)
            if "cutout" in ops
            else None
        )
        self.set_p(float(o["p"]))

    def transforms(self) -> list[nn.Module]:
        return [*self.color, *self.geometric, *([self.cutout] if self.cutout else [])]

    def set_p(self, p: float) -> None:
        self.p = p
        for t in self.transforms():
            t.p = p  # kornia reads ``p`` on every call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p <= 0.0:
            return x  # no RNG drawn: p = 0 behaves exactly like no augmentation
        image, extra = x[:, :3], x[:, 3:]
        if len(self.color):
            # kornia's colour ops work on [0, 1]
            image = (image + 1) / 2
            for t in self.color:
                image = t(image)
            image = image * 2 - 1
        x = torch.cat([image, extra], dim=1) if extra.shape[1] else image
        # one geometric draw for all channels keeps the mask on its image
        for t in self.geometric:
            x = t(x)
        if self.cutout is not None:
            x = self.cutout(x)
        return x


class DiscriminatorAugment:
    """Augments every discriminator input and tracks each discriminator's overfitting.

    ``augment(name, x)`` is called on real and fake inputs alike, in the G step and the D step;
    ``observe(name, pred_real)`` records D's scores on (augmented) reals after each D step;
    ``update()`` (once per batch, before the batch) moves ADA's per-discriminator p towards the
    target r_t. With ``mode=none`` ``augment`` is the identity, but r_t is still measured and
    logged: it is the overfitting signal of the plain model too.
    """

    def __init__(
        self, options: Mapping[str, Any] | None = None, option: str = "model.d_augment"
    ) -> None:
        self.options = merged_options(AUGMENT_DEFAULTS, options, option)
        o = self.options
        if o["mode"] not in MODES:
            raise ConfigError(f"{option}.mode={o['mode']!r}; expected one of {list(MODES)}")
        unknown = sorted(set(o["ops"]) - set(OPS))
        if unknown:
            raise ConfigError(f"{option}.ops has {unknown}; expected some of {list(OPS)}")
        for key in ("p", "target", "p_max"):
            if not 0.0 <= float(o[key]) <= 1.0:
                raise ConfigError(f"{option}.{key}={o[key]} must lie in [0, 1]")
        if int(o["interval"]) < 1 or float(o["speed_batches"]) <= 0:
            raise ConfigError(f"{option}.interval must be ≥ 1 and speed_batches > 0")
        if o["mode"] == "none" and float(o["p"]) > 0:
            raise ConfigError(f"{option}.p={o['p']} with mode=none; choose diffaugment or ada")
        if o["mode"] == "diffaugment" and float(o["p"]) == 0:
            raise ConfigError(f"{option}.mode=diffaugment needs p > 0 (DiffAugment: p=1)")
        self.mode: str = o["mode"]
        self.pipelines: dict[str, _Pipeline] = {}
        # private RNG, seeded from torch's (seed_everything fixes it); mode=none draws nothing,
        # so the paper's runs are unchanged
        self.rng: torch.Generator | None = None
        if self.mode != "none":
            self.rng = torch.Generator().manual_seed(int(torch.randint(2**31 - 1, (1,))))
        # per discriminator: [Σ sign(D(real) − t), number of scores, number of D steps] since
        # the last ADA check, and the same over this epoch (for logging)
        self.pending: dict[str, list[float]] = {}
        self.epoch: dict[str, list[float]] = {}

    # ------------------------------------------------------------------ augmentation
    def pipeline(self, name: str) -> _Pipeline:
        if name not in self.pipelines:
            self.pipelines[name] = _Pipeline(self.options)
        return self.pipelines[name]

    def augment(self, name: str, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "none" or self.rng is None:
            return x
        # kornia samples its parameters on the CPU from the global RNG: lend it ours
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.rng.get_state())
            out = self.pipeline(name)(x)
            self.rng.set_state(torch.get_rng_state())
        return out

    def p(self, name: str) -> float:
        return self.pipeline(name).p if self.mode != "none" else 0.0

    # ------------------------------------------------------------------ overfitting signal
    def observe(self, name: str, pred_real: torch.Tensor, threshold: float = 0.5) -> None:
        """Record D's scores on reals: r_t = E[sign(D(real) − threshold)] (threshold 0.5 for
        least-squares targets 1/0, 0 for logits); +1 means D is sure of every real patch."""
        # the sum stays on the device (an exact integer): it is read only where p is adapted
        # (ADA, every ``interval`` batches) and at epoch end, never per step
        total = torch.sign(pred_real.detach().float() - threshold).sum(dtype=torch.int64)
        count = float(pred_real.numel())
        for store in (self.pending, self.epoch):
            acc = store.setdefault(name, [0, 0.0, 0])
            acc[0] = acc[0] + total
            acc[1] += count
            acc[2] += 1

    def update(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """ADA: every ``interval`` observed D steps, move that D's p by ±interval/speed_batches
        towards r_t = target (so p can cross [0, 1] in ``speed_batches`` batches). ``reduce``
        sums the statistics over DDP ranks, so every rank keeps the same p."""
        if self.mode != "ada":
            self.pending.clear()
            return
        o = self.options
        interval = int(o["interval"])
        for name in sorted(self.pending):
            total, count, steps = self.pending[name]
            if steps < interval:
                continue
            stats = torch.tensor([float(total), count], dtype=torch.float64)
            if reduce is not None:
                stats = reduce(stats)
            r_t = float(stats[0] / stats[1]) if float(stats[1]) > 0 else 0.0
            direction = 1.0 if r_t > float(o["target"]) else -1.0
            pipe = self.pipeline(name)
            new_p = pipe.p + direction * interval / float(o["speed_batches"])
            pipe.set_p(min(max(new_p, 0.0), float(o["p_max"])))
            self.pending[name] = [0, 0.0, 0]

    def epoch_metrics(self) -> dict[str, float]:
        """This epoch's r_t per discriminator and the current p (mode ≠ none)."""
        out = {f"daug/rt_{n}": float(s) / c for n, (s, c, _) in sorted(self.epoch.items()) if c}
        if self.mode != "none":
            out.update({f"daug/p_{n}": self.p(n) for n in sorted(self.epoch)})
        return out

    def reset_epoch(self) -> None:
        self.epoch.clear()

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        return {
            "p": {n: pipe.p for n, pipe in self.pipelines.items()},
            "pending": {n: _plain(v) for n, v in self.pending.items()},
            "epoch": {n: _plain(v) for n, v in self.epoch.items()},
            "rng": self.rng.get_state() if self.rng is not None else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, p in (state.get("p") or {}).items():
            self.pipeline(name).set_p(float(p))
        # sums of signs are integers: kept as such, they add exactly to the device's int64 sums
        self.pending = {n: _counted(v) for n, v in (state.get("pending") or {}).items()}
        self.epoch = {n: _counted(v) for n, v in (state.get("epoch") or {}).items()}
        if self.rng is not None and state.get("rng") is not None:
            self.rng.set_state(state["rng"])


def _plain(acc: list[Any]) -> list[float | int]:
    """An accumulator as checkpointed before the sums stayed on the device: plain numbers."""
    total, count, steps = acc
    return [float(total), float(count), int(steps)]


def _counted(acc: list[Any]) -> list[Any]:
    total, count, steps = acc
    return [round(float(total)), float(count), int(steps)]
