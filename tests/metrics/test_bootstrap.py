"""Bootstrap over images: every weighted statistic equals its point implementation at weights 1
and the statistic of the explicitly duplicated set at resampled weights; intervals contain the
point value of unbiased statistics and shrink as sets grow."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.image.kid import poly_mmd

from defectsynth.metrics import bootstrap as B
from defectsynth.metrics import (
    coherence_from_statistics,
    dist_to_train,
    fid_from_features,
    ic_lpips,
    lpips_diversity,
)


def features(n: int, dim: int, seed: int, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)) + shift


def symmetric_distances(n: int, seed: int) -> np.ndarray:
    points = np.random.default_rng(seed).uniform(size=(n, 2))
    return np.linalg.norm(points[:, None] - points[None], axis=2)


def duplicated(array: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return np.repeat(array, weights.astype(int), axis=0)


def test_resampler_is_seeded_per_set_and_sums_to_the_set_size() -> None:
    a, b = B.Resampler(50, seed=3), B.Resampler(50, seed=3)
    np.testing.assert_array_equal(a.weights("fake", 7), b.weights("fake", 7))
    assert a.weights("fake", 7) is a.weights("fake", 7)  # one draw shared by every metric
    assert (a.weights("fake", 7).sum(axis=1) == 7).all()
    # drawing another set first does not change this one's draws
    c = B.Resampler(50, seed=3)
    c.weights("train", 5)
    np.testing.assert_array_equal(c.weights("fake", 7), a.weights("fake", 7))
    assert not np.array_equal(B.Resampler(50, seed=4).weights("fake", 7), a.weights("fake", 7))
    with pytest.raises(ValueError, match="resampled with 7"):
        a.weights("fake", 8)
    with pytest.raises(ValueError, match=r"metrics\.bootstrap\.n"):
        B.Resampler(0)


@pytest.mark.parametrize(("n1", "n2", "dim"), [(5, 9, 16), (40, 30, 8)])  # Gram / covariance
def test_frechet_resampled_is_fid_at_unit_and_duplicating_weights(
    n1: int, n2: int, dim: int
) -> None:
    real, fake = features(n1, dim, 0), features(n2, dim, 1, shift=0.5)
    ones = B.frechet_resampled(real, fake, np.ones(n1), np.ones(n2))
    assert ones[0] == pytest.approx(fid_from_features(real, fake), rel=1e-7)
    resampler = B.Resampler(4, seed=0)
    w1, w2 = resampler.weights("real", n1), resampler.weights("fake", n2)
    got = B.frechet_resampled(real, fake, w1, w2)
    for k in range(4):
        expected = fid_from_features(duplicated(real, w1[k]), duplicated(fake, w2[k]))
        assert got[k] == pytest.approx(expected, rel=1e-6)
    # the Gram and covariance paths agree (a tiny chunk forces several chunks too)
    grams = (real @ real.T, fake @ fake.T, real @ fake.T)
    np.testing.assert_allclose(B.frechet_from_gram(*grams, w1, w2), got, rtol=1e-6)
    np.testing.assert_allclose(B.frechet_from_covariances(real, fake, w1, w2), got, rtol=1e-6)
    np.testing.assert_allclose(B.frechet_resampled(real, fake, w1, w2, max_elements=1), got)


def test_mmd_at_unit_weights_is_the_full_set_kid_statistic() -> None:
    real, fake = features(7, 10, 2), features(7, 10, 3, shift=0.3)  # poly_mmd: equal sizes
    kernels = (
        B.polynomial_kernel(real, real),
        B.polynomial_kernel(fake, fake),
        B.polynomial_kernel(real, fake),
    )
    got = B.mmd_from_kernels(*kernels, np.ones(7), np.ones(7))[0]
    expected = poly_mmd(torch.tensor(real), torch.tensor(fake), degree=3, gamma=None, coef=1.0)
    assert got == pytest.approx(float(expected), rel=1e-6)


def test_mmd_ignores_an_image_paired_with_its_own_copy() -> None:
    """A set drawn as {x0, x0, x1} has exactly one within-set pair of distinct images."""
    real, fake = features(2, 4, 5), features(3, 4, 6)
    kernels = (
        B.polynomial_kernel(real, real),
        B.polynomial_kernel(fake, fake),
        B.polynomial_kernel(real, fake),
    )
    value = B.mmd_from_kernels(*kernels, np.array([2.0, 1.0]), np.ones(3))[0]
    cross = (2 * kernels[2][0].sum() + kernels[2][1].sum()) / 9
    within_fake = (kernels[1].sum() - np.trace(kernels[1])) / 6
    assert value == pytest.approx(kernels[0][0, 1] + within_fake - 2 * cross, rel=1e-9)


def _mean_abs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs().flatten(1).mean(dim=1)


def _constant(values: np.ndarray) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).view(-1, 1, 1, 1).expand(-1, 3, 2, 2)


def test_lpips_statistics_at_unit_weights_match_the_point_metrics() -> None:
    rng = np.random.default_rng(7)
    fakes_1d, train_1d = rng.uniform(-1, 1, 12), rng.uniform(-1, 1, 4)
    fakes, train = _constant(fakes_1d), _constant(train_1d)
    pairs = np.abs(fakes_1d[:, None] - fakes_1d[None])
    to_train = np.abs(fakes_1d[:, None] - train_1d[None])
    ones_f, ones_t = np.ones(12), np.ones(4)
    assert B.distinct_pair_mean(pairs, ones_f)[0] == pytest.approx(
        lpips_diversity(_mean_abs, fakes, max_images=None)
    )
    assert B.nearest_distance_mean(to_train, ones_f, ones_t)[0] == pytest.approx(
        dist_to_train(_mean_abs, fakes, train)
    )
    point = ic_lpips(_mean_abs, fakes, train)
    dfmgan, nonempty = B.intra_cluster_lpips(pairs, to_train, ones_f, ones_t)
    assert dfmgan[0] == pytest.approx(point["value"])
    assert nonempty[0] == pytest.approx(point["value_nonempty"])


def test_intra_cluster_lpips_with_duplicated_training_image_keeps_one_cluster() -> None:
    """A training image drawn twice is one cluster counted twice, never an empty twin."""
    fakes_1d, train_1d = np.array([0.0, 0.1, 0.9, 1.0]), np.array([0.0, 1.0])
    pairs = np.abs(fakes_1d[:, None] - fakes_1d[None])
    to_train = np.abs(fakes_1d[:, None] - train_1d[None])
    dfmgan, nonempty = B.intra_cluster_lpips(pairs, to_train, np.ones(4), np.array([2.0, 0.0]))
    # train image 0 alone: all four fakes join it; its pairs' mean is the set's diversity
    expected = pairs[np.triu_indices(4, 1)].mean()
    assert dfmgan[0] == pytest.approx(expected) and nonempty[0] == pytest.approx(expected)
    # a cluster whose only member was drawn twice has no pair of distinct fakes: it counts 0
    dfmgan, nonempty = B.intra_cluster_lpips(
        pairs, to_train, np.array([2.0, 0.0, 1.0, 1.0]), np.ones(2)
    )
    assert dfmgan[0] == pytest.approx(0.1 / 2) and nonempty[0] == pytest.approx(0.1)


def test_mask_ratios_at_unit_weights_match_mask_coherence() -> None:
    stats = {
        "intersection": torch.tensor([3.0, 0.0, 5.0], dtype=torch.float64),
        "union": torch.tensor([4.0, 0.0, 10.0], dtype=torch.float64),
        "mask_area": torch.tensor([0.1, 0.0, 0.3], dtype=torch.float64),
        "changed_area": torch.tensor([0.2, 0.0, 0.1], dtype=torch.float64),
    }
    point = coherence_from_statistics(stats)
    ones = np.ones(3)
    inter, union = stats["intersection"].numpy(), stats["union"].numpy()
    assert B.weighted_ratio(inter, union, ones)[0] == pytest.approx(point["iou"])
    per_image = np.divide(inter, union, out=np.zeros(3), where=union > 0)
    assert B.weighted_ratio(per_image, (union > 0).astype(float), ones)[0] == pytest.approx(
        point["iou_per_image_mean"]
    )
    assert B.weighted_mean(stats["mask_area"].numpy(), ones)[0] == pytest.approx(point["mask_area"])
    assert np.isnan(B.weighted_ratio(inter, union, np.array([0.0, 3.0, 0.0]))[0])


def _dist_to_train_interval(n_fake: int, seed: int) -> tuple[float, list[float]]:
    rng = np.random.default_rng(seed)
    to_train = rng.gamma(2.0, 0.1, size=(n_fake, 6))
    point = float(to_train.min(axis=1).mean())
    resampler = B.Resampler(1000, seed=seed)
    # the training set is the fixed reference of Dist-to-train: only the fakes are resampled
    values = B.nearest_distance_mean(to_train, resampler.weights("fake", n_fake), np.ones(6))
    interval = B.percentile_interval(values)
    assert interval is not None
    return point, interval


def test_interval_contains_the_point_value_and_shrinks_with_set_size() -> None:
    widths = []
    for n_fake in (8, 64, 512):
        point, (lo, hi) = _dist_to_train_interval(n_fake, seed=n_fake)
        assert lo < point < hi
        widths.append(hi - lo)
    assert widths[0] > 2 * widths[1] > 4 * widths[2]


def test_interval_of_a_varied_set_has_width_and_of_a_constant_set_none() -> None:
    """Intervals come from the resampled data: identical images give [v, v], varied ones a
    spread (a stub returning the point value as its interval would fail the test above)."""
    resampler = B.Resampler(200, seed=1)
    w = resampler.weights("fake", 10)
    assert B.percentile_interval(B.weighted_mean(np.full(10, 0.3), w)) == pytest.approx([0.3, 0.3])
    lo, hi = B.percentile_interval(B.weighted_mean(np.linspace(0, 1, 10), w))
    assert hi - lo > 0.2


def test_fid_interval_lies_above_a_small_sets_value_and_narrows_with_more_images() -> None:
    """FID is biased upwards on small sets and resamples hold fewer distinct images: its interval
    may exclude the point value (the tables mark that), but it still narrows as sets grow."""
    widths = []
    for n in (12, 120):
        real, fake = features(n, 8, n), features(n, 8, n + 1, shift=0.5)
        resampler = B.Resampler(300, seed=0)
        values = B.frechet_resampled(
            real, fake, resampler.weights("real", n), resampler.weights("fake", n)
        )
        lo, hi = B.percentile_interval(values)
        assert hi > fid_from_features(real, fake)
        widths.append(hi - lo)
    assert widths[0] > 2 * widths[1]


def test_resampling_the_reference_set_of_a_nearest_distance_biases_it_upwards() -> None:
    """Why evaluation keeps the training set fixed for Dist-to-train and IC-LPIPS: a resample
    lacks about a third of the training images, so every nearest distance can only grow."""
    to_train = np.random.default_rng(0).gamma(2.0, 0.1, size=(64, 6))
    resampler = B.Resampler(500, seed=0)
    values = B.nearest_distance_mean(
        to_train, resampler.weights("fake", 64), resampler.weights("train", 6)
    )
    assert np.median(values) > to_train.min(axis=1).mean()


def test_percentile_interval_needs_mostly_finite_values() -> None:
    assert B.percentile_interval(np.array([1.0, np.nan, np.nan])) is None
    assert B.percentile_interval(np.array([1.0, 2.0, np.nan, 3.0]), level=0.5) == pytest.approx(
        [1.5, 2.5]
    )
    with pytest.raises(ValueError, match=r"metrics\.bootstrap\.level"):
        B.percentile_interval(np.ones(3), level=95)
