"""The baselines of Table 2 end to end, as a user runs them: ``src/train.py model=<baseline>``
(one smoke-sized multirun over the five models), ``src/generate.py ckpt=...`` on each
checkpoint (one multirun), then the metrics on each generated folder."""

from __future__ import annotations

import csv
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import open_dict
from PIL import Image

import defectsynth.config  # noqa: F401  (resolvers)
from defectsynth.evaluation import Networks, evaluate
from defectsynth.tables import METHOD_NAMES
from tests.helpers import REPO, load, run_script

# model option → (class, whether it outputs a mask)
BASELINES = {
    "cyclegan4": ("defectsynth.models.baselines.cyclegan4.CycleGAN4", True),
    "dcgan4": ("defectsynth.models.baselines.dcgan4.DCGAN4", True),
    "cut": ("defectsynth.models.baselines.cut.CUT", False),
    "fastcut": ("defectsynth.models.baselines.cut.CUT", False),
    "negcut": ("defectsynth.models.baselines.cut.NegCUT", False),
}
OPTIMIZERS = {"cyclegan4": 3, "dcgan4": 2, "cut": 2, "fastcut": 2, "negcut": 3}  # G(+F), Ds, N
LOSS_OF = {  # a loss term each model logs
    "cyclegan4": "loss_cycle",
    "dcgan4": "loss_G",
    "cut": "loss_nce_identity",
    "fastcut": "loss_nce",
    "negcut": "loss_N",
}
N_SOURCES, N_PER_IMAGE, SEED = 3, 2, 3  # smoke data: 3 normal test images


@dataclass
class Runs:
    train: Path
    generate: Path
    train_proc: subprocess.CompletedProcess
    generate_proc: subprocess.CompletedProcess

    def run_dir(self, model: str) -> Path:
        return self.train / model

    def samples(self, model: str) -> Path:
        return self.generate / str(list(BASELINES).index(model))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Runs:
    root = tmp_path_factory.mktemp("baselines")
    train = run_script(
        "train.py",
        "-m",
        f"model={','.join(BASELINES)}",
        "experiment=smoke",
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={root / 'train'}",
        "hydra.sweep.subdir=${hydra.runtime.choices.model}",
        cache_dir=cache_dir,
        check=False,  # each test reports its own model's failure
    )
    ckpts = [root / "train" / model / "checkpoints" / "last.ckpt" for model in BASELINES]
    generate = run_script(
        "generate.py",
        "-m",
        "ckpt=" + ",".join(str(c) for c in ckpts),
        f"n_per_image={N_PER_IMAGE}",
        f"seed={SEED}",
        "logger=none",
        f"hydra.sweep.dir={root / 'generate'}",
        "hydra.sweep.subdir=${hydra.job.num}",
        cache_dir=cache_dir,
        check=False,
    )
    return Runs(root / "train", root / "generate", train, generate)


