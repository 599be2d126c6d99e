"""OmegaConf resolvers used by the configs in ``conf/``; imported by every entry point."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import torch
from omegaconf import ListConfig, OmegaConf

FAST_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@cache
def cpu_has_fast_bf16() -> bool:
    """bf16 matrix units (AMX / AVX512-BF16); without them bf16 on the CPU is slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return any(flag in flags for flag in FAST_BF16_CPU_FLAGS)


def fast_precision(accelerator: str = "auto") -> str:
    """``bf16-mixed`` where the device computes bf16 fast, else ``32-true``.

    Measured here: the generator's forward + backward at 256² runs 2.8× faster in bf16 on an
    AMX CPU. Weights, optimiser states and the losses stay in fp32 (autocast).
    """
    use_cuda = accelerator in ("gpu", "cuda") or (
        accelerator == "auto" and torch.cuda.is_available()
    )
    if use_cuda:
        return (
            "bf16-mixed"
            if torch.cuda.is_available() and torch.cuda.is_bf16_supported()
            else "32-true"
        )
    return "bf16-mixed" if cpu_has_fast_bf16() else "32-true"


def joined_names(value: Any) -> str:
    """``crack`` → ``crack``; ``[crack, glue_strip]`` → ``crack+glue_strip``: a defect list as it
    goes into run names, folders and W&B groups (no brackets, quotes or spaces)."""
    if isinstance(value, (list, tuple, ListConfig)):
        return "+".join(str(v) for v in value)
    return str(value)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("fast_precision"):
        OmegaConf.register_new_resolver("fast_precision", fast_precision)
    if not OmegaConf.has_resolver("add"):
        OmegaConf.register_new_resolver("add", lambda *xs: sum(xs))
    if not OmegaConf.has_resolver("names"):
        OmegaConf.register_new_resolver("names", joined_names)
    if not OmegaConf.has_resolver("not"):
        OmegaConf.register_new_resolver("not", lambda x: not x)
    if not OmegaConf.has_resolver("round"):
        OmegaConf.register_new_resolver("round", lambda x: round(x))


register_resolvers()
