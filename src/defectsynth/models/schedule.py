"""The paper's learning-rate schedule: constant for ``n_epochs``, then linear decay to zero."""

from __future__ import annotations


class LinearDecay:
    """LR factor for epoch ``e`` (0-based): 1 while e < n_epochs, then 1 − (e − n_epochs) /
    n_epochs_decay, reaching 0 at the end of the last epoch. A callable object (not a lambda) so
    ``LambdaLR`` can checkpoint it."""

    def __init__(self, n_epochs: int, n_epochs_decay: int) -> None:
        if n_epochs < 0 or n_epochs_decay < 0:
            raise ValueError("n_epochs and n_epochs_decay must be >= 0")
        self.n_epochs, self.n_epochs_decay = n_epochs, n_epochs_decay

    def __call__(self, epoch: int) -> float:
        if epoch < self.n_epochs:
            return 1.0
        if self.n_epochs_decay == 0:
            return 0.0
        return max(0.0, 1.0 - (epoch - self.n_epochs) / self.n_epochs_decay)
