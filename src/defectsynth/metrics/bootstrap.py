"""Bootstrap intervals over images for every metric, from features and distances already computed.

The real sets here hold 2–14 images, so a metric's point value says little without its spread.
Each resample draws the generated set and every real set independently, with replacement, and is
represented by *multiplicity weights* (how often each original image was drawn). Every statistic
below is then a weighted function of matrices computed once (feature Gram matrices, LPIPS distance
matrices, per-image mask statistics), vectorised over resamples: no network runs again.

Pairwise statistics (LPIPS diversity, IC-LPIPS, KID's within-set kernel terms) average over pairs
of *distinct original images*: a resample draws some images twice, and the pair of an image with
its own copy (distance 0, kernel k(x, x)) would bias them. With all weights 1 each statistic equals
its point value exactly (tests check this against the point implementations).

Intervals are percentile intervals of the resampled statistics. FID is biased upwards on small
sets and a resample has fewer distinct images than the set, so its interval can lie above the
point value: that says the set is too small for the number to mean much.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Resampler:
    """Seeded multiplicity weights, one (n_resamples, n) matrix per named set, drawn once so
    that every metric sees the same resample of the same set."""

    n_resamples: int
    seed: int = 0
    _weights: dict[str, np.ndarray] = field(default_factory=dict)
    _sizes: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n_resamples < 1:
            raise ValueError(f"metrics.bootstrap.n={self.n_resamples}; expected ≥ 1 (0 = off)")

    def weights(self, name: str, n: int) -> np.ndarray:
        """(n_resamples, n) float64 counts summing to n per row, for set ``name`` of size n."""
        if n < 1:
            raise ValueError(f"cannot resample the empty set {name!r}")
        if name in self._weights:
            if self._sizes[name] != n:
                raise ValueError(f"set {name!r} was resampled with {self._sizes[name]} images")
            return self._weights[name]
        # one stream per set name: adding a set never changes another set's draws
        key = [self.seed, *name.encode()]
        rng = np.random.default_rng(key)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=self.n_resamples)
        self._weights[name], self._sizes[name] = counts.astype(np.float64), n
        return self._weights[name]


def percentile_interval(
    values: np.ndarray, level: float = 0.95, min_valid: float = 0.5
) -> list[float] | None:
    """[lo, hi] percentile interval of the finite resampled values; None when fewer than
    ``min_valid`` of them are finite (the statistic is undefined on most resamples)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"metrics.bootstrap.level={level}; expected a fraction in (0, 1)")
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = values[np.isfinite(values)]
    if values.size == 0 or finite.size < min_valid * values.size:
        return None
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(finite, [tail, 1.0 - tail])
    return [float(lo), float(hi)]


def _quadratic(w1: np.ndarray, matrix: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """(B,) w1ᵀ M w2 per resample, as two matrix products (einsum would loop naively)."""
    return ((w1 @ matrix) * w2).sum(axis=1)


def _as_2d(weights: np.ndarray) -> np.ndarray:
    weights = np.asarray(weights, dtype=np.float64)
    return weights[None, :] if weights.ndim == 1 else weights


def weighted_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B,) weighted means of per-image ``values`` (n,) under (B, n) weights."""
    w = _as_2d(weights)
    return (w @ np.asarray(values, dtype=np.float64)) / w.sum(axis=1)


def weighted_ratio(
    numerator: np.ndarray, denominator: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """(B,) Σ w·num / Σ w·den (pooled ratios such as a set-level IoU); NaN where Σ w·den = 0."""
    w = _as_2d(weights)
    num = w @ np.asarray(numerator, dtype=np.float64)
    den = w @ np.asarray(denominator, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def distinct_pair_mean(matrix: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B,) mean of a symmetric (n, n) matrix over ordered pairs of resampled images that are
    distinct originals: (wᵀMw − Σ w² M_ii) / ((Σw)² − Σw²). NaN with < 2 distinct images."""
    w = _as_2d(weights)
    m = np.asarray(matrix, dtype=np.float64)
    total = _quadratic(w, m, w) - (w**2) @ np.diag(m)
    pairs = w.sum(axis=1) ** 2 - (w**2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, total / np.where(pairs > 0, pairs, 1.0), np.nan)


