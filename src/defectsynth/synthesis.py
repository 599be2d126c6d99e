"""Checkpoint → synthetic defective images with masks, written in the MVTec AD layout.

    <out>/<category>/test/<defect>_synthetic/NNN.png           synthetic defective images
    <out>/<category>/ground_truth/<defect>_synthetic/NNN_mask.png  binary masks (0/255)
    <out>/soft_mask/<category>/<defect>_synthetic/NNN_soft.png     sigmoid masks (8-bit)
    <out>/manifest.csv     one row per image: source, variant, seed, files, mask area
    <out>/synthesis.json   checkpoint, model, data options, threshold (read by evaluate.py)
    <out>/grid.png         source | synthetic | soft mask | overlay for the first rows

``<out>/<category>`` is a valid MVTec AD category as written (anomaly-detection readers such as
anomalib's take every image below it as a sample): whatever is not a sample or its ground truth
lives outside it. Folders written before (soft masks in ``<out>/<category>/soft_mask``) are
still read through their manifest, but not written into.

Every PNG is written to a temporary name and renamed; the image is written last, so an
interrupted run leaves no partial file and ``skip_existing`` resumes where it stopped.

An image-to-image model translates each source image (in up to 4 flip variants); a latent model
(``is_image_to_image = False``, e.g. DCGAN) has no source: it makes as many items, item i from
the latent code of seed ``seed + i``, recorded in the manifest.

A controllable model (``is_controllable``, model=defect_gan_control) makes any number of items
per source, item i with the noise code of seed ``seed + i``, a requested mask (from a
``Placement``, or the model's stored training masks) and a defect type; these go to

    <out>/requested_mask/<category>/<defect>_synthetic/NNN_requested.png

and to the manifest's extra columns (requested mask, defect type, placement, IoU of the
generated mask with the request).
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import numpy as np
import torch
from PIL import Image
from rich.progress import Progress

from defectsynth.checkpoint import CheckpointError, load_checkpoint
from defectsynth.errors import ConfigError, DataError
from defectsynth.utils.io import save_png, write_text
from defectsynth.utils.visualize import sample_panel, to_uint8

log = logging.getLogger(__name__)

MODEL_PACKAGE = "defectsynth.models."
DEFAULT_MODEL = "defectsynth.models.defect_gan.DefectGAN"
# the flips the generator saw during training: each gives a different, in-distribution output
FLIP_VARIANTS = ("identity", "hflip", "vflip", "hvflip")
MANIFEST_FIELDS = ("index", "source", "variant", "seed", "image", "mask", "soft_mask", "mask_area")
CONTROL_FIELDS = ("requested_mask", "defect_type", "placement", "request_iou")
# the variant of a controllable model's items: no flip, the code makes the variety
CODE_VARIANT = "code"
# folders of <out> beside (never inside) the MVTec category folder
SOFT_MASKS = "soft_mask"
REQUESTED_MASKS = "requested_mask"


class Synthesizer(Protocol):
    """What a model needs for image-to-image synthesis: normal images in, (image, mask) out."""

    def synthesize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]: ...


class LatentSynthesizer(Synthesizer, Protocol):
    """A model that samples (``is_image_to_image = False``): ``synthesize`` takes the latent
    codes that ``latents`` makes from integer seeds."""

    is_image_to_image: bool

    def latents(self, seeds: Sequence[int]) -> torch.Tensor: ...


# --------------------------------------------------------------------------- checkpoints
def import_model_class(path: str) -> type[L.LightningModule]:
    """Resolve a model class named in a checkpoint; only classes of this package are allowed,
    so a crafted checkpoint cannot make us import arbitrary code."""
    module_name, _, class_name = path.rpartition(".")
    if not path.startswith(MODEL_PACKAGE) or not module_name:
        raise CheckpointError(f"checkpoint names an unknown model class {path!r}")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise CheckpointError(
            f"checkpoint names a model class {path!r} that does not exist"
        ) from err
    if not (isinstance(cls, type) and issubclass(cls, L.LightningModule)):
        raise CheckpointError(f"{path!r} is not a LightningModule")
    return cls


def load_model(ckpt: Path | str, device: str | torch.device = "cpu") -> tuple[Any, dict]:
    """Rebuild the LightningModule from the hyper-parameters inside a checkpoint."""
    checkpoint = load_checkpoint(ckpt)
    class_path = checkpoint.get("defectsynth", {}).get("model_class", DEFAULT_MODEL)
    cls = import_model_class(class_path)
    try:
        model = cls(**checkpoint.get("hyper_parameters", {}))
        model.load_state_dict(checkpoint["state_dict"])
    except (TypeError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {ckpt} does not fit {class_path}: {err}") from err
    return model.eval().to(device), checkpoint


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} was asked for but CUDA is not available")
    return torch.device(name)


def autocast(device: torch.device, precision: str):
    if str(precision) in ("32", "32-true", "fp32"):
        return nullcontext()
    if str(precision) in ("bf16", "bf16-mixed"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    raise ConfigError(f"precision={precision!r}; expected 32 or bf16")


# --------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class SynthesisLayout:
    out: Path
    category: str
    defect: str

    @property
    def folder(self) -> str:
        return f"{self.defect}_synthetic"

    @property
    def image_dir(self) -> Path:
        return self.out / self.category / "test" / self.folder

    @property
    def mask_dir(self) -> Path:
        return self.out / self.category / "ground_truth" / self.folder

    @property
    def soft_dir(self) -> Path:
        return self.out / SOFT_MASKS / self.category / self.folder

    def requested_file(self, index: int) -> Path:
        folder = self.out / REQUESTED_MASKS / self.category / self.folder
        return folder / f"{index:03d}_requested.png"

    def legacy_dirs(self) -> list[Path]:
        """Folders of the layout before masks moved out of the category tree."""
        return [
            self.out / self.category / name
            for name in (SOFT_MASKS, REQUESTED_MASKS)
            if (self.out / self.category / name).is_dir()
        ]

    def check_writable(self) -> None:
        """Refuse to add to a folder of the old layout: its category would hold the masks of
        both layouts, and anomaly-detection readers take every image below it as a sample."""
        legacy = self.legacy_dirs()
        if legacy:
            names = ", ".join(str(p.relative_to(self.out)) for p in legacy)
            raise DataError(
                f"out={str(self.out)!r} was written by an older version: it keeps {names} "
                f"inside the category folder (now {SOFT_MASKS}/<category>/ and "
                f"{REQUESTED_MASKS}/<category>/ beside it). It can still be read (samples=), "
                "but not added to: write to a new out= folder, or move those folders to "
                f"<out>/{SOFT_MASKS}/{self.category}/ and <out>/{REQUESTED_MASKS}/"
                f"{self.category}/ and fix their paths in manifest.csv."
            )

    def files(self, index: int) -> tuple[Path, Path, Path]:
        stem = f"{index:03d}"
        return (
            self.image_dir / f"{stem}.png",
            self.mask_dir / f"{stem}_mask.png",
            self.soft_dir / f"{stem}_soft.png",
        )

    @property
    def manifest(self) -> Path:
        return self.out / "manifest.csv"

    @property
    def info(self) -> Path:
        return self.out / "synthesis.json"

    @property
    def grid(self) -> Path:
        return self.out / "grid.png"


@dataclass(frozen=True)
class Job:
    index: int
    source: int | None  # None: sampled from a latent code
    variant: str
    seed: int | None = None


def is_latent(model: Any) -> bool:
    return not getattr(model, "is_image_to_image", True)


def is_controllable(model: Any) -> bool:
    return bool(getattr(model, "is_controllable", False))


def flip(x: torch.Tensor, variant: str) -> torch.Tensor:
    """Apply a flip variant to (B, C, H, W); every variant is its own inverse (``code``, a
    controllable model's item, is not flipped)."""
    dims = {"identity": (), "hflip": (3,), "vflip": (2,), "hvflip": (2, 3), CODE_VARIANT: ()}[
        variant
    ]
    return x.flip(dims) if dims else x


def plan_jobs(n_sources: int, n_per_image: int) -> list[Job]:
    if not 1 <= n_per_image <= len(FLIP_VARIANTS):
        raise ConfigError(
            f"n_per_image={n_per_image}: this model is deterministic, so variety comes from the "
            f"{len(FLIP_VARIANTS)} flips it was trained with; choose 1..{len(FLIP_VARIANTS)}."
        )
    return [
        Job(s * n_per_image + v, s, FLIP_VARIANTS[v])
        for s in range(n_sources)
        for v in range(n_per_image)
    ]


def plan_latent_jobs(n_sources: int, n_per_image: int, base_seed: int = 0) -> list[Job]:
    """As many items as a translation of ``n_sources`` images would make; item i samples the
    latent code of seed ``base_seed + i``, so a resumed or repeated run makes the same items and
    any item can be remade alone from its seed."""
    if n_per_image < 1:
        raise ConfigError(f"n_per_image={n_per_image}: expected a positive number")
    return [Job(i, None, "latent", base_seed + i) for i in range(n_sources * n_per_image)]


def plan_control_jobs(n_sources: int, n_per_image: int, base_seed: int = 0) -> list[Job]:
    """``n_per_image`` items per source, item i with the noise code of seed ``base_seed + i``
    (a controllable model: variety comes from the codes and the requested masks, not flips)."""
    if n_per_image < 1:
        raise ConfigError(f"n_per_image={n_per_image}: expected a positive number")
    return [
        Job(s * n_per_image + v, s, CODE_VARIANT, base_seed + s * n_per_image + v)
        for s in range(n_sources)
        for v in range(n_per_image)
    ]


@dataclass
class Controls:
    """What a controllable model is asked for, one entry per job: requested masks (N, 1, H, W)
    in {0, 1}, type indices (None: one type), names and manifest descriptions."""

    masks: torch.Tensor
    types: list[int] | None
    type_names: list[str]
    descriptions: list[dict]


def control_inputs(
    model: Any,
    jobs: Sequence[Job],
    source_names: Sequence[str],
    size: tuple[int, int],
    seed: int,
    placement: Any | None = None,
    defect_type: int | None = None,
    type_names: Sequence[str] | None = None,
    source_sizes: Sequence[tuple[int, int]] | None = None,
) -> Controls:
    """The requested mask and type of every job, drawn up front from ``seed`` alone (so a
    resumed run asks for the same). ``placement``: a ``data.placement.Placement``; None: the
    model's stored training masks. ``defect_type`` None with several types: job i gets type
    i mod n_types, so every type is made."""
    n_types = int(getattr(model, "n_types", 1))
    names = list(type_names) if type_names else [f"type{i}" for i in range(n_types)]
    if len(names) != n_types:
        raise ConfigError(f"the model has {n_types} defect type(s) but {len(names)} names {names}")
    if defect_type is not None and not 0 <= int(defect_type) < n_types:
        raise ConfigError(f"defect_type={defect_type}; the model's types are {names}")
    types: list[int] | None = None
    if n_types > 1:
        types = [int(defect_type) if defect_type is not None else j.index % n_types for j in jobs]
    if placement is not None:
        stems = [Path(source_names[j.source]).stem for j in jobs if j.source is not None]
        sizes = None if source_sizes is None else [source_sizes[j.source] for j in jobs]
        masks, descriptions = placement.masks(
            len(jobs), size, seed, stems=stems, defect_types=types, source_sizes=sizes
        )
    else:
        mask_seeds = torch.randint(
            2**31 - 1, (len(jobs),), generator=torch.Generator().manual_seed(seed)
        )
        masks, drawn = model.fallback_masks(mask_seeds.tolist(), types)
        masks = torch.nn.functional.interpolate(masks.float().cpu(), size=size, mode="nearest")
        types = drawn.tolist() if n_types > 1 else None
        descriptions = [{"placement": "model", "seed": int(s)} for s in mask_seeds]
    chosen = [names[t] for t in types] if types is not None else [names[0]] * len(jobs)
    return Controls(masks.float(), types, chosen, descriptions)


def _restore(x: torch.Tensor, job: Job) -> torch.Tensor:
    """A translated item flipped back onto its source; a sampled item as it is."""
    return x if job.source is None else flip(x, job.variant)


def _batches(items: Sequence[Job], size: int) -> Iterator[Sequence[Job]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _mask_area(path: Path) -> float:
    return float((_read(path) > 0).mean())


def _iou(mask: Path, requested: Path) -> float:
    """IoU of two written binary masks: how closely the generated mask follows the request."""
    a, b = _read(mask) > 0, _read(requested) > 0
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def synthesize(
    model: Synthesizer | LatentSynthesizer,
    sources: torch.Tensor,
    source_names: Sequence[str],
    layout: SynthesisLayout,
    n_per_image: int = 1,
    threshold: float = 0.5,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    precision: str = "32",
    skip_existing: bool = False,
    grid_rows: int = 8,
    on_batch: Callable[[int], None] | None = None,
    seed: int = 0,
    placement: Any | None = None,
    defect_type: int | None = None,
    type_names: Sequence[str] | None = None,
    source_sizes: Sequence[tuple[int, int]] | None = None,
) -> list[dict[str, Any]]:
    """Translate ``sources`` (N, 3, H, W) in [-1, 1] — or, for a latent model, sample
    N · ``n_per_image`` items from the seeds ``seed``, ``seed`` + 1, … so that every method makes
    as many images; write images, masks and the manifest. A controllable model gets the
    requested masks of ``placement`` (see ``control_inputs``), ``defect_type`` (an index into
    ``type_names``) and the codes of seeds ``seed`` + i."""
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"threshold={threshold} must be in (0, 1)")
    if len(sources) != len(source_names):
        raise ValueError("one name per source image is needed")
    if len(sources) == 0:
        raise DataError("there are no source images to translate")
    layout.check_writable()
    device = torch.device(device)
    latent, control = is_latent(model), is_controllable(model)
    controls: Controls | None = None
    if latent:
        jobs = plan_latent_jobs(len(sources), n_per_image, seed)
    elif control:
        jobs = plan_control_jobs(len(sources), n_per_image, seed)
        size = (int(sources.shape[-2]), int(sources.shape[-1]))
        controls = control_inputs(
            model, jobs, source_names, size, seed, placement, defect_type, type_names, source_sizes
        )
    else:
        if placement is not None or defect_type is not None:
            raise ConfigError(
                "placement= and defect_type= need a controllable model "
                "(model=defect_gan_control); this checkpoint's model takes neither"
            )
        jobs = plan_jobs(len(sources), n_per_image)
    rows: dict[int, dict[str, Any]] = {}

    def row(job: Job, mask_area: float | None) -> dict[str, Any]:
        image, mask, soft = layout.files(job.index)
        has_mask = mask_area is not None
        extra: dict[str, Any] = {}
        if controls is not None:
            requested = layout.requested_file(job.index)
            extra = {
                "requested_mask": str(requested.relative_to(layout.out)),
                "defect_type": controls.type_names[job.index],
                "placement": json.dumps(controls.descriptions[job.index], sort_keys=True),
                "request_iou": f"{_iou(mask, requested):.6f}"
                if has_mask and requested.is_file()
                else "",
            }
        return {
            "index": job.index,
            "source": "" if job.source is None else source_names[job.source],
            "variant": job.variant,
            "seed": "" if job.seed is None else job.seed,
            "image": str(image.relative_to(layout.out)),
            "mask": str(mask.relative_to(layout.out)) if has_mask else "",
            "soft_mask": str(soft.relative_to(layout.out)) if has_mask else "",
            "mask_area": f"{mask_area:.6f}" if has_mask else "",
            **extra,
        }

    todo = []
    for job in jobs:
        image_path, mask_path, _ = layout.files(job.index)
        if skip_existing and image_path.is_file():
            rows[job.index] = row(job, _mask_area(mask_path) if mask_path.is_file() else None)
        else:
            todo.append(job)
    if len(todo) < len(jobs):
        log.info("skip_existing: %d of %d images already written", len(jobs) - len(todo), len(jobs))

    with Progress(transient=True) as progress, torch.inference_mode():
        task = progress.add_task("synthesising", total=len(todo))
        for chunk in _batches(todo, batch_size):
            inputs: dict[str, Any] = {}
            if latent:
                x = model.latents([j.seed for j in chunk])
            else:
                x = torch.stack(
                    [flip(sources[j.source : j.source + 1], j.variant)[0] for j in chunk]
                )
            if controls is not None:
                index = [j.index for j in chunk]
                inputs["requested"] = controls.masks[index].to(device)
                inputs["z"] = model.codes([j.seed for j in chunk]).to(device)
                if controls.types is not None:
                    types = [controls.types[i] for i in index]
                    inputs["defect_type"] = torch.tensor(types, device=device)
                for job in chunk:
                    mask_png = (controls.masks[job.index, 0] * 255).to(torch.uint8).numpy()
                    save_png(mask_png, layout.requested_file(job.index))
            with autocast(device, precision):
                image, mask = model.synthesize(x.to(device), **inputs)
            for i, job in enumerate(chunk):
                out_image = _restore(image[i : i + 1].float(), job)
                out_mask = None if mask is None else _restore(mask[i : i + 1].float(), job)
                rows[job.index] = row(
                    job, _write(layout, job.index, out_image, out_mask, threshold)
                )
            progress.advance(task, len(chunk))
            if on_batch is not None:
                on_batch(len(chunk))

    ordered = [rows[j.index] for j in jobs]
    write_manifest(ordered, layout.manifest, MANIFEST_FIELDS + (CONTROL_FIELDS if control else ()))
    write_grid(layout, jobs[:grid_rows], None if latent else sources, threshold)
    return ordered


def write_grid(
    layout: SynthesisLayout,
    jobs: Sequence[Job],
    sources: torch.Tensor | None,
    threshold: float,
) -> None:
    """source | synthetic | soft mask | overlay for ``jobs``, read back from the written PNGs
    (so a resumed run shows the same grid as an uninterrupted one); ``sources`` None (sampled
    items): a blank source column."""
    if not jobs or not all(layout.files(j.index)[0].is_file() for j in jobs):
        return
    image = (
        torch.stack(
            [torch.from_numpy(_read(layout.files(j.index)[0])).permute(2, 0, 1) for j in jobs]
        )
        .float()
        .div(127.5)
        .sub(1)
    )
    soft_files = [layout.files(j.index)[2] for j in jobs]
    mask = None
    if all(f.is_file() for f in soft_files):  # else a model without mask output
        mask = torch.stack([torch.from_numpy(_read(f)) for f in soft_files]).float().div(255)
        mask = mask.unsqueeze(1)
    source = None if sources is None else sources[[j.source for j in jobs]]
    save_png(sample_panel(source, image, mask, threshold), layout.grid)


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image)


