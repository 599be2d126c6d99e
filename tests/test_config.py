"""Every config group option and experiment composes, resolves and instantiates."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

import defectsynth.config  # noqa: F401  (resolvers)
from defectsynth.models.defect_gan import DefectGAN

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = [
    "data",
    "product",
    "model",
    "loss",
    "ablation",
    "trainer",
    "callbacks",
    "logger",
    "experiment",
    "paths",
    "hydra",
]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def make_cfg(*overrides: str, output_dir: str = "/tmp/defectsynth-test") -> DictConfig:
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = output_dir
        del cfg.hydra
    return cfg


def test_every_group_has_options():
    for group in GROUPS:
        assert options(group), group


@pytest.mark.parametrize(
    ("group", "option"),
    [(g, o) for g in GROUPS if g not in ("hydra", "paths") for o in options(g)],
)
def test_each_option_composes_and_resolves(group, option):
    cfg = make_cfg(f"{group}={option}")
    OmegaConf.resolve(cfg)
    assert cfg.data.category and cfg.data.defect
    assert cfg.trainer.max_epochs == (
        cfg.model.schedule.n_epochs + cfg.model.schedule.n_epochs_decay
    )


def test_defaults_are_the_paper_text():
    cfg = make_cfg()
    assert (cfg.data.category, cfg.data.defect) == ("tile", "crack")
    assert cfg.loss.lambda_cycle == 5 and cfg.loss.lambda_id == 10
    assert cfg.loss.lambda_c == 150 and cfg.loss.lambda_b == 0.05
    assert cfg.loss.background_region == "outside"
    assert cfg.model.generator == {
        "ngf": 64,
        "n_blocks": 9,
        "norm": "instance",
        "upsample": "transpose",
    }
    assert cfg.loss.lambda_area == 0 and cfg.model.stabilize.cycle_region == "all"
    assert instantiate(cfg.data).load_size == 286 and cfg.data.image_size == 256
    assert cfg.trainer.max_epochs == 300 and cfg.model.optimizer.lr == 2e-4


def test_author_code_preset():
    cfg = make_cfg("experiment=author_code")
    assert cfg.model.generator.norm == cfg.model.discriminator.norm == "batch"
    assert (cfg.loss.lambda_cycle, cfg.loss.lambda_id, cfg.loss.lambda_b) == (10, 5, 0.1)
    assert (cfg.loss.background_region, cfg.loss.background_reduction) == ("inside", "sum")
    assert cfg.data.augment.same_for_normal is True


@pytest.mark.parametrize(
    ("product", "defect"), [("tile", "crack"), ("wood", "hole"), ("transistor", "cut_lead")]
)
def test_product_presets_select_the_papers_defects(product, defect):
    cfg = make_cfg(f"product={product}")
    assert (cfg.data.category, cfg.data.defect) == (product, defect)


def test_any_category_and_defect_can_be_chosen():
    cfg = make_cfg("data.category=bottle", "data.defect=broken_large", "data.root=/data")
    assert (cfg.data.category, cfg.data.defect, cfg.data.root) == (
        "bottle",
        "broken_large",
        "/data",
    )


@pytest.mark.parametrize("ablation", options("ablation"))
def test_ablation_reaches_the_model(ablation):
    cfg = make_cfg("experiment=smoke", f"ablation={ablation}")
    model: DefectGAN = instantiate(cfg.model)
    assert ("coherence" in model.terms) == ("LC" not in ablation)
    assert ("background" in model.terms) == ("LB" not in ablation)


def test_smoke_experiment_instantiates_trainer_callbacks_and_loggers(tmp_path):
    from defectsynth.training import instantiate_group

    cfg = make_cfg("experiment=smoke", output_dir=str(tmp_path))
    callbacks = instantiate_group(cfg.callbacks)
    loggers = instantiate_group(cfg.logger)
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    assert trainer.max_epochs == 2 and trainer.limit_train_batches == 4
    assert {type(c).__name__ for c in callbacks} >= {
        "ModelCheckpoint",
        "LastCheckpoint",
        "SampleGrid",
    }


@pytest.mark.parametrize(
    ("trainer", "accelerator"), [("gpu", "gpu"), ("ddp", "gpu"), ("cpu", "cpu")]
)
def test_trainer_presets(trainer, accelerator):
    cfg = make_cfg(f"trainer={trainer}")
    assert cfg.trainer.accelerator == accelerator
    # cuDNN autotuning on the GPU presets, except where repeatability was asked for
    assert cfg.trainer.get("benchmark", False) is (trainer != "cpu")
    if trainer != "cpu":
        assert (
            make_cfg(f"trainer={trainer}", "trainer.deterministic=true").trainer.benchmark is False
        )
    if trainer == "ddp":
        assert cfg.trainer.strategy == "ddp_find_unused_parameters_true"
        assert cfg.trainer.devices == -1 and cfg.trainer.use_distributed_sampler is False


def test_wandb_logger_is_offline_without_a_key(monkeypatch, tmp_path):
    from defectsynth.utils.wandb import default_wandb_mode

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert default_wandb_mode() == "offline"
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert default_wandb_mode() == "online"


def hydra_cfg(*overrides: str) -> DictConfig:
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_joblib_launcher_for_parallel_local_sweeps():
    cfg = hydra_cfg("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")
    assert cfg.hydra.launcher.n_jobs == 2


def test_slurm_launcher_composes_for_clusters():
    cfg = hydra_cfg("hydra/launcher=slurm", "hydra.launcher.partition=gpu", "trainer.num_nodes=2")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1
    assert OmegaConf.select(cfg, "hydra.launcher.nodes") == 2  # follows trainer.num_nodes


def test_optuna_search_over_lambdas_returns_the_papers_fid():
    cfg = hydra_cfg("hparams_search=lambda_optuna")
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert cfg.optimized_metric == "eval/fid64" and cfg.evaluate_after_training is True
    assert set(cfg.hydra.sweeper.params) == {
        "loss.lambda_c",
        "loss.lambda_b",
        "loss.lambda_cycle",
        "loss.lambda_id",
    }


def test_a_defect_list_becomes_a_clean_run_name_and_wandb_group():
    from defectsynth.config import joined_names

    assert joined_names("crack") == "crack"
    assert joined_names(OmegaConf.create({"d": ["crack", "glue_strip"]}).d) == "crack+glue_strip"
