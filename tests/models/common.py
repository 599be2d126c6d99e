"""In-memory batches, a short Lightning fit and checkpoint helpers for the model tests."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

TINY_RESNET = {"generator": {"ngf": 4, "n_blocks": 2}, "discriminator": {"ndf": 4, "n_layers": 2}}


class FakeBatches(Dataset):
    """``DefectDataModule``-shaped items: normal, defect in [-1, 1], binary mask."""

    def __init__(self, n: int = 2, size: int = 32) -> None:
        g = torch.Generator().manual_seed(0)
        self.items = [
            {
                "normal": torch.rand(3, size, size, generator=g) * 2 - 1,
                "defect": torch.rand(3, size, size, generator=g) * 2 - 1,
                "mask": (torch.rand(1, size, size, generator=g) > 0.8).float(),
            }
            for _ in range(n)
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def fit(model: L.LightningModule, batches: int = 1, size: int = 32, epochs: int = 1) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, DataLoader(FakeBatches(batches, size), batch_size=1))
    return trainer


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    """Whether any parameter of ``module`` moved since ``before``."""
    after = module.state_dict()
    return any(
        not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point()
    )


def rebuilt(model: L.LightningModule) -> L.LightningModule:
    """The model as ``synthesis.load_model`` rebuilds it: from its hyper-parameters, strict
    state-dict load."""
    clone = type(model)(**dict(model.hparams))
    clone.load_state_dict(model.state_dict())
    return clone
