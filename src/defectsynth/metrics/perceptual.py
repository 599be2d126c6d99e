"""LPIPS (AlexNet, v0.1) loading and the LPIPS-based set metrics of the paper and its peers.

The metric functions take any ``distance(a, b) -> (B,)`` on [-1, 1] images, so they are tested
with hand-made distances; :class:`LpipsDistance` adapts a real ``lpips.LPIPS`` network.

LPIPS ships its own linear layers in the pip package but takes its backbone from torchvision,
which downloads the ImageNet weights on first use. Offline, the user copies that one file into the
hub cache or into ``metrics.weights_dir``; :func:`load_lpips` says which file and where.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from defectsynth.metrics.weights import (
    MissingWeightsError,
    describe_dirs,
    find_weight_file,
    hub_checkpoints_dir,
    search_dirs,
)

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# lpips net name -> torchvision weights enum whose file the lpips backbone loads
_BACKBONE_WEIGHTS = {
    "alex": "AlexNet_Weights",
    "vgg": "VGG16_Weights",
    "vgg16": "VGG16_Weights",
    "squeeze": "SqueezeNet1_1_Weights",
}


def backbone_url(net: str) -> str:
    """Download address of torchvision's ImageNet weights behind the lpips ``net`` backbone."""
    if net not in _BACKBONE_WEIGHTS:
        raise ValueError(f"LPIPS net {net!r}; expected one of {sorted(_BACKBONE_WEIGHTS)}")
    import torchvision.models as tvm

    return getattr(tvm, _BACKBONE_WEIGHTS[net]).IMAGENET1K_V1.url


def backbone_file(net: str = "alex") -> str:
    """File name of that download, e.g. ``alexnet-owt-7be5be79.pth`` for ``net="alex"``."""
    return backbone_url(net).rsplit("/", 1)[-1]


def _lpips_model(net: str, random_backbone: bool) -> nn.Module:
    import lpips

    with warnings.catch_warnings():
        # lpips still calls torchvision models with the deprecated ``pretrained=`` argument
        warnings.filterwarnings("ignore", message=".*'pretrained' is deprecated.*")
        warnings.filterwarnings("ignore", message=".*Arguments other than a weight enum.*")
        return lpips.LPIPS(
            pretrained=True, net=net, version="0.1", pnet_rand=random_backbone, verbose=False
        )


def _missing_message(net: str, reason: str, dirs: list[Path]) -> str:
    filename = backbone_file(net)
    return (
        f"LPIPS ({net}) needs torchvision's ImageNet weights {filename}; {reason}\n"
        f"Searched:\n{describe_dirs(dirs)}\n"
        f"Fix: download {backbone_url(net)} on a machine with internet access and put "
        f"{filename} in {hub_checkpoints_dir()} (torchvision's cache, used automatically), or "
        f"in any folder and set metrics.weights_dir=<folder>."
    )


def _load_normally(net: str) -> nn.Module:
    """The library's own way: torchvision reads the hub cache or downloads into it."""
    try:
        return _lpips_model(net, random_backbone=False)
    except OSError as err:  # URLError, timeouts, unwritable cache
        reason = f"it is not in the torch hub cache and the download failed ({err})."
    except RuntimeError as err:
        if "hash" not in str(err):
            raise
        reason = f"the downloaded file is corrupt ({err})."
    raise MissingWeightsError(_missing_message(net, reason, search_dirs(None)))


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


def _load_from_file(net: str, file: Path) -> nn.Module:
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


def load_lpips(weights_dir: str | Path | None = None, net: str = "alex") -> nn.Module:
    """``lpips.LPIPS(net, version="0.1")`` with pretrained backbone, in eval mode, frozen.

    Without ``weights_dir``: torchvision's usual download into the torch hub cache (a no-op when
    cached). With it: the backbone file is read from ``weights_dir`` (or the hub cache) and the
    network is never contacted. A missing file raises :class:`MissingWeightsError`.
    """
    filename = backbone_file(net)
    if weights_dir is None:
        model = _load_normally(net)
    else:
        file = find_weight_file(filename, weights_dir)
        if file is None:
            reason = "it is in none of the folders below (no download is tried with weights_dir)."
            raise MissingWeightsError(_missing_message(net, reason, search_dirs(weights_dir)))
        model = _load_from_file(net, file)
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
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


def lpips_diversity(
    distance: Distance, fakes: torch.Tensor, max_images: int | None = 100, batch_size: int = 32
) -> float:
    """Mean distance over all unordered pairs i < j of the first ``max_images`` fakes (the paper's
    "LPIPS" diversity; None = all images)."""
    images = fakes if max_images is None else fakes[:max_images]
    n = images.shape[0]
    if n < 2:
        raise ValueError(f"LPIPS diversity needs at least 2 images; got {n}")
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
) -> dict[str, float | int | None]:
    """Intra-cluster LPIPS (DFMGAN, AnomalyDiffusion): each fake joins the cluster of its nearest
    training image; the mean pairwise distance inside every cluster of ≥ 2 fakes is averaged over
    those clusters. ``clusters`` is the number of training images (one cluster each);
    ``value`` is None when no cluster has two members. Ties go to the lower training index.
    """
    matrix = _to_train(distance, fakes, train, batch_size, fake_to_train)
    nearest = matrix.argmin(dim=1)
    values = []
    for cluster in range(train.shape[0]):
        members = torch.nonzero(nearest == cluster).flatten()
        if members.numel() >= 2:
            group = fakes[members.to(fakes.device)]
            values.append(lpips_diversity(distance, group, max_images=None, batch_size=batch_size))
    return {
        "value": sum(values) / len(values) if values else None,
        "clusters_used": len(values),
        "clusters": int(train.shape[0]),
    }
