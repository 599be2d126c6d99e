"""A self-contained ``report.html`` for a training run: the config, loss curves, the metrics
table and a gallery of source | synthetic | mask overlay next to real defects.

Everything is inlined (SVG plots, PNGs as data URIs), so the page opens from disk in any browser
with no server and no network.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from defectsynth.control_figure import codes_by_placements
from defectsynth.errors import DataError
from defectsynth.evaluation import flatten
from defectsynth.generation import datamodule_from
from defectsynth.synthesis import is_controllable, load_model
from defectsynth.utils.io import write_text
from defectsynth.utils.visualize import overlay, to_uint8

log = logging.getLogger(__name__)

CURVES = {  # panel title → loss-curve columns of metrics.csv (epoch means)
    "Generator (weighted total)": ["train/loss_G_total_epoch"],
    "Generator terms": [
        "train/loss_gan_G_epoch",
        "train/loss_gan_F_epoch",
        "train/loss_cycle_epoch",
        "train/loss_identity_epoch",
        "train/loss_coherence_epoch",
        "train/loss_background_epoch",
        "train/loss_nce_epoch",
    ],
    "Discriminators": [
        "train/loss_D_X_epoch",
        "train/loss_D_Y_epoch",
        "train/loss_D_C_epoch",
        "train/loss_D_epoch",
    ],
    # the discriminators' overfitting signal r_t = E[sign(D(real) − ½)] and ADA's p (issue 15)
    "Overfitting signal (r_t) and augmentation p": [
        "daug/rt_D_X",
        "daug/rt_D_Y",
        "daug/rt_D_C",
        "daug/rt_D",
        "daug/p_D_X",
        "daug/p_D_Y",
        "daug/p_D_C",
        "daug/p_D",
    ],
}
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6rem; }
h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5rem 0; } td, th { border: 1px solid #ccc;
padding: .25rem .6rem; text-align: right; } th { background: #f4f4f4; }
pre { background: #f7f7f7; padding: 1rem; overflow: auto; max-height: 28rem; font-size: .8rem; }
.gallery { display: grid; grid-template-columns: repeat(3, 1fr); gap: .5rem; }
.gallery figure { margin: 0; } .gallery img { width: 100%; image-rendering: pixelated; }
figcaption { font-size: .8rem; color: #555; } .plots { display: flex; flex-wrap: wrap; gap: 1rem; }
.note { color: #666; font-size: .9rem; }
.studies figure { margin: .5rem 0; } .studies img { max-width: 100%; }
"""


