"""report.html: self-contained, and it renders in a real headless browser."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from defectsynth.report import build_report
from tests.helpers import run_script

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]


@pytest.fixture(scope="module")
def report(smoke_run, cache_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("reported") / "run"
    shutil.copytree(smoke_run, run)
    return build_report(run, n_samples=2, cache_dir=str(cache_dir))


def test_report_is_self_contained_with_config_curves_and_gallery(report):
    page = report.read_text()
    assert not re.search(r"""(src|href)=['"](https?:|//|file:)""", page)  # nothing external
    images = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(images) == 2 + 2  # two synthetic samples, two real defects
    for data in images:
        Image.open(io.BytesIO(base64.b64decode(data))).load()  # every picture decodes
    assert page.count("<svg") >= 2  # loss-curve panels
    assert "ablation:" in page and "Loss curves" in page and "Real defects" in page


def test_report_command_line(smoke_run, cache_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    proc = run_script("report.py", f"run={run}", "n_samples=1", cache_dir=cache_dir)
    assert (run / "report.html").is_file() and "report:" in proc.stdout
    assert (run / ".hydra" / "config.yaml").read_text() == (
        smoke_run / ".hydra" / "config.yaml"
    ).read_text()  # the run's own config is left alone


def test_report_renders_in_headless_chromium_without_console_errors(report, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it for CI)")
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [
            browser,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1200,900",
            f"--screenshot={shot}",
            report.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.is_file(), proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    gallery = pixels[100:400, 40:1100]  # under the title: the sample pictures
    assert gallery.std() > 20, "the gallery area of the screenshot is blank"


def test_overfitting_signal_gets_its_own_panel():
    from defectsynth.report import loss_plots

    rows = [
        {"epoch": str(e), "train/loss_G_total_epoch": "1.0", "daug/rt_D_Y": str(0.1 * e)}
        for e in range(3)
    ]
    panels = loss_plots(rows)
    assert len(panels) == 2
    assert any("Overfitting signal" in svg and "rt_D_Y" in svg for svg in panels)
    # a run without the signal (no daug columns) has no such panel
    assert len(loss_plots([{"epoch": "0", "train/loss_G_total_epoch": "1.0"}])) == 1


def test_markdown_to_html_renders_our_tables_and_escapes():
    from defectsynth.report import markdown_to_html

    text = "# Demo <1>\n\n| Method | FID |\n|---|---|\n| A & B | 1.0 [0.5, 2] |\n\nnote\n"
    page = markdown_to_html(text)
    assert "<h2>Demo &lt;1&gt;</h2>" in page
    assert "<th>Method</th><th>FID</th>" in page
    assert "<td>A &amp; B</td><td>1.0 [0.5, 2]</td>" in page
    assert "---" not in page and "<p class='note'>note</p>" in page


def test_study_curves_left_in_the_run_folder_are_shown(tmp_path):
    from defectsynth.report import study_figures

    assert study_figures(tmp_path) == []  # no studies/ folder: no section
    curve = np.zeros((20, 30, 3), np.uint8)
    curve[:, :, 1] = 200
    (tmp_path / "studies").mkdir()
    Image.fromarray(curve).save(tmp_path / "studies" / "inspection-table4-clean-demo-x.png")
    (figure,) = study_figures(tmp_path)
    assert "inspection-table4-clean-demo-x" in figure
    encoded = re.search(r"data:image/png;base64,([^']+)", figure).group(1)
    with Image.open(io.BytesIO(base64.b64decode(encoded))) as shown:
        assert np.array_equal(np.asarray(shown), curve)
