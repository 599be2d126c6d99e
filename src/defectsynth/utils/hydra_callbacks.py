"""Hydra callbacks: a multirun summary listing every job, its overrides and why it failed."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from defectsynth.errors import ConfigError
from defectsynth.utils.io import check_output_dir, write_text

log = logging.getLogger(__name__)


class OutputDirCheck(Callback):
    """Check the output folder before Hydra creates it: an unwritable folder or a full disk
    is one clear line and exit code 2, not a traceback from deep inside Hydra."""

    def _check(self, folder: str) -> None:
        try:
            check_output_dir(Path(folder))
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.sweep.dir)


class SweepSummary(Callback):
    """Rewrites ``<sweep dir>/summary.{json,md}`` after every job of a multirun, so the summary
    is complete even when the sweep is interrupted; one failing job never stops the others
    (Hydra's launcher runs them all and raises the first failure at the end)."""

    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        failed = job_return.status == JobStatus.FAILED
        value = job_return._return_value
        self.jobs.append(
            {
                "job": int(config.hydra.job.num),
                "overrides": list(job_return.overrides or []),
                "status": "failed" if failed else "completed",
                "error": f"{type(value).__name__}: {value}" if failed else None,
                "result": None if failed or value is None else value,
                "output_dir": str(config.hydra.runtime.output_dir),
            }
        )
        if failed:
            log.error("job %d failed: %s", config.hydra.job.num, self.jobs[-1]["error"])
        self.write(Path(config.hydra.sweep.dir))

    def write(self, sweep_dir: Path) -> None:
        n_failed = sum(j["status"] == "failed" for j in self.jobs)
        write_text(json.dumps(self.jobs, indent=2, default=str) + "\n", sweep_dir / "summary.json")
        lines = [
            f"# Sweep summary: {len(self.jobs)} job(s), {n_failed} failed",
            "",
            "| job | status | overrides | error |",
            "|---|---|---|---|",
        ]
        for j in self.jobs:
            error = (j["error"] or "").replace("\n", " ").replace("|", "\\|")[:300]
            lines.append(f"| {j['job']} | {j['status']} | {' '.join(j['overrides'])} | {error} |")
        write_text("\n".join(lines) + "\n", sweep_dir / "summary.md")
