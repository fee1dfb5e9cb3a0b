"""Model size and cost: parameter counts and forward FLOPs (the attention overhead the paper calls small).

Run ``python -m lungseg.models [--image-size 256 --base-channels 32 --depth 4]`` to print both networks'
figures.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_parameters", "forward_flops"]


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable, by default) parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def forward_flops(model: nn.Module, image_size: int | tuple[int, int] = 256, in_channels: int | None = None) -> int:
    """FLOPs of one forward pass on a ``(1, C, H, W)`` input, counted by ``torch.utils.flop_counter``.

    The counter gives 2 FLOPs per multiply-accumulate of convolutions, transposed convolutions and matrix
    products; element-wise ops (BN, ReLU, sigmoid, pooling, interpolation, additions) are not counted.
    The model is run in eval mode without gradients on its own device and its mode is restored.

    Args:
        model: the network.
        image_size: side ``S`` or ``(H, W)`` of the input.
        in_channels: input channels; ``None`` uses ``model.in_channels`` (or 1 if it has none).

    Returns:
        The FLOP count (an int).
    """
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    channels = in_channels if in_channels is not None else int(getattr(model, "in_channels", 1))
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(torch.zeros(1, channels, h, w, device=device, dtype=dtype))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
