"""What every entry point shares: a clean one-line error instead of a traceback for user errors."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from defectsynth.errors import DefectSynthError

log = logging.getLogger("defectsynth")


def user_error(exc: BaseException) -> DefectSynthError | None:
    """The DefectSynthError behind ``exc``, also when a library wrapped it (Hydra's
    ``instantiate`` re-raises constructor errors as InstantiationException)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, DefectSynthError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_task(task: Callable[[DictConfig], dict[str, float]], cfg: DictConfig) -> float | None:
    """Run ``task``; return ``cfg.optimized_metric`` from its metrics for Hydra sweepers."""
    try:
        metrics = task(cfg)
    except Exception as exc:
        err = user_error(exc)
        if err is None:
            raise
        log.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        if in_multirun():
            raise err from None  # Hydra records the failed job and runs the others
        raise SystemExit(2) from None
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        raise SystemExit(
            f"error: optimized_metric={name!r} was not produced; got {sorted(metrics)}"
        )
    return metrics[name]