def selected_pair_mean(matrix: np.ndarray, selected: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B,) mean of ``matrix`` over the ordered pairs (i, j) with ``selected[i, j]`` = 1 (a 0/1
    matrix with a zero diagonal), each weighted by w_i · w_j: (wᵀ(M⊙S)w) / (wᵀSw). NaN where a
    resample holds no selected pair."""
    w = _as_2d(weights)
    s = np.asarray(selected, dtype=np.float64)
    total = _quadratic(w, np.asarray(matrix, dtype=np.float64) * s, w)
    pairs = _quadratic(w, s, w)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, total / np.where(pairs > 0, pairs, 1.0), np.nan)


def nearest_distance_mean(
    fake_to_train: np.ndarray, fake_weights: np.ndarray, train_weights: np.ndarray
) -> np.ndarray:
    """(B,) Dist-to-train: weighted mean over fakes of the distance to the nearest training image
    present in the resample."""
    d = np.asarray(fake_to_train, dtype=np.float64)
    wf, wt = _as_2d(fake_weights), _as_2d(train_weights)
    masked = np.where(wt[:, None, :] > 0, d[None, :, :], np.inf)  # (B, n_fake, n_train)
    nearest = masked.min(axis=2)
    return (wf * nearest).sum(axis=1) / wf.sum(axis=1)


def intra_cluster_lpips(
    fake_pairs: np.ndarray,
    fake_to_train: np.ndarray,
    fake_weights: np.ndarray,
    train_weights: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(B,) IC-LPIPS in both definitions, (DFMGAN, non-empty clusters only).

    Clusters are the training images present in the resample (weighted by their multiplicity, so a
    training image drawn twice is one cluster counted twice rather than an empty twin); each fake
    joins its nearest one (ties: lower index). A cluster's value is its distinct-pair mean LPIPS.
    DFMGAN: clusters without a pair of distinct fakes count 0, mean over all clusters. Non-empty:
    mean over clusters with a pair (NaN when there is none).
    """
    pairs = np.asarray(fake_pairs, dtype=np.float64)
    d = np.asarray(fake_to_train, dtype=np.float64)
    wf, wt = _as_2d(fake_weights), _as_2d(train_weights)
    n_train = d.shape[1]
    masked = np.where(wt[:, None, :] > 0, d[None, :, :], np.inf)
    nearest = masked.argmin(axis=2)  # (B, n_fake)
    members = (nearest[:, :, None] == np.arange(n_train)).astype(np.float64) * wf[:, :, None]
    # Σ over ordered member pairs of distinct originals: the diagonal of MᵀPM minus self-pairs
    total = (members * np.matmul(pairs, members)).sum(axis=1)
    total -= np.diag(pairs) @ (members**2)
    n_pairs = members.sum(axis=1) ** 2 - (members**2).sum(axis=1)
    has_pair = n_pairs > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        cluster_value = np.where(has_pair, total / np.where(has_pair, n_pairs, 1.0), 0.0)
    dfmgan = (wt * cluster_value).sum(axis=1) / wt.sum(axis=1)
    used = wt * has_pair
    with np.errstate(invalid="ignore", divide="ignore"):
        nonempty = np.where(
            used.sum(axis=1) > 0, (used * cluster_value).sum(axis=1) / used.sum(axis=1), np.nan
        )
    return dfmgan, nonempty


def _centred_cross(
    gram: np.ndarray, w1: np.ndarray, w2: np.ndarray, n1: np.ndarray, n2: np.ndarray
) -> np.ndarray:
    """(B, n1, n2) (a_i − μ₁)·(b_j − μ₂) from the Gram matrix a_i·b_j and weighted means."""
    row = (w1 @ gram) / n1[:, None]  # μ₁·b_j
    col = (w2 @ gram.T) / n2[:, None]  # a_i·μ₂
    both = _quadratic(w1, gram, w2) / (n1 * n2)  # μ₁·μ₂
    return gram[None] - row[:, None, :] - col[:, :, None] + both[:, None, None]


def frechet_from_gram(
    gram_real: np.ndarray,
    gram_fake: np.ndarray,
    gram_cross: np.ndarray,
    real_weights: np.ndarray,
    fake_weights: np.ndarray,
) -> np.ndarray:
    """(B,) FID of weighted real and fake feature sets, from their Gram matrices alone.

    With Σ₁ = AAᵀ, Σ₂ = BBᵀ (A's columns: √w_i (a_i − μ₁)/√(n₁−1)), the non-zero spectrum of
    √Σ₁Σ₂√Σ₁ is that of (AᵀB)(AᵀB)ᵀ, so tr (Σ₁Σ₂)^½ is the nuclear norm of the small n₁×n₂ matrix
    AᵀB: exact for any feature dimension, and a resample costs an SVD of set-size matrices rather
    than two eigendecompositions of D×D (2048×2048) covariances.
    """
    g11, g22, g12 = (np.asarray(g, dtype=np.float64) for g in (gram_real, gram_fake, gram_cross))
    w1, w2 = _as_2d(real_weights), _as_2d(fake_weights)
    n1, n2 = w1.sum(axis=1), w2.sum(axis=1)
    m11 = _quadratic(w1, g11, w1) / n1**2  # ‖μ₁‖²
    m22 = _quadratic(w2, g22, w2) / n2**2
    m12 = _quadratic(w1, g12, w2) / (n1 * n2)
    mean_term = m11 + m22 - 2.0 * m12
    trace1 = (w1 @ np.diag(g11) - n1 * m11) / (n1 - 1.0)
    trace2 = (w2 @ np.diag(g22) - n2 * m22) / (n2 - 1.0)
    cross = _centred_cross(g12, w1, w2, n1, n2)
    scaled = np.sqrt(w1)[:, :, None] * cross * np.sqrt(w2)[:, None, :]
    scaled /= np.sqrt((n1 - 1.0) * (n2 - 1.0))[:, None, None]
    nuclear = np.linalg.svd(scaled, compute_uv=False).sum(axis=1)
    return np.maximum(mean_term + trace1 + trace2 - 2.0 * nuclear, 0.0)


