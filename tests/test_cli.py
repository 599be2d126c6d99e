"""End-to-end runs of ``src/train.py`` as a user types them (smoke-sized, on the CPU)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.helpers import load, run_script


def run_train(*args, cache_dir, check=True):
    return run_script("train.py", *args, cache_dir=cache_dir, check=check)


def test_smoke_training_writes_checkpoints_samples_and_logs(smoke_run):
    checkpoint = load(smoke_run / "checkpoints" / "last.ckpt")
    # written at the end of the last epoch; Lightning stores its 0-based index
    assert checkpoint["epoch"] == 1 and checkpoint["global_step"] == 2 * 4 * 4
    state = checkpoint["state_dict"]
    assert any(k.startswith("D_C.") for k in state)  # no_LB keeps L_C and D_C
    assert checkpoint["hyper_parameters"]["ablation"] == {
        "name": "no_LB",
        "coherence": True,
        "background": False,
    }
    assert sorted(p.name for p in (smoke_run / "samples").glob("*.png")) == [
        "batch_0000004.png",
        "batch_0000008.png",
    ]
    metrics = (smoke_run / "csv" / "version_0" / "metrics.csv").read_text()
    assert "train/loss_coherence_step" in metrics and "loss_background" not in metrics
    assert (smoke_run / ".hydra" / "config.yaml").is_file()
    assert "normal_train=8" in (smoke_run / "train.log").read_text()


def test_resume_continues_from_last_checkpoint(smoke_run, cache_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)  # the shared run stays as it was
    run_train(
        "product=tile",
        "ablation=no_LB",
        "experiment=smoke",
        f"hydra.run.dir={run}",
        "ckpt_path=last",
        "model.schedule.n_epochs=2",
        cache_dir=cache_dir,
    )
    checkpoint = load(run / "checkpoints" / "last.ckpt")
    assert checkpoint["epoch"] == 2 and checkpoint["global_step"] == 3 * 4 * 4
    assert not list(run.glob("checkpoints/last-v*.ckpt"))  # overwritten in the moved folder
    # the first session's metrics are kept; the resumed session logs a new version
    assert (run / "csv" / "version_0" / "metrics.csv").read_text().count("\n") > 8
    assert (run / "csv" / "version_1" / "metrics.csv").is_file()
    # the schedule resumed too: after 3 epochs of (1 constant, 1 decay) the lr factor is 0
    assert checkpoint["lr_schedulers"][0]["last_epoch"] == 3
    assert checkpoint["lr_schedulers"][0]["_last_lr"] == [0.0]


def test_ablation_without_coherence_has_no_d_c(tmp_path, cache_dir):
    run_train(
        "experiment=smoke",
        "ablation=no_LC_LB",
        f"hydra.run.dir={tmp_path}",
        "trainer.max_epochs=1",
        cache_dir=cache_dir,
    )
    state = load(tmp_path / "checkpoints" / "last.ckpt")["state_dict"]
    assert not any(k.startswith("D_C.") for k in state)
    assert len(load(tmp_path / "checkpoints" / "last.ckpt")["optimizer_states"]) == 3


def test_multirun_grid_gives_one_folder_per_job_with_its_overrides(tmp_path, cache_dir):
    run_train(
        "-m",
        "experiment=smoke",
        "loss.lambda_c=50,150",
        "loss.lambda_b=0.01,0.05",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        f"hydra.sweep.dir={tmp_path}",
        cache_dir=cache_dir,
    )
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(jobs) == 4
    seen = set()
    for job in jobs:
        hparams = yaml.safe_load((job / "csv" / "version_0" / "hparams.yaml").read_text())
        overrides = set(hparams["overrides"])
        lam_c = next(o for o in overrides if o.startswith("loss.lambda_c="))
        lam_b = next(o for o in overrides if o.startswith("loss.lambda_b="))
        assert lam_c in job.name and lam_b in job.name
        assert hparams["config"]["loss"]["lambda_c"] == float(lam_c.split("=")[1])
        assert (job / "checkpoints" / "last.ckpt").is_file()
        seen.add((lam_c, lam_b))
    assert len(seen) == 4


def test_failing_job_does_not_stop_the_sweep_and_the_summary_says_why(tmp_path, cache_dir):
    proc = run_train(
        "-m",
        "experiment=smoke",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "data.category=no_such_product,tile",
        f"hydra.sweep.dir={tmp_path}",
        cache_dir=cache_dir,
        check=False,
    )
    assert proc.returncode != 0  # the sweep reports that a job failed ...
    jobs = json.loads((tmp_path / "summary.json").read_text())
    assert [j["status"] for j in jobs] == ["failed", "completed"]  # ... after running them all
    assert "data.category=no_such_product" in jobs[0]["overrides"]
    assert "no_such_product" in jobs[0]["error"] and "tile" in jobs[0]["error"]
    assert (Path(jobs[1]["output_dir"]) / "checkpoints" / "last.ckpt").is_file()
    summary = (tmp_path / "summary.md").read_text()
    assert "2 job(s), 1 failed" in summary and "| 0 | failed |" in summary


def test_real_mvtec_samples_train(tmp_path, cache_dir, mvtec_mini):
    run_train(
        "experiment=smoke",
        "product=tile",
        f"data.root={mvtec_mini}",
        "trainer.max_epochs=1",
        f"hydra.run.dir={tmp_path}",
        cache_dir=cache_dir,
    )
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert "defect_train=3" in (tmp_path / "train.log").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data.root=/nonexistent/mvtec"], "data.root='/nonexistent/mvtec' does not exist"),
        (["data.category=bottle", "data.defect=broken_large"], "procedural data"),
        (["product=wood", "data.defect=crack"], "has the defect 'hole'"),
        (["data.image_size=30"], "must be a multiple of 4"),
        (["model.generator.norm=layer"], "model.norm='layer'"),
    ],
)
def test_bad_input_is_one_clear_line_without_traceback(tmp_path, cache_dir, args, message):
    proc = run_train(
        "experiment=smoke", f"hydra.run.dir={tmp_path}", *args, cache_dir=cache_dir, check=False
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_category_in_real_data_lists_available(tmp_path, cache_dir, mvtec_mini):
    proc = run_train(
        "experiment=smoke",
        f"data.root={mvtec_mini}",
        "data.category=cable",
        "data.defect=bent_wire",
        f"hydra.run.dir={tmp_path}",
        cache_dir=cache_dir,
        check=False,
    )
    assert proc.returncode == 2
    assert "Available categories: ['bottle', 'carpet', 'grid', 'tile', 'transistor', 'wood']" in (
        proc.stderr
    )


def test_ddp_on_two_cpu_processes_keeps_ranks_identical(tmp_path, cache_dir):
    """trainer=ddp on the gloo backend: two processes, one output folder, equal weights."""
    digests = tmp_path / "digests"
    run_train(
        "experiment=smoke",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_epochs=1",
        f"hydra.run.dir={tmp_path / 'run'}",
        "+callbacks.digest._target_=tests.helpers.WeightsDigest",
        f"+callbacks.digest.dirpath={digests}",
        cache_dir=cache_dir,
    )
    rank0, rank1 = (digests / "rank0.txt").read_text(), (digests / "rank1.txt").read_text()
    assert rank0 == rank1
    checkpoint = load(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 2 * 4  # 8 items / 2 ranks / batch 2 = 2 batches
    # one output folder: the second rank logged into the first rank's run folder
    assert (tmp_path / "run" / "train_ddp_process_1.log").is_file()


def test_optuna_sweep_trains_evaluates_and_reports_the_best_lambdas(tmp_path, cache_dir):
    run_train(
        "-m",
        "hparams_search=lambda_optuna",
        "experiment=smoke",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=2",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        f"hydra.sweep.dir={tmp_path}",
        cache_dir=cache_dir,
    )
    results = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == {
        "loss.lambda_c",
        "loss.lambda_b",
        "loss.lambda_cycle",
        "loss.lambda_id",
    }
    assert results["best_value"] > 0  # a real FID of a barely trained model
    trials = [p for p in tmp_path.iterdir() if (p / "evaluate" / "metrics.json").is_file()]
    assert len(trials) == 2


def test_logger_none_trains_without_any_logger(tmp_path, cache_dir):
    run_train(
        "experiment=smoke",
        "logger=none",
        "trainer.max_epochs=1",
        f"hydra.run.dir={tmp_path}",
        cache_dir=cache_dir,
    )
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "csv").exists() and not (tmp_path / "wandb").exists()


def test_custom_folders_train_and_generate(tmp_path, cache_dir):
    from tests.data.test_datamodule import folder_product

    folders = folder_product(tmp_path / "data")
    run_train(
        "experiment=smoke",
        "data=folder",
        f"data.folders.normal={folders['normal']}",
        f"data.folders.defect={folders['defect']}",
        f"data.folders.mask={folders['mask']}",
        "data.mask_suffix=_label",
        "data.category=widget",
        "data.image_size=16",
        "trainer.max_epochs=1",
        f"hydra.run.dir={tmp_path / 'run'}",
        cache_dir=cache_dir,
    )
    from tests.helpers import run_script

    run_script(
        "generate.py",
        f"ckpt={tmp_path}/run/checkpoints/last.ckpt",
        "logger=none",
        f"out={tmp_path / 'synthetic'}",
        f"hydra.run.dir={tmp_path / 'gen'}",
        cache_dir=cache_dir,
    )
    synthetic = tmp_path / "synthetic" / "widget" / "test" / "defect_synthetic"
    assert len(list(synthetic.iterdir())) == 1
