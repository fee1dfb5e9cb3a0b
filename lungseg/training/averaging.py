"""An exponential moving average of a network's weights: :class:`WeightAverage`.

Polyak averaging (Polyak & Juditsky, *SIAM J. Control Optim.* 30:838–855, 1992), as kept by
TensorFlow's ``ExponentialMovingAverage`` and timm's ``ModelEmaV2``: after every optimiser step each
floating-point tensor of the network's state (weights and batch-norm statistics) moves a share
``1 - decay`` of the way to the trained one; integer buffers are copied. The average is what a run
validates, saves and predicts with when :attr:`lungseg.config.TrainConfig.ema_decay` is set; the
training itself is unchanged.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["WeightAverage"]


class WeightAverage:
    """A moving average of ``model``'s state, held in a copy of the network.

    Args:
        model: the network being trained (copied; the copy is in eval mode and has no gradients).
        decay: the average's decay per update, in (0, 1). Early on the effective decay is
            ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so that the first steps do not
            leave the random initial weights in the average for thousands of steps.

    Raises:
        ValueError: ``decay`` outside (0, 1).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"WeightAverage decay must be in (0, 1), got {decay!r}")
        self.decay = float(decay)
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current state (call after every optimiser step)."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for average, current in zip(self.model.state_dict().values(), model.state_dict().values(), strict=True):
            if average.dtype.is_floating_point:
                average.lerp_(current.to(average.dtype), 1.0 - decay)
            else:
                average.copy_(current)

    def state(self) -> dict[str, Any]:
        """What a checkpoint needs to resume the average (its weights are saved as the run's ``model``)."""
        return {"ema_updates": self.updates}

    def restore(self, weights: dict[str, torch.Tensor], updates: int) -> None:
        """Resume from saved averaged ``weights`` after ``updates`` updates."""
        self.model.load_state_dict(weights)
        self.updates = int(updates)
