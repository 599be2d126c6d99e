"""Weight-file search order: the user's folder, then the torch hub cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from defectsynth.errors import DefectSynthError
from defectsynth.metrics import MissingWeightsError, find_weight_file, hub_checkpoints_dir


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    folder = tmp_path / "torch_home" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


def test_hub_dir_follows_torch_home(hub: Path) -> None:
    assert hub_checkpoints_dir() == hub


def test_search_order(hub: Path, tmp_path: Path) -> None:
    user = tmp_path / "user"
    user.mkdir()
    assert find_weight_file("w.pth", user) is None
    (hub / "w.pth").write_bytes(b"hub")
    assert find_weight_file("w.pth", user) == hub / "w.pth"
    assert find_weight_file("w.pth", None) == hub / "w.pth"
    (user / "w.pth").write_bytes(b"user")
    assert find_weight_file("w.pth", user) == user / "w.pth"
    assert find_weight_file("w.pth", str(tmp_path / "missing")) == hub / "w.pth"


def test_missing_weights_error_is_a_user_error() -> None:
    assert issubclass(MissingWeightsError, DefectSynthError)
