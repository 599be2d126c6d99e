"""Normalisation layers chosen by name: the paper uses InstanceNorm, the authors' code BatchNorm."""

from functools import partial

from torch import nn

from defectsynth.errors import ConfigError

NORMS = ("instance", "batch")


def norm_layer(name: str) -> type[nn.Module] | partial:
    """Return a constructor ``norm(num_features)`` for ``name`` in :data:`NORMS`."""
    if name == "instance":
        # affine off, no running stats: the classic CycleGAN setting the paper's counts refer to
        return partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if name == "batch":
        return partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    raise ConfigError(f"model.norm={name!r} is not supported; expected one of {list(NORMS)}")


def conv_bias(name: str) -> bool:
    """Convolutions before an affine BatchNorm need no bias of their own (it would be absorbed)."""
    return name != "batch"
