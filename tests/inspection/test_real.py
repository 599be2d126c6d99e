"""Real-defect rows of the studies (issue 14): the reference trained on the real training
defects, real + synthetic rows, the data-efficiency curve — and above all that no test image
ever trains or validates a real row."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from defectsynth.data.mvtec import DefectSample
from defectsynth.errors import ConfigError, DataError
from defectsynth.inspection import study as study_module
from defectsynth.inspection.metrics import seed_interval, t_quantile
from defectsynth.inspection.real import (
    REFERENCE,
    RealDefects,
    RealMix,
    check_real_rows,
    distinct_first,
    make_mixes,
    split_real,
)
from defectsynth.inspection.sources import Input, SyntheticSet, product_of
from defectsynth.inspection.study import build_sets, inspection, prepare, segmentation
from tests.inspection.conftest import write_checkpoint
from tests.inspection.test_scripts import study_cfg


def samples(names: list[str]) -> tuple[DefectSample, ...]:
    return tuple(DefectSample(Path(f"/d/{n}.png"), Path(f"/m/{n}_mask.png")) for n in names)


# ------------------------------------------------------------------------------ pure parts
def test_split_real_validates_on_the_last_training_defects_by_name():
    donors = samples(["007", "001", "003", "000", "005", "002", "006", "004"])
    real = split_real(donors, 0.2)
    # ⌈0.2 · 8⌉ = 2: the last two by name validate, whatever order they came in
    assert [s.image.name for s in real.val] == ["006.png", "007.png"]
    assert [s.image.name for s in real.train] == [f"00{i}.png" for i in range(6)]
    assert split_real(donors[:1], 0.2).val == ()  # one defect: it trains, nothing validates
    assert len(split_real(donors[:2], 0.9).train) == 1  # at least one trains
    with pytest.raises(DataError):
        split_real((), 0.2)


def test_distinct_first_takes_every_source_once_before_any_twice():
    # source-major, as generate.py writes them: a0 a1 a2 b0 b1 b2, plus two latent items
    sources = ["a", "a", "a", "b", "b", "b", "", ""]
    order = distinct_first(sources)
    assert order[:4] == [0, 3, 6, 7]  # a, b and both latent items first
    assert order[4:] == [1, 4, 2, 5]
    assert sorted(order) == list(range(len(sources)))


def pool(n_sources: int, per_source: int) -> SyntheticSet:
    sources = [f"/s/{i}.png" for i in range(n_sources) for _ in range(per_source)]
    images = [np.zeros((4, 4, 3), np.uint8)] * len(sources)
    return SyntheticSet("Proposed approach", Path("/pool"), images, None, sources, {})


def test_ratios_take_distinct_items_and_say_when_the_generator_runs_out():
    real = RealDefects(samples(["0", "1", "2"]), samples(["9"]))
    made = pool(n_sources=5, per_source=4)  # 20 items at most: 5 sources × 4 flips
    mixes = make_mixes(real, [(made, "4 per source × 5")], [0, 1, 4, 16, 32], {}, ())
    assert [m.title for m in mixes] == [
        REFERENCE,
        "Real + Proposed approach ×1",
        "Real + Proposed approach ×4",
        "Real + Proposed approach ×16",  # 20 of 48; ×32 would be the same 20: left out
    ]
    assert [m.n_synthetic for m in mixes] == [0, 3, 12, 20]
    assert [m.requested for m in mixes] == [0, 3, 12, 48]
    # ×1: three different source images, no flip variant of one of them
    assert len({made.sources[i] for i in mixes[1].items}) == 3
    assert len(set(mixes[3].items)) == 20  # all distinct: nothing repeated to reach 48
    assert mixes[3].note.startswith("20 of the 48 requested: 4 per source × 5")
    assert not mixes[2].note
    # a run keyed by its real defects and its share of the pool
    assert mixes[1].settings["real.train"] == [str(s.image) for s in real.train]
    assert mixes[1].settings["real.items"] == 3
    assert mixes[0].key != mixes[1].key


def test_t_quantile_and_seed_intervals_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 4, 9, 30):
        for p in (0.9, 0.975, 0.995):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-5)
    values = [0.6, 0.7, 0.8]
    low, high = seed_interval(values, 0.95)
    half = stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / math.sqrt(3)
    assert (low, high) == pytest.approx((0.7 - half, min(1.0, 0.7 + half)))
    assert seed_interval([0.5]) is None and seed_interval([0.5, None]) is None
    assert seed_interval([0.9, 1.0, 1.0])[1] == 1.0  # clipped to the metric's range


# ------------------------------------------------------------------------------ the leak guard
def test_a_test_defect_in_a_real_row_is_refused(tiny_ckpt, cache_dir, tmp_path):
    cfg = study_cfg("inspection", tmp_path, cache_dir)
    product = product_of(Input("ckpt", tiny_ckpt), {}, str(cache_dir))
    data = prepare(cfg, product, 0, tmp_path / "split0")
    split = data.split
    real = split_real(split.donors, 0.2)
    check_real_rows(real, split, "ok", split.donors)  # the clean rows pass
    leaks = {
        "a test defect trains": RealDefects((*real.train, split.defect_test[0]), real.val),
        "a test defect validates": RealDefects(real.train, (split.defect_test[0],)),
    }
    for where, leaky in leaks.items():
        with pytest.raises(DataError, match="test image"):
            check_real_rows(leaky, split, where, (*split.donors, *split.defect_test))
        # and where the tensors are made, whatever built the row
        mix = RealMix("leaky", "leaky", leaky, trained=(*split.donors, *split.defect_test))
        with pytest.raises(DataError, match="test image"):
            build_sets(cfg, product, data, mix, 32, with_masks=False)
    # a defect-free test image passed off as a defect, a defect the generator never saw
    normal_test = DefectSample(split.normal_test[0], split.defect_test[0].mask)
    with pytest.raises(DataError, match="test image"):
        check_real_rows(RealDefects((normal_test,), ()), split, "x", (normal_test,))
    with pytest.raises(DataError, match="not training defects of its generator"):
        check_real_rows(real, split, "x", real.train[:2])  # trained on fewer than the row uses
    # validation defects: the GAN's training defects (a reduced generator need not have seen
    # them), nothing else
    check_real_rows(RealDefects(real.train[:1], real.val), split, "x", real.train[:1])
    stranger = samples(["elsewhere"])
    with pytest.raises(DataError, match="not training defects of its generator"):
        check_real_rows(RealDefects(real.train, stranger), split, "x", split.donors)


def test_a_leaking_real_split_stops_the_study(tiny_ckpt, cache_dir, tmp_path, monkeypatch):
    """Whatever chooses the real defects: a test defect among them stops the run before any
    network is trained on it."""

    cfg = study_cfg("inspection", tmp_path, cache_dir, f"ckpt={tiny_ckpt}")
    product = product_of(Input("ckpt", tiny_ckpt), {}, str(cache_dir))
    test_defect = prepare(cfg, product, 0, tmp_path / "probe").split.defect_test[0]

    def with_test_defect(donors, fraction):
        right = split_real(donors, fraction)
        return RealDefects((*right.train, test_defect), right.val)

    monkeypatch.setattr(study_module, "split_real", with_test_defect)
    with pytest.raises(DataError, match="test image"):
        inspection(study_cfg("inspection", tmp_path / "run", cache_dir, f"ckpt={tiny_ckpt}"))
    assert not list((tmp_path / "run").rglob("metrics.json"))  # nothing trained


# ------------------------------------------------------------------------------ the studies
def records(run: Path) -> dict[str, dict]:
    return {
        path.parent.name: json.loads(path.read_text())
        for path in (run / "widget-scratch" / "runs").glob("*/metrics.json")
    }


def test_table4_has_real_rows_trained_only_on_the_generators_training_defects(
    tiny_ckpt, cache_dir, tmp_path
):
    cfg = study_cfg("inspection", tmp_path, cache_dir, f"ckpt={tiny_ckpt}", "seeds=[0,1]")
    inspection(cfg)
    split = json.loads((tmp_path / "widget-scratch" / "split0" / "splits.json").read_text())
    donors, tests = set(split["donors"]), set(split["defect_test"]) | set(split["normal_test"])
    # 10 defects: 8 trained the GAN (donors), 2 are held out for the test
    assert len(donors) == 8 and len(split["defect_test"]) == 2
    real_runs = {k: r for k, r in records(tmp_path).items() if "real" in k}
    titles = {r["training_set"] for r in real_runs.values()}
    assert titles == {
        REFERENCE,
        "Real + Proposed approach ×1",
        "Real + Cut-paste ×1",
    }
    assert len(real_runs) == 2 * 3  # two seeds
    n_sources = split["counts"]["synthesis_sources"]
    for name, record in real_runs.items():
        used = set(record["real_train"]) | set(record["real_val"])
        # THE leak test: no test image ever trains or validates a real row ...
        assert not used & tests, name
        assert not used & set(record["test_images"]), name
        # ... and every real defect is one the generator trained on
        assert used <= donors, name
        assert len(record["real_val"]) == 2 and len(record["real_train"]) == 6  # ⌈0.2 · 8⌉
        # the last by name validate
        assert sorted(record["real_val"]) == sorted(donors)[-2:]
        n_synthetic = record["synthetic_items"]
        expected = 0 if record["training_set"] == REFERENCE else 6
        if "Proposed" in record["training_set"]:
            expected = min(6, 4 * n_sources)  # at most 4 flips per source image
        assert n_synthetic == expected, name
        counts = record["counts"]
        assert counts["train"]["defective"] == 6 + n_synthetic
        assert counts["val"]["defective"] == 2  # the same validation defects in every row
        assert counts["test"] == {"defect_free": 2, "defective": 2}
    # the same defect-free images as the synthetic-only rows
    synthetic_only = records(tmp_path)["resnet18-proposed_approach-seed0"]
    reference = records(tmp_path)["resnet18-real_defects_reference-seed0"]
    assert (
        reference["counts"]["train"]["defect_free"]
        == synthetic_only["counts"]["train"]["defect_free"]
    )
    assert reference["test_images"] == synthetic_only["test_images"]
    # cut-paste rows paste only the real *training* defects, never a validation one
    cut = next(tmp_path.glob("widget-scratch/split0/synthetic/cut_paste_real_x*"))
    with open(cut / "manifest.csv", newline="") as fh:
        pasted = {row["donor"] for row in csv.DictReader(fh)}
    assert pasted <= set(reference["real_train"])

    table = (tmp_path / "table4.md").read_text()
    assert "## Real vs synthetic" in table
    assert "| ResNet-18 | Widget (scratch) | Real defects (reference) | 6 / 2 | 0 |" in table
    assert "claim that matters" in table  # how to read it, beside the numbers
    with open(tmp_path / "table4_real.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["Training defects"] for r in rows] == [
        REFERENCE,
        "Real + Proposed approach ×1",
        "Real + Cut-paste ×1",
    ]
    for row in rows:
        # two seeds: a seed interval around the mean, and the pooled value with its own
        assert float(row["auroc_seed_low"]) <= float(row["auroc_mean"])
        assert float(row["auroc_mean"]) <= float(row["auroc_seed_high"])
        assert float(row["auroc_pooled_low"]) <= float(row["auroc_pooled_high"])
        assert (row["n_images_defect_free"], row["n_images_defective"], row["n_seeds"]) == (
            "2",
            "2",
            "2",
        )
    # the seed interval is the Student-t one of the per-seed AUROCs
    aurocs = [
        records(tmp_path)[f"resnet18-real_defects_reference-seed{k}"]["metrics"]["auroc"]
        for k in (0, 1)
    ]
    assert float(rows[0]["auroc_seed_low"]) == pytest.approx(seed_interval(aurocs)[0])
    # the rows also sit in the main and pooled tables, beside the synthetic-only ones
    with open(tmp_path / "table4_pooled.csv", newline="") as fh:
        assert REFERENCE in {r["Training defects"] for r in csv.DictReader(fh)}
    plot = tmp_path / "widget-scratch_real_vs_synthetic.png"
    with Image.open(plot) as image:
        assert image.size[0] > 300
    # resumed in the same folder: every real row and its synthetic pool is reused as it is
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("metrics.json")}
    stamps |= {p: p.stat().st_mtime_ns for p in cut.rglob("*.png")}
    inspection(study_cfg("inspection", tmp_path, cache_dir, f"ckpt={tiny_ckpt}", "seeds=[0,1]"))
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # another validation share changes the real rows' defects: the cached ones are refused
    other = study_cfg("inspection", tmp_path, cache_dir, f"ckpt={tiny_ckpt}", "seeds=[0,1]")
    other.real.val = 0.5
    with pytest.raises(ConfigError, match=r"cut_paste_real_x2 was made with other .*donors"):
        inspection(other)


def test_segmentation_real_rows_train_on_the_real_masks(tiny_ckpt, cache_dir, tmp_path):
    # a checkpoint in a training run's layout: the curve is copied there for report.html
    generator = tmp_path / "generator"
    ckpt = generator / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    shutil.copyfile(tiny_ckpt, ckpt)
    run = tmp_path / "run"
    cfg = study_cfg("segmentation", run, cache_dir, f"ckpt={ckpt}")
    segmentation(cfg)
    tmp_path = run
    runs = records(tmp_path)
    record = runs["unet-real_defects_reference-seed0"]
    assert record["counts"]["train"]["defective"] == 6 and record["synthetic_items"] == 0
    assert not set(record["real_train"]) & set(record["test_images"])
    # the real masks train: the segmenter's pixel states cover the same test images
    assert record["test_images"] == runs["unet-proposed_approach-seed0"]["test_images"]
    assert runs["unet-real_cut_paste_1-seed0"]["synthetic_items"] == 6
    table = (tmp_path / "segmentation.md").read_text()
    assert "| U-Net | Widget (scratch) | Real defects (reference) | 6 / 2 | 0 |" in table
    assert "Pixel AP over seeds" in table
    assert (tmp_path / "widget-scratch_real_vs_synthetic.png").is_file()
    (copied,) = (generator / "studies").glob("*.png")
    assert copied.read_bytes() == (tmp_path / "widget-scratch_real_vs_synthetic.png").read_bytes()
    assert copied.name.startswith("segmentation-segmentation-clean-smoke-")


def test_no_real_rows_under_the_paper_protocol(tiny_ckpt, cache_dir, tmp_path):
    cfg = study_cfg(
        "inspection", tmp_path, cache_dir, f"ckpt={tiny_ckpt}", "protocol=paper", "seeds=[0]"
    )
    inspection(cfg)
    assert not [k for k in records(tmp_path) if "real" in k]
    table = (tmp_path / "table4.md").read_text()
    assert "## Real vs synthetic" in table and "Not made under protocol=paper" in table
    assert not (tmp_path / "table4_real.csv").exists()


def test_real_options_are_checked_before_any_work(tiny_ckpt, cache_dir, tmp_path):
    for option in (
        "real.ratios=[-1]",
        "real.counts=[0]",
        "real.val=1.0",
        "real.backbones=some",
        "real.seeds=[7]",
        "real.seeds=[]",
        "real.count_ratio=0",
        "real.metrics=[pixel_ap]",  # a segmentation metric for the classifier
    ):
        cfg = study_cfg("inspection", tmp_path, cache_dir, f"ckpt={tiny_ckpt}", option)
        with pytest.raises(ConfigError, match=option.split("=")[0].replace(".", r"\.")):
            inspection(cfg)
    assert not list(tmp_path.rglob("metrics.json"))


def test_fewer_real_defects_retrain_the_generator_on_exactly_them(
    tiny_ckpt, study_root, cache_dir, tmp_path, monkeypatch
):
    """real.counts: each k gets a generator trained with data.defect_train_limit=k (here a
    fresh checkpoint recording that limit, in place of a training run)."""
    trained: list[list[str]] = []

    def fake_generator(product, scale, overrides, root, cache):
        trained.append(list(overrides))
        limits = [o.split("=", 1)[1] for o in overrides if o.startswith("data.defect_train_limit=")]
        if not limits:
            return tiny_ckpt
        path = write_checkpoint(tmp_path / f"k{limits[0]}.ckpt", study_root, cache_dir)
        checkpoint = torch.load(path, weights_only=True)
        checkpoint["datamodule_hyper_parameters"]["defect_train_limit"] = int(limits[0])
        torch.save(checkpoint, path)
        return path

    monkeypatch.setattr(study_module, "ensure_generator", fake_generator)
    cfg = study_cfg(
        "inspection",
        tmp_path,
        cache_dir,
        "products=[widget]",
        "real.counts=[1,2,6]",
        "real.count_ratio=2",
        "cut_paste.enabled=false",
    )
    inspection(cfg)
    limits = sorted(o for run in trained for o in run if o.startswith("data.defect_train"))
    # 6 = all real training defects: the full rows, no retraining
    assert limits == ["data.defect_train_limit=1", "data.defect_train_limit=2"]
    runs = records(tmp_path)
    split = json.loads((tmp_path / "widget-scratch" / "split0" / "splits.json").read_text())
    first = sorted(split["donors"])
    for k in (1, 2):
        reference = runs[f"resnet18-real_defects_k_{k}-seed0"]
        assert reference["real_train"] == first[:k]  # the generator's k training defects
        assert reference["real_val"] == first[-2:]  # the same validation defects
        assert not set(reference["real_train"]) & set(reference["test_images"])
        mixed = runs[f"resnet18-real_k_{k}_proposed_approach_2-seed0"]
        assert mixed["synthetic_items"] == min(2 * k, 4 * split["counts"]["synthesis_sources"])
        assert mixed["synthetic_set"].startswith(str(tmp_path / "widget-scratch" / "split0"))
        assert f"real_k{k}" in mixed["synthetic_set"]
    with open(tmp_path / "table4_real.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {(r["k"], r["n_real_train"]) for r in rows if r["k"]} == {("1", "1"), ("2", "2")}
    # ×2 joins the full rows' ratios so the curve's "all" point exists
    assert "Real + Proposed approach ×2" in {r["Training defects"] for r in rows}
    assert (tmp_path / "widget-scratch_real_vs_synthetic.png").is_file()
