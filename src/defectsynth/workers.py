"""Cells of a study (``make table6``, ``make table5``, ``make demo``) trained in parallel worker
processes: small networks on a few CPU cores use a core better alone than several together."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def run_cells(
    cfg: DictConfig,
    cells: list[tuple],
    out: Path,
    run_one: Callable[..., dict[str, Any]],
    done: Callable[..., bool] = lambda *cell: False,
) -> list[dict[str, Any]] | None:
    """``run_one(*cell)`` for every cell, in order. With ``jobs`` > 1 the cells are first trained
    by worker processes (:func:`run_shards`); ``run_one`` then reads each cell's saved result
    back (every study's ``run_one`` reuses a finished cell). A worker (``shard=i/n``) runs its
    share of the cells not ``done`` yet and returns None: the parent writes the table."""
    # the cells still to train (``done``: a finished cell's result is on disk), dealt out evenly
    pending = [cell for cell in cells if not done(*cell)]
    shard = cfg.get("shard")
    if shard is not None:
        index, count = (int(v) for v in str(shard).split("/"))
        for cell in pending[index::count]:
            run_one(*cell)
        return None
    jobs = min(int(cfg.get("jobs") or 1), len(pending))
    if jobs > 1:
        run_shards(jobs, out)
    return [run_one(*cell) for cell in cells]


def run_shards(jobs: int, out: Path) -> None:
    """Train the cells in ``jobs`` worker processes (this script again, ``shard=i/jobs``, the
    same overrides and output folder), each with its share of the cores: small networks use
    a core better alone than two cores together. A failed worker stops the study with its log
    (``out/shard<i>.log``) named."""
    overrides = [
        o for o in HydraConfig.get().overrides.task if not o.startswith(("jobs=", "shard="))
    ]
    threads = max(1, len(os.sched_getaffinity(0)) // jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    procs = []
    for index in range(jobs):
        log_file = out / f"shard{index}.log"
        args = [
            sys.executable,
            str(Path(sys.argv[0]).resolve()),
            *overrides,
            "jobs=1",
            f"shard={index}/{jobs}",
            f"hydra.run.dir={out}",
            "hydra.job_logging.root.handlers=[console]",  # its output goes to shard<i>.log
        ]
        with open(log_file, "w") as handle:
            procs.append(
                (subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=env), log_file)
            )
    log.info("training %d shards in parallel (%d threads each): logs %s", jobs, threads, out)
    failed = [str(path) for proc, path in procs if proc.wait() != 0]
    if failed:
        raise RuntimeError(f"workers failed; see {failed}")
