"""The tables' cells: ``value [lo, hi]``, footnotes for tiny real sets and for values outside
their interval, and averages that never average intervals."""

from __future__ import annotations

from defectsynth.evaluation import markdown_table, report_row
from defectsynth.tables import _with_average


def _report(fid2048: float, interval: list[float] | None, n_real: int) -> dict:
    return {
        "metrics": {
            "fid64": 1.5,
            "fid2048": fid2048,
            "kid": {"mean": 0.01234, "std": 0.002},
            "lpips": 0.3,
            "ic_lpips": {"value": 0.1, "clusters_used": 2, "clusters": 4},
            "ic_lpips_nonempty": 0.2,
            "mask_coherence": None,
        },
        "intervals": {
            "fid64": [1.2, 1.9],
            "fid2048": interval,
            "kid_mean": [0.001, 0.03],
            "lpips": [0.25, 0.35],
        },
        "meta": {"n_fid2048_real": n_real},
    }


def test_report_row_carries_intervals_and_the_real_set_size() -> None:
    row = report_row(_report(80.0, [70.0, 95.0], 3))
    assert row["fid2048"] == 80.0 and (row["fid2048_lo"], row["fid2048_hi"]) == (70.0, 95.0)
    assert row["kid_mean"] == 0.01234 and row["kid_mean_lo"] == 0.001
    assert row["ic_lpips"] == 0.1 and row["ic_lpips_nonempty"] == 0.2
    assert row["fid2048_n_real"] == 3 and row["mask_iou"] is None


def test_markdown_cells_footnotes_and_marks() -> None:
    rows = [
        {"Method": "a", **report_row(_report(80.0, [70.0, 95.0], 3))},
        {"Method": "b", **report_row(_report(60.0, [65.0, 90.0], 12))},
    ]
    table = markdown_table(rows, ("Method",))
    lines = table.splitlines()
    assert "| a | 1.500 [1.200, 1.900] | 0.300 [0.250, 0.350] |" in lines[2]
    assert "80.000 [70.000, 95.000]¹" in lines[2]
    assert "0.0123 [0.0010, 0.0300]¹" in lines[2]  # KID: 4 digits, same real set as FID-2048
    assert "60.000 [65.000, 90.000]†" in lines[3] and "¹" not in lines[3]
    assert "| – |" in lines[2]  # no mask: an empty cell, no interval
    assert any(line.startswith("[lo, hi]: 95% bootstrap interval") for line in lines)
    assert any(
        line.startswith("¹ FID (2048-d) and KID") and "(n = 3, 12)" in line for line in lines
    )
    assert any(line.startswith("† the value lies outside its interval") for line in lines)


def test_markdown_without_intervals_has_no_interval_note() -> None:
    report = _report(80.0, None, 50)
    report["intervals"] = {}
    table = markdown_table([{"Method": "a", **report_row(report)}], ("Method",))
    assert "[" not in table and "¹" not in table and "bootstrap" not in table


def test_average_row_averages_values_only() -> None:
    rows = [report_row(_report(80.0, [70.0, 95.0], 3)), report_row(_report(60.0, [50.0, 65.0], 3))]
    *_, average = _with_average(rows, {"Method": "m", "Product (Defect)": "Avg"})
    assert average["fid2048"] == 70.0 and average["fid64"] == 1.5
    assert not any(key.endswith(("_lo", "_hi")) for key in average)
    assert "fid2048_n_real" not in average
    # so the average's cell shows its value alone
    assert "| m | Avg | 1.500 | 0.300 |" in markdown_table(
        [average], ("Method", "Product (Defect)")
    )