def _psd_sqrt_batched(matrices: np.ndarray) -> np.ndarray:
    eigvals, eigvecs = np.linalg.eigh((matrices + np.swapaxes(matrices, -1, -2)) / 2.0)
    return (eigvecs * np.sqrt(np.clip(eigvals, 0.0, None))[:, None, :]) @ np.swapaxes(
        eigvecs, -1, -2
    )


def _weighted_moments(features: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = weights.sum(axis=1)
    mean = (weights @ features) / n[:, None]
    second = np.swapaxes(features[None] * weights[:, :, None], 1, 2) @ features  # Xᵀ diag(w) X
    cov = second - n[:, None, None] * mean[:, :, None] * mean[:, None, :]
    return mean, cov / (n - 1.0)[:, None, None]


def frechet_from_covariances(
    real: np.ndarray, fake: np.ndarray, real_weights: np.ndarray, fake_weights: np.ndarray
) -> np.ndarray:
    """(B,) FID of weighted feature sets through D×D covariances (as the point value): the
    cheaper path when both sets are larger than the feature dimension."""
    w1, w2 = _as_2d(real_weights), _as_2d(fake_weights)
    mu1, sigma1 = _weighted_moments(np.asarray(real, np.float64), w1)
    mu2, sigma2 = _weighted_moments(np.asarray(fake, np.float64), w2)
    root1 = _psd_sqrt_batched(sigma1)
    middle = root1 @ sigma2 @ root1
    eigvals = np.linalg.eigvalsh((middle + np.swapaxes(middle, -1, -2)) / 2.0)
    trace_sqrt = np.sqrt(np.clip(eigvals, 0.0, None)).sum(axis=1)
    diff = mu1 - mu2
    value = (diff**2).sum(axis=1) + np.trace(sigma1, axis1=1, axis2=2)
    value += np.trace(sigma2, axis1=1, axis2=2) - 2.0 * trace_sqrt
    return np.maximum(value, 0.0)


def frechet_resampled(
    real: np.ndarray,
    fake: np.ndarray,
    real_weights: np.ndarray,
    fake_weights: np.ndarray,
    max_elements: int = 2**22,
) -> np.ndarray:
    """(B,) FID of every resample of (n₁, D) real and (n₂, D) fake features: through the Gram
    matrices when a set is smaller than D (the usual case here), else through covariances;
    resamples are processed in chunks of about ``max_elements`` floats."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    w1, w2 = _as_2d(real_weights), _as_2d(fake_weights)
    n1, n2, dim = real.shape[0], fake.shape[0], real.shape[1]
    gram_path = min(n1, n2) <= dim
    per_resample = n1 * n2 if gram_path else dim * dim
    chunk = max(1, max_elements // per_resample)
    if gram_path:
        grams = (real @ real.T, fake @ fake.T, real @ fake.T)
    out = []
    for start in range(0, w1.shape[0], chunk):
        a, b = w1[start : start + chunk], w2[start : start + chunk]
        if gram_path:
            out.append(frechet_from_gram(*grams, a, b))
        else:
            out.append(frechet_from_covariances(real, fake, a, b))
    return np.concatenate(out)


def polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """KID's kernel k(x, y) = (x·y / D + 1)³ between (n, D) and (m, D) features."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def mmd_from_kernels(
    kernel_real: np.ndarray,
    kernel_fake: np.ndarray,
    kernel_cross: np.ndarray,
    real_weights: np.ndarray,
    fake_weights: np.ndarray,
) -> np.ndarray:
    """(B,) unbiased MMD² (KID's statistic) of weighted sets: within-set terms over pairs of
    distinct originals, the cross term over all pairs. With weights 1 this is the full-set
    U-statistic, the value KID's average over random subsets converges to."""
    w1, w2 = _as_2d(real_weights), _as_2d(fake_weights)
    cross = _quadratic(w1, np.asarray(kernel_cross, np.float64), w2)
    cross /= w1.sum(axis=1) * w2.sum(axis=1)
    return distinct_pair_mean(kernel_real, w1) + distinct_pair_mean(kernel_fake, w2) - 2.0 * cross