def manifest(folder: Path) -> list[dict[str, str]]:
    with open(folder / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("model", list(BASELINES))
def test_smoke_training_writes_a_checkpoint_of_the_models_class(runs, model):
    ckpt_path = runs.run_dir(model) / "checkpoints" / "last.ckpt"
    assert ckpt_path.is_file(), runs.train_proc.stderr[-3000:]
    checkpoint = load(ckpt_path)
    assert checkpoint["defectsynth"]["model_class"] == BASELINES[model][0]
    # every optimiser stepped on each of the 4 batches (Lightning counts optimiser steps)
    assert checkpoint["global_step"] == 4 * len(checkpoint["optimizer_states"])
    assert len(checkpoint["optimizer_states"]) == OPTIMIZERS[model]
    hparams = checkpoint["hyper_parameters"]
    assert hparams["compile"] is False and hparams["schedule"] == {
        "n_epochs": 1,
        "n_epochs_decay": 1,
    }
    logged = (runs.run_dir(model) / "csv" / "version_0" / "metrics.csv").read_text()
    assert f"train/{LOSS_OF[model]}_step" in logged
    assert list((runs.run_dir(model) / "samples").glob("batch_*.png"))


@pytest.mark.parametrize("model", list(BASELINES))
def test_generation_writes_images_and_masks_exactly_for_mask_models(runs, model):
    out = runs.samples(model)
    assert (out / "synthesis.json").is_file(), runs.generate_proc.stderr[-3000:]
    has_mask = BASELINES[model][1]
    base = out / "tile"
    images = sorted((base / "test" / "crack_synthetic").glob("*.png"))
    masks = sorted((base / "ground_truth" / "crack_synthetic").glob("*_mask.png"))
    assert len(images) == N_SOURCES * N_PER_IMAGE  # the same count for every method
    assert len(masks) == (len(images) if has_mask else 0)
    assert Image.open(images[0]).size == (32, 32)
    info = json.loads((out / "synthesis.json").read_text())
    assert info["model_class"] == BASELINES[model][0] and info["image_size"] == 32
    rows = manifest(out)
    if model == "dcgan4":  # sampled: one seed per item, no source
        assert [int(r["seed"]) for r in rows] == list(range(SEED, SEED + len(rows)))
        assert {r["source"] for r in rows} == {""} and info["seed"] == SEED
    else:  # translated: a source per item, flip variants, no seed
        assert {r["seed"] for r in rows} == {""} and all(r["source"] for r in rows)
        assert [r["variant"] for r in rows[:2]] == ["identity", "hflip"]
    assert all(bool(r["mask"]) == has_mask for r in rows)
    assert (out / "grid.png").is_file()  # source | synthetic (| mask | overlay)


class MeanColour(torch.nn.Module):
    """A stand-in feature network: per-channel means and squared means."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3)), x.pow(2).mean(dim=(2, 3))], dim=1)


def l1_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs().mean(dim=(1, 2, 3))


@pytest.mark.parametrize("model", list(BASELINES))
def test_metrics_record_mask_coherence_only_with_a_mask_and_a_source(
    runs, model, cache_dir, tmp_path
):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=["logger=none"])
    with open_dict(cfg):
        cfg.samples = str(runs.samples(model))
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.cache_dir = str(cache_dir)
    evaluate(cfg, Networks(MeanColour(), MeanColour(), l1_distance))
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["metrics"]["fid64"] is not None and report["meta"]["n_fake"] == 6
    coherence, reason = report["metrics"]["mask_coherence"], report["skipped"].get("mask_coherence")
    if model == "cyclegan4":
        assert coherence is not None and reason is None
    elif model == "dcgan4":
        assert coherence is None and reason == "no source images"
    else:
        assert coherence is None and reason == "the model outputs no mask"


def compose_train(*overrides: str):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.mark.parametrize("experiment", ["smoke", "demo", "paper"])
@pytest.mark.parametrize("model", list(BASELINES))
def test_every_baseline_instantiates_under_each_experiment(model, experiment):
    cfg = compose_train(f"model={model}", f"experiment={experiment}")
    net = instantiate(cfg.model)
    assert f"{type(net).__module__}.{type(net).__name__}" == BASELINES[model][0]
    assert type(net).has_mask_output == BASELINES[model][1]
    if model == "dcgan4":  # generates at the training resolution
        assert net.G(net.latents([0])).shape[-1] == cfg.data.image_size


def test_each_baseline_keeps_its_authors_schedule_also_in_the_paper_preset():
    epochs = {"cyclegan4": 300, "dcgan4": 300, "cut": 400, "fastcut": 200, "negcut": 400}
    for model, total in epochs.items():
        for preset in ([], ["experiment=paper"]):
            assert compose_train(f"model={model}", *preset).trainer.max_epochs == total
    fastcut = compose_train("model=fastcut").model.nce
    assert (fastcut.lambda_nce, fastcut.identity, fastcut.flip_equivariance) == (10, False, True)
    # CycleGAN4 takes the λ of the loss config, like the proposed model
    lam = compose_train("model=cyclegan4", "loss=author_code").model.loss
    assert (lam.lambda_cycle, lam.lambda_id) == (10, 5)


def test_table2_has_every_method_in_the_papers_order():
    table = yaml.safe_load((REPO / "conf" / "table" / "table2.yaml").read_text())
    assert table["models"] == ["dcgan4", "cyclegan4", "cut", "fastcut", "negcut", "defect_gan"]
    for model in table["models"]:
        assert model in METHOD_NAMES and (REPO / "conf" / "model" / f"{model}.yaml").is_file()
