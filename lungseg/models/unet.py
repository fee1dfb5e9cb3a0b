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

from lungseg.models.base import SegmentationModel
from lungseg.models.blocks import DoubleConv

__all__ = ["UNet"]


class UNet(SegmentationModel):
    """Baseline U-Net, eqs. (2)-(3): :class:`~lungseg.models.base.SegmentationModel` with
    :class:`~lungseg.models.blocks.DoubleConv` levels and plain skip connections.

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
        super().__init__(in_channels, out_channels, base_channels, depth, batch_norm,
                         block=DoubleConv, attention_gates=False)
