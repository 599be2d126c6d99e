"""The job behind ``src/generate.py``: checkpoint + data options → a synthetic defect dataset."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from defectsynth import config as _config  # noqa: F401  (registers resolvers)
from defectsynth.data.cache import ImageCache
from defectsynth.data.datamodule import DefectDataModule
from defectsynth.data.mvtec import BadFiles, folder_images, image_extensions
from defectsynth.data.transforms import EvalTransform
from defectsynth.errors import ConfigError, DataError
from defectsynth.synthesis import (
    SynthesisLayout,
    is_controllable,
    is_latent,
    load_model,
    resolve_device,
    synthesize,
    write_info,
)
from defectsynth.training import instantiate_loggers

log = logging.getLogger(__name__)
SOURCE_SPLITS = ("normal_test", "normal_train")


def datamodule_from(
    checkpoint: Mapping[str, Any], overrides: Mapping[str, Any], cache_dir: str | None
) -> DefectDataModule:
    """The data the checkpoint was trained on, with every non-null override applied;
    ``data.root=procedural`` forces the built-in data."""
    options = dict(checkpoint.get("datamodule_hyper_parameters") or {})
    options.update({k: v for k, v in overrides.items() if v is not None})
    if options.get("root") == "procedural":
        options["root"] = None
    if not options.get("category") or not options.get("defect"):
        raise ConfigError(
            "the checkpoint does not record its data: set product=... or data.category=... "
            "data.defect=... (and data.root=...)"
        )
    options.update(cache_dir=cache_dir, num_workers=0)
    accepted = inspect.signature(DefectDataModule).parameters
    return DefectDataModule(**{k: v for k, v in options.items() if k in accepted})


def folder_sources(
    folder: Path,
    image_size: int,
    cache: ImageCache,
    image_ext: str | list[str] | None = None,
) -> tuple[torch.Tensor, list]:
    """The images of ``input=<folder>``, told apart from masks beside them as in training
    (``data.image_ext``; without it, two image files of one stem are an error)."""
    extensions = image_extensions(image_ext, "data.image_ext")
    paths, _ = folder_images("input", Path(folder), extensions, BadFiles())
    if not paths:
        raise DataError(f"input={str(folder)!r} holds no images (png, jpg, bmp, tif).")
    transform = EvalTransform(image_size)
    images = [transform(cache.image(p, image_size))["image"] for p in paths]
    return torch.stack(images), [str(p) for p in paths]


def split_sources(datamodule: DefectDataModule, split: str) -> tuple[torch.Tensor, list]:
    if split not in SOURCE_SPLITS:
        raise ConfigError(f"source={split!r}; expected one of {list(SOURCE_SPLITS)}")
    datamodule.setup()
    dataset = datamodule.eval_dataset(split)
    if len(dataset) == 0:
        raise DataError(f"the {split} split of {datamodule.category} has no images; use input=DIR")
    paths = getattr(datamodule.split, split)
    return torch.stack([dataset[i]["image"] for i in range(len(dataset))]), [str(p) for p in paths]


def chosen_type(datamodule: DefectDataModule, name: str | None) -> int | None:
    """``defect_type=<name>`` as an index into the checkpoint's types (an error lists them)."""
    if name is None:
        return None
    types = list(datamodule.defect_types)
    if str(name) not in types:
        raise ConfigError(f"defect_type={name!r} is not one of this model's types {types}")
    return types.index(str(name))


def image_sizes(paths: list[str]) -> list[tuple[int, int]]:
    """(height, width) of each source image as stored (a mask matched by stem must fit it)."""
    sizes = []
    for path in paths:
        with Image.open(path) as image:
            sizes.append((image.height, image.width))
    return sizes


def control_options(
    cfg: DictConfig, model: Any, datamodule: DefectDataModule, names: list[str]
) -> dict[str, Any]:
    """``synthesize``'s placement / type arguments from ``placement=`` and ``defect_type=``
    (a model that takes neither gets a ConfigError from ``synthesize`` when they are set)."""
    placement_cfg = cfg.get("placement")
    mode = placement_cfg.get("mode") if placement_cfg else None
    defect_type = cfg.get("defect_type")
    if not is_controllable(model):
        return {"placement": mode, "defect_type": defect_type}
    placement, sizes = None, None
    if mode is not None:
        placement = datamodule.placement(str(mode), placement_cfg.get("mask_suffix", "_mask"))
        if placement.folder is not None:
            sizes = image_sizes(names)
    return {
        "placement": placement,
        "defect_type": chosen_type(datamodule, defect_type),
        "type_names": list(datamodule.defect_types),
        "source_sizes": sizes,
    }


