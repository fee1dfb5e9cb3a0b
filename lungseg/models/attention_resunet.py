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

from lungseg.models.base import SegmentationModel
from lungseg.models.blocks import ResidualBlock

__all__ = ["AttentionResUNet"]


class AttentionResUNet(SegmentationModel):
    """Attention-enhanced residual U-Net (the paper's proposed network):
    :class:`~lungseg.models.base.SegmentationModel` with
    :class:`~lungseg.models.blocks.ResidualBlock` levels and attention-gated skips (eq. 6).

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
        super().__init__(in_channels, out_channels, base_channels, depth, batch_norm,
                         block=ResidualBlock, attention_gates=True)

    def forward(
        self, x: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """``(B, C, H, W)`` -> logits ``(B, out_channels, H, W)`` (and the attention maps, deepest first)."""
        logits, alphas = self._logits_and_attention(x)
        return (logits, alphas) if return_attention else logits
