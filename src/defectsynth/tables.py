"""The job behind ``src/tables.py``: train → generate → evaluate per cell, then the paper's
tables (Table 2: method × product; Table 3: the ablation) as Markdown and CSV.

Each cell runs in its own folder (``<out>/<model>-<ablation>-<product>/{train,evaluate}``); a
cell whose ``metrics.json`` exists is reused, so an interrupted table resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose
from omegaconf import DictConfig, open_dict

from defectsynth.evaluation import MetricSuite, Networks, csv_text, markdown_table, report_row
from defectsynth.evaluation import evaluate as evaluate_job
from defectsynth.report import build_report, build_table_report
from defectsynth.synthesis import resolve_device
from defectsynth.training import train as train_job
from defectsynth.utils.grids import side_by_side
from defectsynth.utils.io import write_text
from defectsynth.workers import run_cells

log = logging.getLogger(__name__)

METHOD_NAMES = {
    "dcgan4": "DCGAN (4-channel)",
    "cyclegan4": "CycleGAN (4-channel)",
    "cut": "CUT",
    "fastcut": "FastCUT",
    "negcut": "NEGCUT",
    "defect_gan": "Proposed approach",
    "defect_gan_control": "Controllable (beyond the paper)",
}
SAMPLE_GRID = Path("evaluate") / "samples" / "grid.png"  # generate.py's grid, per cell
ABLATION_ROWS = {  # Table 3: row letter, L_C, L_B
    "no_LC_LB": ("(a)", "✗", "✗"),
    "no_LB": ("(b)", "✓", "✗"),
    "no_LC": ("(c)", "✗", "✓"),
    "full": ("(d)", "✓", "✓"),
}


@dataclass(frozen=True)
class Cell:
    model: str
    ablation: str
    product: str

    @property
    def name(self) -> str:
        return f"{self.model}-{self.ablation}-{self.product}"


def finish_wandb() -> None:
    """In-process runs share one W&B process: close a run before the next starts."""
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.finish()


def composed(config: str, overrides: list[str], output_dir: Path, **values: str) -> DictConfig:
    """Compose ``config``; paths are set afterwards (the override grammar would parse them)."""
    cfg = compose(config_name=config, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        for key, value in values.items():
            cfg[key] = value
    return cfg


def run_cell(cfg: DictConfig, cell: Cell, out: Path, networks: Networks) -> dict[str, Any]:
    folder = out / cell.name
    metrics_file = folder / "evaluate" / "metrics.json"
    if metrics_file.is_file():
        log.info("reusing %s", metrics_file)
        return json.loads(metrics_file.read_text())
    start = time.perf_counter()
    train_cfg = composed(
        "train",
        [
            f"model={cell.model}",
            f"ablation={cell.ablation}",
            f"product={cell.product}",
            f"experiment={cfg.preset}",
            *cfg.train_overrides,
        ],
        folder / "train",
        model_name=cell.model,
        run_name=cell.name,
    )
    train_job(train_cfg)
    finish_wandb()
    trained = time.perf_counter()
    eval_cfg = composed(
        "evaluate",
        list(cfg.eval_overrides),
        folder / "evaluate",
        ckpt=str(folder / "train" / "checkpoints" / "last.ckpt"),
    )
    evaluate_job(eval_cfg, networks)
    finish_wandb()
    build_report(folder / "train", cache_dir=str(train_cfg.paths.cache_dir))
    report = json.loads(metrics_file.read_text())
    report["meta"]["train_seconds"] = round(trained - start, 1)
    report["meta"]["evaluate_seconds"] = round(time.perf_counter() - trained, 1)
    write_text(json.dumps(report, indent=2) + "\n", metrics_file)
    return report


def _is_interval_or_size(key: str) -> bool:
    return key.endswith(("_lo", "_hi")) or key == "fid2048_n_real"


def _with_average(rows: list[dict[str, Any]], label: dict[str, str]) -> list[dict[str, Any]]:
    """The group's rows and their mean. The mean carries no interval: the products' resamples
    are independent draws of different sets, so no resample of the average exists."""
    if len(rows) < 2:
        return rows
    average = dict(label)
    for key in rows[0]:
        values = [r[key] for r in rows if isinstance(r.get(key), float)]
        if values and key not in label and not _is_interval_or_size(key):
            average[key] = sum(values) / len(values)
    return [*rows, average]


def build_rows(cfg: DictConfig, reports: dict[Cell, dict[str, Any]]) -> tuple[list, tuple]:
    rows: list[dict[str, Any]] = []
    if cfg.table.layout == "ablation":
        for cell, report in reports.items():
            letter, lc, lb = ABLATION_ROWS[cell.ablation]
            rows.append(
                {
                    "Model": letter,
                    "Product": report["meta"]["product"],
                    "L_GAN + L_cycle + L_id": "✓",
                    "L_C": lc,
                    "L_B": lb,
                    **report_row(report),
                }
            )
        return rows, ("Model", "Product", "L_GAN + L_cycle + L_id", "L_C", "L_B")
    for model in cfg.table.models:
        for ablation in cfg.table.ablations:
            method = METHOD_NAMES.get(model, model)
            method += "" if ablation == "full" else f" ({ablation})"
            group = [
                {
                    "Method": method,
                    "Product (Defect)": report["meta"]["product"],
                    **report_row(report),
                }
                for cell, report in reports.items()
                if (cell.model, cell.ablation) == (model, ablation)
            ]
            rows += _with_average(group, {"Method": method, "Product (Defect)": "Avg"})
    return rows, ("Method", "Product (Defect)")


def tables(cfg: DictConfig) -> dict[str, float]:
    out = Path(cfg.paths.output_dir)
    cells = [
        Cell(model, ablation, product)
        for model in cfg.table.models
        for ablation in cfg.table.ablations
        for product in cfg.table.products
    ]
    start = time.perf_counter()
    # load the metric networks before training anything: a missing weight file stops here
    probe = composed("evaluate", list(cfg.eval_overrides), out)
    networks = MetricSuite(probe.metrics, device=resolve_device(probe.device)).prepare().networks
    results = run_cells(
        cfg,
        [(cell,) for cell in cells],
        out,
        lambda c: run_cell(cfg, c, out, networks),
        done=lambda c: (out / c.name / "evaluate" / "metrics.json").is_file(),
    )
    if results is None:
        return {}
    reports = dict(zip(cells, results, strict=True))
    rows, keys = build_rows(cfg, reports)
    name = cfg.table.name
    level = float(probe.metrics.bootstrap.level)
    text = f"# {cfg.table.title} (scale: {cfg.preset})\n\n" + markdown_table(rows, keys, level)
    write_text(text, out / f"{name}.md")
    write_text(csv_text(rows), out / f"{name}.csv")
    # the first picture a user sees: every model's samples of a product next to each other
    grids = side_by_side(
        [
            {"variant": c.name, "product": c.product, "grid": str(out / c.name / SAMPLE_GRID)}
            for c in cells
        ],
        list(cfg.table.products),
        [c.name for c in cells],
        out,
    )
    page = build_table_report(
        out,
        str(cfg.table.title),
        text,
        grids,
        [out / c.name / "train" / "report.html" for c in cells],
    )
    log.info("%s written to %s in %.0f s", name, out, time.perf_counter() - start)
    print(text)
    for path in grids:
        print(f"grids: {path}")
    print(f"report: {page} (the table, the grids side by side, every run's report)")
    for cell in cells:
        print(f"report: {out / cell.name / 'train' / 'report.html'}")
    return {}
