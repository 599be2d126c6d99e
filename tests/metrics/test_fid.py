"""Fréchet / kernel distances against closed forms, scipy and torchmetrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torchmetrics.image.kid import poly_mmd

from defectsynth.metrics import (
    extract_features,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    kid_from_features,
)


def _spd(rng: np.random.Generator, dim: int) -> np.ndarray:
    x = rng.normal(size=(dim, dim))
    return x @ x.T + 0.1 * np.eye(dim)


def test_frechet_distance_diagonal_closed_form() -> None:
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    var1, var2 = rng.uniform(0.1, 3.0, 6), rng.uniform(0.1, 3.0, 6)
    expected = ((mu1 - mu2) ** 2).sum() + (var1 + var2 - 2 * np.sqrt(var1 * var2)).sum()
    got = frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2))
    assert got == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_full_covariance_matches_scipy_sqrtm() -> None:
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    sigma1, sigma2 = _spd(rng, 5), _spd(rng, 5)
    root = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(root)
    got = frechet_distance(
        torch.from_numpy(mu1), torch.from_numpy(sigma1), torch.from_numpy(mu2), sigma2
    )
    assert got == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_singular_closed_form() -> None:
    # rank-deficient covariances: tr = 1 + 4 + 9, cross term 2·√(1·4) (the zero axes add nothing)
    got = frechet_distance(
        np.zeros(3), np.diag([1.0, 0.0, 0.0]), np.zeros(3), np.diag([4.0, 0.0, 9.0])
    )
    assert got == pytest.approx(10.0, rel=1e-12)


def test_frechet_distance_rejects_bad_shapes_and_nan() -> None:
    with pytest.raises(ValueError, match="sigma2"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.full(2, np.nan), np.eye(2), np.zeros(2), np.eye(2))


def test_feature_statistics_is_mean_and_unbiased_covariance() -> None:
    features = np.random.default_rng(2).normal(size=(9, 4))
    mu, sigma = feature_statistics(torch.from_numpy(features).float())
    np.testing.assert_allclose(mu, features.mean(0), rtol=1e-6)
    np.testing.assert_allclose(sigma, np.cov(features.T, ddof=1), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="N ≥ 2"):
        feature_statistics(np.zeros((1, 4)))


def test_fid_identical_sets_is_zero_and_shift_adds_its_square_norm() -> None:
    features = torch.randn(50, 8, generator=torch.Generator().manual_seed(3))
    assert fid_from_features(features, features) == pytest.approx(0.0, abs=1e-8)
    # same covariance, means 1 apart in each of 8 axes: FID = ‖shift‖² = 8
    assert fid_from_features(features, features + 1.0) == pytest.approx(8.0, rel=1e-6)


def test_fid_with_fewer_samples_than_dims_is_finite() -> None:
    # the paper's situation: ~8-14 real images against 64-d features
    g = torch.Generator().manual_seed(4)
    real, fake = torch.randn(8, 64, generator=g), torch.randn(12, 64, generator=g) + 0.5
    value = fid_from_features(real, fake)
    assert math.isfinite(value) and value > 0
    assert fid_from_features(real, real) == pytest.approx(0.0, abs=1e-6)


def test_kid_full_single_subset_equals_torchmetrics_poly_mmd() -> None:
    g = torch.Generator().manual_seed(5)
    real, fake = torch.randn(20, 6, generator=g), torch.randn(20, 6, generator=g)
    mean, std = kid_from_features(real, fake, subsets=1, subset_size=20)
    assert mean == pytest.approx(float(poly_mmd(real.double(), fake.double())), rel=1e-9)
    assert std == 0.0


def test_kid_identical_near_zero_shifted_clearly_positive() -> None:
    g = torch.Generator().manual_seed(6)
    real = torch.randn(60, 16, generator=g)
    same_mean, same_std = kid_from_features(real, real, subsets=20, subset_size=30)
    shifted_mean, _ = kid_from_features(real, real + 2.0, subsets=20, subset_size=30)
    assert isinstance(same_mean, float) and isinstance(same_std, float) and same_std >= 0
    assert shifted_mean > 1.0
    assert abs(same_mean) < 0.05 * shifted_mean


def test_kid_is_reproducible_and_shrinks_subsets_to_the_sets() -> None:
    g = torch.Generator().manual_seed(7)
    real, fake = torch.randn(9, 4, generator=g), torch.randn(14, 4, generator=g)
    first = kid_from_features(real, fake, subsets=5, seed=3)
    assert first == kid_from_features(real, fake, subsets=5, seed=3)
    assert first != kid_from_features(real, fake, subsets=5, seed=4)
    with pytest.raises(ValueError, match="≥ 2 samples"):
        kid_from_features(real[:1], fake)


def test_extract_features_batches_without_grad() -> None:
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5))
    images = torch.rand(7, 3, 4, 4) * 2 - 1
    features = extract_features(net, images, batch_size=3)
    assert features.shape == (7, 5) and features.dtype == torch.float32
    assert not features.requires_grad
    torch.testing.assert_close(features, net(images).detach())
