"""The paper's model: a residual U-Net with an additive attention gate on every skip (eq. 6).

Same level layout as :class:`~lungseg.models.unet.UNet` (``depth + 1`` levels of
``base_channels * 2**l`` channels, 2x2 max pooling, 2x2 transposed-conv up-sampling), with two changes:

* every encoder and decoder level is a :class:`~lungseg.models.blocks.ResidualBlock` (the "Residual"
  of the title) instead of two plain conv layers;
* before concatenation each skip ``x_l`` is multiplied by the coefficients ``alpha_l`` of an
  :class:`~lungseg.models.blocks.AttentionGate` (Oktay et al. 2018) whose gating signal is the coarser
  decoder feature map.

Measured at 256 x 256, ``base_channels=32, depth=4`` (``python -m lungseg.models``, torch 2.13):
8,375,205 parameters (+7.9 % over the U-Net's 7,762,465) and 25,816,924,160 FLOPs (25.82 G, +7.3 % over
24.07 G) per forward pass (batch 1; FLOPs counted by ``torch.utils.flop_counter``, 2 per
multiply-accumulate of convolutions). Of that overhead the four attention gates are 261,604 parameters
and 0.40 GFLOPs; the rest is the residual blocks' 1x1 shortcut projections.
"""

from __future__ import annotations

import torch
from torch import nn

from lungseg.models.blocks import AttentionGate, ResidualBlock, UpConv, init_weights
from lungseg.models.unet import _check_config, check_input

__all__ = ["AttentionResUNet"]


class _AttentionDecoderStage(nn.Module):
    """Gate the skip with the coarse features, up-convolve them (eq. 3), concatenate, residual block."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool) -> None:
        super().__init__()
        self.gate = AttentionGate(x_channels=out_channels, g_channels=in_channels)
        self.up = UpConv(in_channels, out_channels)
        self.conv = ResidualBlock(2 * out_channels, out_channels, batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gated, alpha = self.gate(skip, x)
        return self.conv(torch.cat([gated, self.up(x)], dim=1)), alpha


class AttentionResUNet(nn.Module):
    """Attention-enhanced residual U-Net (the paper's proposed network).

    Args:
        in_channels: input channels ``C``.
        out_channels: output channels (1 for binary tumour segmentation).
        base_channels: channels of the first level; level ``l`` has ``base_channels * 2**l``.
        depth: number of 2x2 poolings; the bottleneck is at ``H / 2**depth``.
        batch_norm: batch norm inside the residual blocks.

    Shapes:
        ``(B, C, H, W) -> (B, out_channels, H, W)`` logits; ``H`` and ``W`` must be multiples of
        ``2**depth``. With ``return_attention=True`` also a list of ``depth`` attention maps, ordered from
        the deepest gate ``(B, 1, H / 2**(depth-1), W / 2**(depth-1))`` to the shallowest ``(B, 1, H, W)``,
        each in [0, 1].

    Sub-modules: ``encoder`` (``depth + 1`` residual levels, the last is the bottleneck), ``decoder``
    (``depth`` stages, coarsest first, each with a ``gate``), ``segmentation_head`` (1x1 conv).
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, base_channels: int = 32, depth: int = 4,
                 batch_norm: bool = True) -> None:
        super().__init__()
        _check_config("AttentionResUNet", in_channels, out_channels, base_channels, depth)
        self.in_channels, self.out_channels, self.depth = in_channels, out_channels, depth
        channels = [base_channels * 2**level for level in range(depth + 1)]
        self.encoder = nn.ModuleList(
            ResidualBlock(c_in, c_out, batch_norm) for c_in, c_out in zip([in_channels, *channels[:-1]], channels)
        )
        self.pool = nn.MaxPool2d(2)
        self.decoder = nn.ModuleList(
            _AttentionDecoderStage(channels[level + 1], channels[level], batch_norm)
            for level in reversed(range(depth))
        )
        self.segmentation_head = nn.Conv2d(channels[0], out_channels, kernel_size=1)
        self.apply(init_weights)
        # Performance (benchmarks/NOTES.md): parameters in channels_last make oneDNN (CPU) and cuDNN pick
        # NHWC convolution kernels, about 1.5x faster training here. The input cannot carry the layout
        # (for C = 1 the NCHW and NHWC strides coincide), so the weights do; values are unchanged.
        self.to(memory_format=torch.channels_last)

    def forward(
        self, x: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """``(B, C, H, W)`` -> logits ``(B, out_channels, H, W)`` (and the attention maps, deepest first)."""
        check_input(x, self.in_channels, self.depth, "AttentionResUNet")
        skips = []
        for level, block in enumerate(self.encoder):
            x = block(x if level == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        alphas = []
        for stage in self.decoder:
            x, alpha = stage(x, skips.pop())
            alphas.append(alpha)
        logits = self.segmentation_head(x).contiguous()  # NCHW logits even when out_channels > 1
        return (logits, alphas) if return_attention else logits