def log_grid_to_wandb(loggers: list, out: Path, key: str = "synthesis/grid") -> None:
    """The grid of a synthesis folder ``out`` (see ``SynthesisLayout``) as a W&B image."""
    grid = Path(out) / "grid.png"
    if not grid.is_file():
        return
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            caption = "source | synthetic | mask | overlay"
            logger.log_image(key, images=[str(grid)], caption=[caption])


def loggers_for(cfg: DictConfig, info: dict[str, Any]) -> list:
    """The configured loggers, created once the data is known (it may come from the checkpoint
    or a samples folder), so a W&B run is grouped with the training run of its product."""
    cfg = cfg.copy()
    for key in ("category", "defect"):
        if OmegaConf.select(cfg, f"data.{key}") is None:
            OmegaConf.update(cfg, f"data.{key}", info[key], force_add=True)
    return instantiate_loggers(cfg)


def run_synthesis(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """Load ``cfg.ckpt``, translate the chosen sources (a latent model: sample as many items,
    from the seeds ``cfg.seed`` + i), write everything under ``out``."""
    device = resolve_device(cfg.device)
    model, checkpoint = load_model(cfg.ckpt, device)
    data_overrides = OmegaConf.to_container(cfg.data, resolve=True)
    datamodule = datamodule_from(checkpoint, data_overrides, cfg.paths.cache_dir)
    if cfg.get("input"):
        sources, names = folder_sources(
            Path(cfg.input), datamodule.image_size, datamodule.cache, datamodule.image_ext
        )
    else:
        sources, names = split_sources(datamodule, cfg.source)

    controls = control_options(cfg, model, datamodule, names)
    defect = datamodule.defect
    if controls.get("type_names") and controls["defect_type"] is not None:
        defect = controls["type_names"][controls["defect_type"]]
    layout = SynthesisLayout(Path(out), datamodule.category, defect)
    latent, seed = is_latent(model), int(cfg.get("seed") or 0)
    control = is_controllable(model)
    start = time.perf_counter()
    rows = synthesize(
        model,
        sources,
        names,
        layout,
        n_per_image=cfg.n_per_image,
        threshold=cfg.threshold,
        batch_size=cfg.batch_size,
        device=device,
        precision=str(cfg.precision),
        skip_existing=cfg.skip_existing,
        grid_rows=cfg.grid_rows,
        seed=seed,
        **controls,
    )
    seconds = time.perf_counter() - start
    info = {
        "ckpt": str(Path(cfg.ckpt).resolve()),
        "model_class": checkpoint.get("defectsynth", {}).get("model_class"),
        "model": checkpoint.get("defectsynth", {}).get("model_name"),
        "epoch": checkpoint.get("epoch"),
        "ablation": ((checkpoint.get("hyper_parameters") or {}).get("ablation") or {}).get("name"),
        "category": datamodule.category,
        "defect": defect,
        "data": {k: v for k, v in datamodule.hparams.items() if k != "cache_dir"},
        "source": str(cfg.input) if cfg.get("input") else cfg.source,
        "n_sources": len(names),
        "n_per_image": cfg.n_per_image,
        "n_images": len(rows),
        "seed": seed if latent or control else None,
        "threshold": cfg.threshold,
        # a latent model's images have its own size; a translation has its source's
        "image_size": int(model.image_size) if latent else int(sources.shape[-1]),
        **(
            {
                "placement": controls["placement"].describe()
                if controls["placement"] is not None
                else {"placement": "model"},
                "defect_type": defect if controls["defect_type"] is not None else None,
                "defect_types": controls["type_names"],
            }
            if control
            else {}
        ),
        "seconds": round(seconds, 3),
        "images_per_second": round(len(rows) / seconds, 3) if seconds > 0 else None,
    }
    write_info(layout, info)
    log.info(
        "wrote %d synthetic images%s to %s (%.2f images/s)",
        len(rows),
        " with masks" if getattr(model, "has_mask_output", True) else "",
        layout.image_dir,
        info["images_per_second"] or 0,
    )
    return info


def generate(cfg: DictConfig) -> dict[str, float]:
    out = Path(cfg.out) if cfg.get("out") else Path(cfg.paths.output_dir)
    info = run_synthesis(cfg, out)
    log_grid_to_wandb(loggers_for(cfg, info), out)
    return {"n_images": float(info["n_images"]), "images_per_second": info["images_per_second"]}
