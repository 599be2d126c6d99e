"""Fréchet (FID) and kernel (KID) distances between two sets of feature vectors.

The paper's real set is the GAN's own training defects: 8–14 images against 64-d features, so the
covariance matrices are singular. ``scipy.linalg.sqrtm`` of a singular product can return complex
garbage; here the trace of the matrix square root is taken from the eigenvalues of the symmetric
PSD matrix √Σ₁ Σ₂ √Σ₁, which has the same non-negative spectrum as Σ₁Σ₂ and stays real and
finite whatever the rank.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torchmetrics.image.kid import poly_mmd

ArrayLike = np.ndarray | torch.Tensor


def _float64(array: ArrayLike) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().double().numpy()
    return np.asarray(array, dtype=np.float64)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix; round-off negative eigenvalues count as zero."""
    eigvals, eigvecs = np.linalg.eigh((matrix + matrix.T) / 2.0)
    return (eigvecs * np.sqrt(np.clip(eigvals, 0.0, None))) @ eigvecs.T


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁Σ₂)^½ in float64, for any (even singular) PSD Σ.

    The result is the squared 2-Wasserstein distance between the Gaussians, hence ≥ 0; round-off
    below zero is returned as 0.0.
    """
    mu1, mu2 = _float64(mu1).reshape(-1), _float64(mu2).reshape(-1)
    sigma1, sigma2 = _float64(sigma1), _float64(sigma2)
    dim = mu1.shape[0]
    for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        if sigma.shape != (dim, dim):
            raise ValueError(f"{name} has shape {sigma.shape}; expected ({dim}, {dim})")
    if mu2.shape != (dim,):
        raise ValueError(f"mu1 has {dim} entries but mu2 has {mu2.shape[0]}")
    if not all(np.isfinite(a).all() for a in (mu1, mu2, sigma1, sigma2)):
        raise ValueError("Fréchet distance inputs contain NaN or inf (diverged features?)")
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    eigvals = np.linalg.eigvalsh((middle + middle.T) / 2.0)
    trace_sqrt = float(np.sqrt(np.clip(eigvals, 0.0, None)).sum())
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)
    return max(value, 0.0)


def feature_statistics(features: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (ddof 1, as pytorch-fid) of (N, D) features, N ≥ 2."""
    array = _float64(features)
    if array.ndim != 2 or array.shape[0] < 2:
        raise ValueError(f"need (N ≥ 2, D) features for a covariance; got shape {array.shape}")
    return array.mean(axis=0), np.cov(array, rowvar=False, ddof=1).reshape(
        array.shape[1], array.shape[1]
    )


def fid_from_features(real: ArrayLike, fake: ArrayLike) -> float:
    """FID between (N, D) real and (M, D) fake features."""
    mu1, sigma1 = feature_statistics(real)
    mu2, sigma2 = feature_statistics(fake)
    return frechet_distance(mu1, sigma1, mu2, sigma2)


def kid_from_features(
    real: ArrayLike,
    fake: ArrayLike,
    subsets: int = 100,
    subset_size: int | None = None,
    seed: int = 0,
) -> tuple[float, float]:
    """KID (mean, population std over subsets): unbiased polynomial-kernel MMD² as torchmetrics
    (degree 3, γ = 1/D, coef 1), on random subsets of min(subset_size or 1000, N, M) samples.

    Unlike torchmetrics, small sets shrink the subset instead of raising, and a fixed seed makes
    the value reproducible.
    """
    f_real = torch.as_tensor(_float64(real))
    f_fake = torch.as_tensor(_float64(fake))
    if f_real.ndim != 2 or f_fake.ndim != 2 or f_real.shape[1] != f_fake.shape[1]:
        raise ValueError(
            f"need (N, D) and (M, D) features; got {tuple(f_real.shape)} and {tuple(f_fake.shape)}"
        )
    if subsets < 1:
        raise ValueError(f"KID subsets must be ≥ 1; got {subsets}")
    size = min(subset_size or 1000, f_real.shape[0], f_fake.shape[0])
    if size < 2:
        raise ValueError(f"KID needs subsets of ≥ 2 samples; the sets have {size} at most")
    generator = torch.Generator().manual_seed(seed)
    scores = []
    for _ in range(subsets):
        real_idx = torch.randperm(f_real.shape[0], generator=generator)[:size]
        fake_idx = torch.randperm(f_fake.shape[0], generator=generator)[:size]
        scores.append(poly_mmd(f_real[real_idx], f_fake[fake_idx], degree=3, gamma=None, coef=1.0))
    values = torch.stack(scores)
    return float(values.mean()), float(values.std(unbiased=False))


def _device_of(extractor: Callable[[torch.Tensor], torch.Tensor]) -> torch.device | None:
    if isinstance(extractor, nn.Module):
        for tensor in (*extractor.parameters(), *extractor.buffers()):
            return tensor.device
    return None


@torch.no_grad()
def extract_features(
    extractor: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, batch_size: int = 32
) -> torch.Tensor:
    """(N, D) float32 CPU features of (N, 3, H, W) images, ``batch_size`` at a time, no grad.

    Batches are moved to the extractor's device when it is a module holding tensors, so images
    may stay on the CPU while the network runs on a GPU.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1; got {batch_size}")
    device = _device_of(extractor)
    chunks = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size]
        if device is not None:
            batch = batch.to(device)
        features = extractor(batch)
        chunks.append(features.reshape(features.shape[0], -1).float().cpu())
    if not chunks:
        raise ValueError("extract_features got no images")
    return torch.cat(chunks)