def _write(
    layout: SynthesisLayout,
    index: int,
    image: torch.Tensor,
    mask: torch.Tensor | None,
    threshold: float,
) -> float | None:
    image_path, mask_path, soft_path = layout.files(index)
    area = None
    if mask is not None:
        soft = mask[0, 0].clamp(0, 1).cpu()
        binary = soft >= threshold
        save_png((soft * 255).round().to(torch.uint8).numpy(), soft_path)
        save_png((binary.to(torch.uint8) * 255).numpy(), mask_path)
        area = float(binary.float().mean())
    save_png(to_uint8(image)[0], image_path)  # last: its presence marks the item as done
    return area


# --------------------------------------------------------------------------- manifest
def write_manifest(
    rows: Sequence[dict[str, Any]], path: Path, fields: Sequence[str] = MANIFEST_FIELDS
) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_text(buffer.getvalue(), path)


def read_manifest(folder: Path) -> list[dict[str, str]]:
    path = Path(folder) / "manifest.csv"
    if not path.is_file():
        raise DataError(
            f"samples={str(folder)!r} holds no manifest.csv; expected a folder written by "
            "src/generate.py."
        )
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    missing = [r["image"] for r in rows if not (Path(folder) / r["image"]).is_file()]
    if missing:
        raise DataError(f"{path} lists {len(missing)} image(s) that are missing, e.g. {missing[0]}")
    return rows


def write_info(layout: SynthesisLayout, info: dict[str, Any]) -> None:
    write_text(json.dumps(info, indent=2, default=str) + "\n", layout.info)


def read_info(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "synthesis.json"
    if not path.is_file():
        raise DataError(f"{folder} holds no synthesis.json; expected a folder from src/generate.py")
    return json.loads(path.read_text(encoding="utf-8"))
