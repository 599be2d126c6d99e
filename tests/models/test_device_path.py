"""The GPU path, checked on the CPU: decisions taken on the device training will run on, and
training steps that never wait for the device."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from defectsynth.models import base
from defectsynth.models.defect_gan import DefectGAN
from tests.models.test_defect_gan import TINY


def attach_fake_trainer(model: DefectGAN, root: torch.device, precision: str) -> None:
    # the state of ``configure_model`` on a GPU run: the strategy knows its CUDA root device
    # while the module's parameters are still on the CPU
    model._trainer = SimpleNamespace(
        strategy=SimpleNamespace(root_device=root), precision=precision
    )


def test_compile_auto_is_decided_on_the_strategys_root_device(monkeypatch):
    model = DefectGAN(**TINY, compile="auto")
    attach_fake_trainer(model, torch.device("cuda", 0), "32-true")
    assert model.device.type == "cpu"
    assert model.target_device() == torch.device("cuda", 0)
    monkeypatch.setattr(base.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(base.shutil, "which", lambda name: None)  # no C++ compiler
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compiled.append(self))
    model.configure_model()
    # fp32 without a C++ compiler: the CPU rule says eager, the CUDA rule (Triton) compiles
    assert len(compiled) == len(model.networks())


def test_compile_auto_on_a_cpu_root_keeps_the_cpu_rule(monkeypatch):
    model = DefectGAN(**TINY, compile="auto")
    attach_fake_trainer(model, torch.device("cpu"), "32-true")
    monkeypatch.setattr(base.shutil, "which", lambda name: "/usr/bin/c++")
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compiled.append(self))
    model.configure_model()
    assert compiled == []  # fp32 on a CPU: measured not to pay off


@pytest.mark.parametrize(
    ("device", "precision", "triton", "compiler", "expected"),
    [
        ("cuda", "32-true", True, False, True),
        ("cuda", "bf16-mixed", False, True, False),
        ("cpu", "bf16-mixed", False, True, True),
        ("cpu", "32-true", True, True, False),
    ],
)
def test_compile_pays_off_rules(monkeypatch, device, precision, triton, compiler, expected):
    monkeypatch.setattr(base.importlib.util, "find_spec", lambda name: object() if triton else None)
    monkeypatch.setattr(base.shutil, "which", lambda name: "/usr/bin/c++" if compiler else None)
    assert base.compile_pays_off("auto", torch.device(device), precision) is expected
