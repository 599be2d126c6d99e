"""Weight initialisation shared by every network: N(0, 0.02), as in DCGAN / CycleGAN."""

from torch import nn


def init_weights(module: nn.Module, std: float = 0.02) -> nn.Module:
    """Initialise convolutions with N(0, std) and affine norms with N(1, std); biases to zero."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.InstanceNorm2d) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
    return module
