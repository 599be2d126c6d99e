"""Table 5 (src/table5.py, `make table5`): the controllable model against the paper model —
its measurements on hand-made sets, its table, and a smoke-scale run end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from defectsynth import table5 as T
from defectsynth.errors import ConfigError
from defectsynth.evaluation import MetricSuite, Networks, SampleSet
from defectsynth.metrics import bootstrap as B
from tests.helpers import run_script

BOOT = T.Bootstrap(B.Resampler(200, seed=0))


def _requests(n: int = 4, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` flat grey sources and requested squares at different places."""
    sources = torch.zeros(n, 3, size, size)
    requested = torch.zeros(n, 1, size, size)
    for i in range(n):
        requested[i, 0, i : i + 3, 2:5] = 1.0
    return sources, requested


def test_placement_fails_a_stub_that_copies_the_request_but_draws_nothing():
    sources, requested = _requests()
    # the stub's mask output is the request; its image is the source, untouched
    stub = SampleSet(sources.clone(), requested.clone(), sources, {"threshold": 0.5})
    result = T.placement_measures(stub, requested, np.ones((8, 8)), 0.1, BOOT, "p")
    assert result["request_changed_iou"] == 0.0
    assert result["request_predicted_iou"] == pytest.approx(1.0)
    # a model that draws exactly where asked passes, with an interval around its value
    drawn = sources.clone()
    drawn[requested.expand(-1, 3, -1, -1) > 0] = 1.0
    honest = SampleSet(drawn, requested.clone(), sources, {"threshold": 0.5})
    result = T.placement_measures(honest, requested, np.ones((8, 8)), 0.1, BOOT, "p")
    assert result["request_changed_iou"] == pytest.approx(1.0)
    assert result["request_changed_iou_interval"] == pytest.approx([1.0, 1.0])
    assert result["changed_off_foreground"] == 0.0
    assert result["placement_changed_outside"] == 0.0


def test_placement_off_the_foreground_and_without_a_request():
    sources, requested = _requests()
    drawn = sources.clone()
    drawn[requested.expand(-1, 3, -1, -1) > 0] = 1.0  # 9 pixels per image, in columns 2..4
    foreground = np.ones((8, 8))
    foreground[:, 4:] = 0  # column 4 (3 of the 9 pixels) is background
    samples = SampleSet(drawn, requested.clone(), sources, {"threshold": 0.5})
    result = T.placement_measures(samples, requested, foreground, 0.1, BOOT, "p")
    assert result["changed_off_foreground"] == pytest.approx(3 / 9)
    assert result["requested_off_foreground"] == pytest.approx(3 / 9)
    # a model without requests: only where its changes land
    result = T.placement_measures(samples, None, foreground, 0.1, BOOT, "q")
    assert set(result) == {"changed_off_foreground", "changed_off_foreground_interval"}
    assert result["changed_off_foreground"] == pytest.approx(3 / 9)


def test_locality_measures_against_the_request_of_a_controllable_model():
    sources, requested = _requests(2)
    synthetic = sources.clone()
    synthetic[:, :, 7, :] = 1.0  # the bottom row changed: never requested
    # a mask output that covers everything would hide it; the request does not
    samples = SampleSet(synthetic, torch.ones(2, 1, 8, 8), sources, {"threshold": 0.5})
    against_request = T.locality(samples, requested, 0.1, BOOT)
    assert against_request["changed_outside_mask"] == "requested"
    assert against_request["changed_outside"] == pytest.approx(8 / (64 - 9))
    against_prediction = T.locality(samples, None, 0.1, BOOT)
    assert against_prediction["changed_outside_mask"] == "predicted"
    assert against_prediction["changed_outside"] is None  # no pixel outside the prediction
    assert T.locality(SampleSet(synthetic, None, None), None, 0.1, BOOT)["changed_outside"] is None


def test_same_source_lpips_pairs_only_samples_of_one_source():
    def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).abs().flatten(1).mean(1)

    suite = MetricSuite(OmegaConf.create({"batch_size": 4}), Networks(lpips=distance))
    images = torch.zeros(5, 3, 2, 2)
    images[1] = 1.0  # source a: 0 and 1 differ by 1
    images[3] = 0.5  # source b: 2, 3, 4 → pairs 0.5, 0, 0.5 → mean 1/3
    result = T.same_source_lpips(suite, images, ["a", "a", "b", "b", "b"], BOOT)
    assert result["n_groups"] == 2
    assert result["lpips_same_source"] == pytest.approx((1.0 + 1 / 3) / 2)
    lo, hi = result["lpips_same_source_interval"]
    assert 1 / 3 <= lo <= hi <= 1.0
    # one sample per source: nothing to compare
    single = T.same_source_lpips(suite, images, ["a", "b", "c", "d", "e"], BOOT)
    assert single["lpips_same_source"] is None and single["n_groups"] == 0


