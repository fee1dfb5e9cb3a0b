"""The baseline U-Net of the paper, eqs. (2)-(3) (Ronneberger et al. 2015).

Each of the ``depth + 1`` encoder levels is two 3x3 conv + BN + ReLU layers (eq. 2) with
``base_channels * 2**l`` channels, separated by 2x2 max pooling; the decoder up-samples with 2x2
transposed convolutions (eq. 3), concatenates the encoder skip and applies two more conv layers; a 1x1
convolution gives the logits. Batch norm is not in the paper's equations; it is on by default (stated
here and switchable with ``batch_norm=False``).

Measured at 256 x 256, ``base_channels=32, depth=4`` (``python -m lungseg.models``, torch 2.13):
7,762,465 parameters and 24,066,916,352 FLOPs (24.07 G) per forward pass (batch 1; FLOPs counted by
``torch.utils.flop_counter``, 2 per multiply-accumulate of convolutions).
"""

from __future__ import annotations

import torch
from torch import nn

from lungseg.models.blocks import DoubleConv, UpConv, init_weights

__all__ = ["UNet", "check_input"]


def check_input(x: torch.Tensor, in_channels: int, depth: int, name: str) -> None:
    """Raise ``ValueError`` unless ``x`` is a floating ``(B, in_channels, H, W)`` with H, W divisible by 2**depth."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor (B, {in_channels}, H, W), got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(f"{name}: expected input of shape (B, {in_channels}, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point input, got dtype {x.dtype}")
    factor = 2**depth
    h, w = x.shape[-2:]
    if h % factor or w % factor or h == 0 or w == 0:
        raise ValueError(f"{name}: H and W must be positive multiples of 2**depth = {factor} (depth {depth}), "
                         f"got input shape {tuple(x.shape)}")


def _check_config(name: str, in_channels: int, out_channels: int, base_channels: int, depth: int) -> None:
    for arg, value in (("in_channels", in_channels), ("out_channels", out_channels),
                       ("base_channels", base_channels), ("depth", depth)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: {arg} must be a positive int, got {value!r}")


class _DecoderStage(nn.Module):
    """Up-convolution (eq. 3), skip concatenation, two conv layers (eq. 2)."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool) -> None:
        super().__init__()
        self.up = UpConv(in_channels, out_channels)
        self.conv = DoubleConv(2 * out_channels, out_channels, batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """Baseline U-Net, eqs. (2)-(3).

    Args:
        in_channels: input channels ``C``.
        out_channels: output channels (1 for binary tumour segmentation).
        base_channels: channels of the first level; level ``l`` has ``base_channels * 2**l``.
        depth: number of 2x2 poolings; the bottleneck is at ``H / 2**depth``.
        batch_norm: batch norm after every 3x3 convolution.

    Shapes:
        ``(B, C, H, W) -> (B, out_channels, H, W)`` logits; ``H`` and ``W`` must be multiples of
        ``2**depth`` (e.g. 48 x 48 with depth 4 has a 3 x 3 bottleneck).

    Sub-modules: ``encoder`` (``depth + 1`` levels, the last is the bottleneck), ``decoder`` (``depth``
    stages, coarsest first), ``segmentation_head`` (1x1 conv).
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, base_channels: int = 32, depth: int = 4,
                 batch_norm: bool = True) -> None:
        super().__init__()
        _check_config("UNet", in_channels, out_channels, base_channels, depth)
        self.in_channels, self.out_channels, self.depth = in_channels, out_channels, depth
        channels = [base_channels * 2**level for level in range(depth + 1)]
        self.encoder = nn.ModuleList(
            DoubleConv(c_in, c_out, batch_norm) for c_in, c_out in zip([in_channels, *channels[:-1]], channels)
        )
        self.pool = nn.MaxPool2d(2)
        self.decoder = nn.ModuleList(
            _DecoderStage(channels[level + 1], channels[level], batch_norm) for level in reversed(range(depth))
        )
        self.segmentation_head = nn.Conv2d(channels[0], out_channels, kernel_size=1)
        self.apply(init_weights)
        # Performance (benchmarks/NOTES.md): parameters in channels_last make oneDNN (CPU) and cuDNN pick
        # NHWC convolution kernels, about 1.5x faster training here. The input cannot carry the layout
        # (for C = 1 the NCHW and NHWC strides coincide), so the weights do; values are unchanged.
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> logits ``(B, out_channels, H, W)``."""
        check_input(x, self.in_channels, self.depth, "UNet")
        skips = []
        for level, block in enumerate(self.encoder):
            x = block(x if level == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for stage in self.decoder:
            x = stage(x, skips.pop())
        return self.segmentation_head(x).contiguous()  # NCHW logits even when out_channels > 1