def png_data_uri(image: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def read_metrics_csv(run: Path) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for path in sorted(run.glob("csv/version_*/metrics.csv")):
        with open(path, newline="", encoding="utf-8") as fh:
            rows += list(csv.DictReader(fh))
    return rows


def loss_plots(rows: list[dict[str, str]]) -> list[str]:
    """Inline SVG loss curves (matplotlib, Agg) of the per-epoch means."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    svgs = []
    for title, columns in CURVES.items():
        fig, ax = plt.subplots(figsize=(5, 3.2))
        drawn = False
        for column in columns:
            points = [
                (float(r["epoch"]), float(r[column]))
                for r in rows
                if r.get(column) not in (None, "")
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(
                    np.asarray(xs) + 1,
                    ys,
                    marker="o",
                    markersize=3,
                    label=column.split("/")[-1].removeprefix("loss_").removesuffix("_epoch"),
                )
                drawn = True
        if not drawn:
            plt.close(fig)
            continue
        ax.set(title=title, xlabel="epoch", ylabel="value" if "r_t" in title else "loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        buffer = io.StringIO()
        fig.tight_layout()
        fig.savefig(buffer, format="svg")
        plt.close(fig)
        svg = buffer.getvalue()
        svgs.append(svg[svg.index("<svg") :])  # drop the XML prolog: inline in HTML
    return svgs


def metrics_table(report: dict[str, Any]) -> str:
    row = flatten(report["metrics"])
    cells = "".join(f"<th>{html.escape(k)}</th>" for k in row)
    intervals = report.get("intervals") or {}

    def cell(key: str, v: float | None) -> str:
        text = "–" if v is None else f"{v:.4g}"
        if v is not None and intervals.get(key):
            lo, hi = intervals[key]
            text += f" [{lo:.4g}, {hi:.4g}]"  # the bootstrap interval of metrics.json
        return f"<td>{text}</td>"

    values = "".join(cell(k, v) for k, v in row.items())
    skipped = "".join(
        f"<li><b>{html.escape(k)}</b>: {html.escape(v.splitlines()[0])}</li>"
        for k, v in report.get("skipped", {}).items()
    )
    note = f"<p class='note'>Not computed:</p><ul class='note'>{skipped}</ul>" if skipped else ""
    return f"<table><tr>{cells}</tr><tr>{values}</tr></table>{note}"


def find_metrics(run: Path) -> dict[str, Any] | None:
    for path in (run / "evaluate" / "metrics.json", run.parent / "evaluate" / "metrics.json"):
        if path.is_file():
            return json.loads(path.read_text())
    return None


def _load_run(run: Path, device: str, cache_dir: str | None) -> tuple[Any, Any]:
    """The model of a run's last checkpoint and the data it was trained on."""
    ckpt = run / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        raise DataError(f"{run} holds no checkpoints/last.ckpt; expected a training run folder")
    model, checkpoint = load_model(ckpt, device)
    datamodule = datamodule_from(checkpoint, {}, cache_dir)
    datamodule.setup()
    return model, datamodule


def gallery(
    run: Path, n: int, device: str = "cpu", cache_dir: str | None = None
) -> tuple[list[str], list[str]]:
    """Figures for ``n`` synthetic samples (from the run's last checkpoint) and the real
    training defects, each as image | mask overlay."""
    return _gallery(*_load_run(run, device, cache_dir), n, device)


def _gallery(model: Any, datamodule: Any, n: int, device: str) -> tuple[list[str], list[str]]:
    split = "normal_test" if datamodule.split.normal_test else "normal_train"
    sources = datamodule.eval_dataset(split)
    x = torch.stack([sources[i]["image"] for i in range(min(n, len(sources)))])
    image, mask = model.synthesize(x.to(device))
    src, syn = to_uint8(x), to_uint8(image)
    synthetic = []
    for i in range(len(x)):
        parts = [src[i], syn[i]]
        caption = "source | synthetic"
        if mask is not None:
            parts.append(overlay(syn[i : i + 1], (mask[i : i + 1, 0] >= 0.5).cpu().numpy())[0])
            caption += " | predicted mask"
        synthetic.append(_figure(np.concatenate(parts, axis=1), caption))
    reals = datamodule.eval_dataset("defect_train")
    real = []
    for i in range(min(n, len(reals))):
        item = reals[i]
        picture = to_uint8(item["image"][None])
        tinted = overlay(picture, item["mask"][None, 0].numpy() > 0)
        real.append(
            _figure(
                np.concatenate([picture[0], tinted[0]], axis=1), "real defect | ground-truth mask"
            )
        )
    return synthetic, real


def control_section(model: Any, datamodule: Any) -> str:
    """A controllable model's codes × placements figure (``control_figure``); empty for any
    other model."""
    if not is_controllable(model):
        return ""
    figure = codes_by_placements(model, datamodule)
    caption = (
        "one source image × 8 noise codes (columns) × 3 requested masks (blocks: random, on the "
        "foreground, a held-out test mask); per block, top: source with the request tinted | "
        "synthetic images; bottom: the request | the same images with the predicted mask tinted"
    )
    return (
        "<h2>Noise codes × placements</h2>"
        f"<figure><img alt='codes by placements' src='{png_data_uri(figure)}' "
        "style='max-width: 100%; image-rendering: pixelated'>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def study_figures(run: Path) -> list[str]:
    """The curves the inspection / segmentation studies left in ``<run>/studies/`` (their
    real-vs-synthetic plots of this generator), newest name order."""
    from PIL import Image

    figures = []
    for path in sorted((run / "studies").glob("*.png")):
        with Image.open(path) as image:
            figures.append(_figure(np.asarray(image.convert("RGB")), path.stem))
    return figures


def _figure(image: np.ndarray, caption: str) -> str:
    return (
        f"<figure><img alt='{html.escape(caption)}' src='{png_data_uri(image)}'>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def build_report(
    run: Path | str, n_samples: int = 6, device: str = "cpu", cache_dir: str | None = None
) -> Path:
    """Write ``<run>/report.html`` and return its path."""
    run = Path(run)
    if not run.is_dir():
        raise DataError(f"run={str(run)!r} is not a folder; expected a training run folder")
    config_path = run / ".hydra" / "config.yaml"
    config_text = config_path.read_text() if config_path.is_file() else "(no .hydra/config.yaml)"
    rows = read_metrics_csv(run)
    plots = loss_plots(rows) if rows else []
    metrics = find_metrics(run)
    model, datamodule = _load_run(run, device, cache_dir)
    synthetic, real = _gallery(model, datamodule, n_samples, device)
    studies = study_figures(run)  # src/inspection.py / src/segmentation.py curves
    name = f"{run.parent.name}/{run.name}" if run.name == "train" else run.name
    title = f"defectsynth report — {name}"
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        "<h2>Samples</h2><div class='gallery'>" + "".join(synthetic) + "</div>",
        "<h2>Real defects (training set)</h2><div class='gallery'>" + "".join(real) + "</div>",
        control_section(model, datamodule),
        "<h2>Metrics</h2>"
        + (
            metrics_table(metrics)
            if metrics
            else "<p class='note'>No metrics.json yet: run src/evaluate.py ckpt=… for this run.</p>"
        ),
        *(
            ["<h2>Downstream studies</h2><div class='studies'>" + "".join(studies) + "</div>"]
            if studies
            else []
        ),
        "<h2>Loss curves</h2><div class='plots'>"
        + ("".join(plots) or "<p class='note'>No CSV logs in this run (logger=none?).</p>")
        + "</div>",
        f"<h2>Configuration</h2><pre>{html.escape(config_text)}</pre>",
    ]
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        + "\n".join(sections)
        + "</body></html>\n"
    )
    out = run / "report.html"
    write_text(page, out)
    log.info("report written to %s", out)
    return out