class _PaintsTheCode:
    """A stub controllable model: inside the request it paints the code's first entry (a grey
    level in [-1, 1]); ``ignores`` paints one grey whatever the code."""

    device = torch.device("cpu")

    def __init__(self, ignores: bool = False) -> None:
        self.ignores = ignores

    def codes(self, seeds: list[int]) -> torch.Tensor:
        return torch.tensor([[-1.0 + 2 * j / 3] for j in range(len(seeds))])

    def fallback_masks(self, seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        masks = torch.zeros(len(seeds), 1, 4, 4)
        masks[:, :, 1:3, 1:3] = 1
        return masks, torch.zeros(len(seeds), dtype=torch.long)

    def synthesize(self, x, requested, z, defect_type):
        grey = torch.full_like(z[:, :1], 0.5) if self.ignores else z[:, :1]
        return x * (1 - requested) + grey[..., None, None] * requested, requested


class _Sources:
    split = OmegaConf.create({"normal_test": ["a", "b", "c"]})

    def eval_dataset(self, which: str) -> list[dict[str, torch.Tensor]]:
        return [{"image": torch.full((3, 4, 4), -1.0)} for _ in range(3)]


def test_code_diversity_compares_codes_on_one_source_and_one_request():
    # codes paint 0, 1/3, 2/3, 1 (in [0, 1]) on a black source: code pairs differ by 5/9 on
    # average, samples from their source by 1/2
    result = T.code_diversity(_PaintsTheCode(), _Sources(), BOOT, n_sources=3, n_codes=4)
    assert result["n_code_groups"] == 6
    assert result["code_change"] == pytest.approx(5 / 9)
    assert result["defect_change"] == pytest.approx(1 / 2)
    assert result["code_ratio"] == pytest.approx(10 / 9)
    assert result["code_ratio_interval"] == pytest.approx([10 / 9, 10 / 9])
    ignored = T.code_diversity(_PaintsTheCode(ignores=True), _Sources(), BOOT, n_codes=4)
    assert ignored["code_change"] == 0.0 and ignored["code_ratio"] == 0.0
    assert ignored["defect_change"] == pytest.approx(0.75)
    assert T.code_diversity(_PaintsTheCode(), _Sources(), BOOT, n_codes=1)["code_ratio"] is None


def test_data_specs_name_procedural_and_real_cells(tmp_path):
    cfg = OmegaConf.create(
        {"products": ["tile", "wood"], "data_root": str(tmp_path), "real_products": ["wood/color"]}
    )
    specs = T.data_specs(cfg)
    assert [s.label for s in specs] == ["tile", "wood", "real-wood-color"]
    assert specs[0].overrides() == ["product=tile"]
    assert specs[2].overrides() == [
        "data.category=wood",
        "data.defect=color",
        f"data.root={tmp_path}",
    ]
    assert specs[2].title == "wood/color (MVTec AD)"
    cfg.data_root = str(tmp_path / "missing")
    with pytest.raises(ConfigError, match="data_root"):
        T.data_specs(cfg)


def _cell(variant: str, label: str, seed: int, control: bool, shift: float = 0.0) -> dict:
    row = {
        "variant": variant,
        "label": label,
        "data": "tile",
        "seed": seed,
        "controllable": control,
        "n_fake": 132,
        "n_sources": 33,
        "n_per_image": 4,
        "n_placement": 66 if control else None,
        "n_real_train": 14,
        "n_kid_real": 3,
        "batches": 690,
    }
    for key in T.METRICS:
        row[key] = 0.5 + shift
        row[f"{key}_interval"] = [0.4 + shift, 0.6 + shift]
    if not control:
        row["request_changed_iou"] = row["request_predicted_iou"] = None
    return row


def _table_cfg(seeds: list[int]):
    return OmegaConf.create(
        {
            "title": "T5",
            "preset": "demo",
            "seeds": seeds,
            "run": ["paper", "author_code", "control"],
            "placement": {"mode": "foreground", "seed": 1000},
        }
    )


def test_the_table_has_every_row_and_column_and_dashes_where_no_request_is_taken():
    cfg = _table_cfg([0])
    rows = [
        _cell("paper", "P", 0, False),
        _cell("author_code", "A", 0, False),
        _cell("control", "C", 0, True),
    ]
    table = T.aggregate(rows, cfg, [T.DataSpec("tile")])
    assert [r["Model"] for r in table] == ["P", "A", "C"]
    assert table[2]["fid64_lo"] == 0.4 and table[0]["request_changed_iou"] is None
    text = T.markdown(table, cfg)
    for section, columns in T.SECTIONS.items():
        assert f"## {section}" in text
        for _, title, _ in columns:
            assert title in text
    for _, title in T.SIZES:
        assert title in text
    placement = text.split("## Placement")[1].split("## Fidelity")[0]
    assert "| P | tile (procedural) | 1 | — | — | 0.500 [0.400, 0.600] |" in placement
    assert "| C | tile (procedural) | 1 | 0.500 [0.400, 0.600] | 0.500 [0.400, 0.600] |" in text
    assert "| C | tile (procedural) | 132 | 33 | 4 | 66 | 14 | 3 | 690 |" in text


def test_the_default_run_compares_the_paper_its_authors_low_data_and_control():
    cfg = OmegaConf.load(Path(__file__).parents[1] / "conf" / "table5.yaml")
    assert list(cfg.run) == ["paper", "author_code", "low_data", "control"]
    labels = [cfg.variants[v].label for v in cfg.run]
    assert labels == [
        "defect_gan (paper)",
        "defect_gan experiment=author_code",
        "defect_gan experiment=low_data",
        "defect_gan_control",
    ]
    assert [cfg.variants[v].model for v in cfg.run] == ["defect_gan"] * 3 + ["defect_gan_control"]


def test_several_seeds_give_mean_and_std_over_seeds():
    cfg = _table_cfg([0, 1])
    rows = [_cell("control", "C", 0, True), _cell("control", "C", 1, True, shift=0.2)]
    (row,) = T.aggregate(rows, cfg, [T.DataSpec("tile")])
    assert row["Seeds"] == 2 and row["fid64"] == pytest.approx(0.6)
    assert row["fid64_std"] == pytest.approx(0.1414, abs=1e-4)
    assert "0.600 ± 0.141" in T.markdown([row], cfg)


def test_an_unknown_variant_or_placement_is_a_config_error():
    cfg = OmegaConf.create(
        {"run": ["paper", "papr"], "variants": {"paper": {}}, "placement": {"mode": "random"}}
    )
    with pytest.raises(ConfigError, match="papr"):
        T.table5(cfg)
    cfg = OmegaConf.create(
        {"run": ["paper"], "variants": {"paper": {}}, "placement": {"mode": "anywhere"}}
    )
    with pytest.raises(ConfigError, match="anywhere"):
        T.table5(cfg)


@pytest.mark.slow
def test_table5_smoke_writes_every_row_column_figure_and_report(tmp_path, cache_dir):
    run_script(
        "table5.py",
        "preset=smoke",
        # two of the four default variants: a paper model and the controllable one (the four
        # are checked without training above)
        "run=[low_data,control]",
        "placement.mode=random",
        "figure.n_codes=3",
        f"hydra.run.dir={tmp_path}",
        cache_dir=cache_dir,
    )
    with open(tmp_path / "table5.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["Model"] for r in table] == [
        "defect_gan experiment=low_data",
        "defect_gan_control",
    ]
    for row in table:
        for key in T.METRICS:
            assert key in row
        for key in ("changed_outside", "mask_iou", "lpips_same_source", "lpips", "fid64"):
            assert float(row[key]) >= 0.0, key
        assert row["n_per_image"] == "4"
    low_data, control = table
    # the paper model takes no request
    assert low_data["request_changed_iou"] == "" and low_data["n_placement"] == ""
    assert 0.0 <= float(control["request_changed_iou"]) <= 1.0
    assert 0.0 <= float(control["request_predicted_iou"]) <= 1.0
    assert int(control["n_placement"]) == 2 * int(control["n_sources"])
    assert len({r["batches"] for r in table}) == 1  # the same batches for every model
    cells = json.loads((tmp_path / "table5.json").read_text())["cells"]
    assert cells[1]["changed_outside_mask"] == "requested"
    assert cells[0]["changed_outside_mask"] == "predicted"
    text = (tmp_path / "table5.md").read_text()
    assert text.count("| defect_gan_control |") == 5  # four sections and the sizes
    with Image.open(tmp_path / "codes_by_placements-tile.png") as figure:
        width, height = figure.size
    # 1 + 3 columns of 32 px pictures at scale 2; 3 blocks of 2 rows
    assert width == 2 + 4 * (64 + 2) and height > 3 * 2 * 64
    assert (tmp_path / "grids-tile.png").is_file()
    report = (tmp_path / "control-tile-seed0" / "train" / "report.html").read_text()
    assert "Noise codes × placements" in report
    paper_report = (tmp_path / "low_data-tile-seed0" / "train" / "report.html").read_text()
    assert "Noise codes" not in paper_report
    placement = tmp_path / "control-tile-seed0" / "placement" / "samples" / "synthesis.json"
    assert json.loads(placement.read_text())["placement"]["placement"] == "random"