def markdown_to_html(text: str) -> str:
    """The Markdown our tables write (a ``#`` title, paragraphs, pipe tables) as HTML."""
    parts: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if table:
            head, *body = table
            rows = [r for r in body if not all(set(c) <= set("-: ") for c in r)]
            parts.append(
                "<table><tr>"
                + "".join(f"<th>{html.escape(c)}</th>" for c in head)
                + "</tr>"
                + "".join(
                    "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                    for r in rows
                )
                + "</table>"
            )
            table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            table.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        flush()
        if line.startswith("#"):
            parts.append(f"<h2>{html.escape(line.lstrip('#').strip())}</h2>")
        elif line.strip():
            parts.append(f"<p class='note'>{html.escape(line)}</p>")
    flush()
    return "\n".join(parts)


def build_table_report(
    out: Path, title: str, table_markdown: str, grids: list[Path], cell_reports: list[Path]
) -> Path:
    """``<out>/report.html`` of a table run: the table, every product's sample grids of all its
    runs side by side (embedded), and links to each run's own report."""
    figures = []
    for grid in grids:
        data = base64.b64encode(Path(grid).read_bytes()).decode()
        caption = (
            f"{grid.stem}: each run's samples (source | synthetic | mask | overlay), left to right"
        )
        figures.append(
            f"<figure><img alt='{html.escape(grid.stem)}' style='max-width:100%;"
            f"image-rendering:pixelated' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    links = "".join(
        f"<li><a href='{html.escape(str(p.relative_to(out)))}'>"
        f"{html.escape(str(p.relative_to(out).parts[0]))}</a></li>"
        for p in cell_reports
        if p.is_file()
    )
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        markdown_to_html(table_markdown),
        "<h2>Samples side by side</h2>" + ("".join(figures) or "<p class='note'>One run.</p>"),
        f"<h2>Each run's report</h2><ul>{links}</ul>",
    ]
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        + "\n".join(sections)
        + "</body></html>\n"
    )
    path = out / "report.html"
    write_text(page, path)
    return path


def report(cfg) -> dict[str, float]:
    """Hydra task of ``src/report.py``."""
    path = build_report(
        cfg.run, n_samples=cfg.n_samples, device=cfg.device, cache_dir=cfg.paths.cache_dir
    )
    print(f"report: {path}")
    return {}
