"""The U-shaped scaffold both networks share, in the style of ``segmentation_models_pytorch``'s
``SegmentationModel``: encoder -> decoder -> segmentation head.

* **encoder**: ``depth + 1`` levels of ``base_channels * 2**l`` channels separated by 2x2 max pooling
  (the contracting path, eq. 2); the last level is the bottleneck at ``H / 2**depth``;
* **decoder**: ``depth`` :class:`~lungseg.models.blocks.DecoderStage` s, coarsest first, each a 2x2
  up-convolution (eq. 3), a concatenation with the encoder skip (optionally multiplied by an attention
  gate, eq. 6) and one more level block;
* **segmentation head**: a 1x1 convolution to ``out_channels`` logits.

:class:`~lungseg.models.unet.UNet` and :class:`~lungseg.models.attention_resunet.AttentionResUNet` are
two configurations of :class:`SegmentationModel` (level block, gated skips or not); the parameter names,
shapes and creation order are those of the two networks' original separate implementations, so seeded
weights and saved checkpoints are unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from lungseg.models.blocks import DecoderStage, LevelBlock, init_weights

__all__ = ["SegmentationModel"]


def _check_config(name: str, in_channels: int, out_channels: int, base_channels: int, depth: int) -> None:
    for arg, value in (("in_channels", in_channels), ("out_channels", out_channels),
                       ("base_channels", base_channels), ("depth", depth)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: {arg} must be a positive int, got {value!r}")


class SegmentationModel(nn.Module):
    """Encoder -> decoder -> segmentation head on ``depth + 1`` resolution levels (eqs. 2, 3, 6).

    Args:
        in_channels: input channels ``C``.
        out_channels: output channels (1 for binary tumour segmentation).
        base_channels: channels of the first level; level ``l`` has ``base_channels * 2**l``.
        depth: number of 2x2 poolings; the bottleneck is at ``H / 2**depth``.
        batch_norm: batch norm inside the level blocks.
        block: the level block of encoder and decoder, e.g.
            :class:`~lungseg.models.blocks.DoubleConv` (eq. 2) or
            :class:`~lungseg.models.blocks.ResidualBlock`.
        attention_gates: multiply every skip by an :class:`~lungseg.models.blocks.AttentionGate`
            (eq. 6) before concatenation.

    Shapes:
        ``(B, C, H, W) -> (B, out_channels, H, W)`` logits; ``H`` and ``W`` must be multiples of
        ``2**depth`` (see :meth:`check_input_shape`).

    Sub-modules: ``encoder`` (``depth + 1`` level blocks, the last is the bottleneck), ``pool``,
    ``decoder`` (``depth`` :class:`~lungseg.models.blocks.DecoderStage` s, coarsest first, each with a
    ``gate`` when ``attention_gates``), ``segmentation_head`` (1x1 conv).
    """

    def __init__(self, in_channels: int, out_channels: int, base_channels: int, depth: int, batch_norm: bool, *,
                 block: LevelBlock, attention_gates: bool) -> None:
        super().__init__()
        _check_config(type(self).__name__, in_channels, out_channels, base_channels, depth)
        self.in_channels, self.out_channels, self.depth = in_channels, out_channels, depth
        channels = [base_channels * 2**level for level in range(depth + 1)]
        # The modules are created in this order (encoder, decoder coarsest first, head) and
        # initialised by one ``apply`` afterwards: both fix the random draws, hence the seeded weights.
        self.encoder = nn.ModuleList(
            block(c_in, c_out, batch_norm) for c_in, c_out in zip([in_channels, *channels[:-1]], channels)
        )
        self.pool = nn.MaxPool2d(2)
        self.decoder = nn.ModuleList(
            DecoderStage(channels[level + 1], channels[level], batch_norm, block=block, attention_gate=attention_gates)
            for level in reversed(range(depth))
        )
        self.segmentation_head = nn.Conv2d(channels[0], out_channels, kernel_size=1)
        self.apply(init_weights)
        # Performance (benchmarks/NOTES.md): parameters in channels_last make oneDNN (CPU) and cuDNN pick
        # NHWC convolution kernels, about 1.5x faster training here. The input cannot carry the layout
        # (for C = 1 the NCHW and NHWC strides coincide), so the weights do; values are unchanged.
        self.to(memory_format=torch.channels_last)

    def check_input_shape(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` (quoting the shape) unless ``x`` fits the network.

        ``x`` must be a floating-point tensor ``(B, in_channels, H, W)`` with ``H`` and ``W`` positive
        multiples of ``2**depth`` (every pooling halves them exactly, so the skips line up).
        """
        name = type(self).__name__
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor (B, {self.in_channels}, H, W), got {type(x).__name__}")
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{name}: expected input of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{name}: expected a floating-point input, got dtype {x.dtype}")
        factor = 2**self.depth
        h, w = x.shape[-2:]
        if h % factor or w % factor or h == 0 or w == 0:
            raise ValueError(f"{name}: H and W must be positive multiples of 2**depth = {factor} "
                             f"(depth {self.depth}), got input shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> logits ``(B, out_channels, H, W)``."""
        return self._logits_and_attention(x)[0]

    def _logits_and_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits and the attention coefficients of every gate, deepest first (empty without gates).

        The deepest map is ``(B, 1, H / 2**(depth-1), W / 2**(depth-1))``, the shallowest ``(B, 1, H, W)``.
        """
        self.check_input_shape(x)
        skips = []
        for level, block in enumerate(self.encoder):
            x = block(x if level == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        alphas = []
        for stage in self.decoder:
            x, alpha = stage(x, skips.pop())
            if alpha is not None:
                alphas.append(alpha)
        return self.segmentation_head(x).contiguous(), alphas  # NCHW logits even when out_channels > 1

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` in eval mode without autograd (like ``smp``'s ``SegmentationModel.predict``).

        Switches the model to eval mode (batch norm uses its running statistics) and leaves it there.
        Runs under ``torch.inference_mode``, so the logits are an inference tensor that cannot enter a
        later autograd graph; use ``forward`` for training.
        """
        self.eval()
        with torch.inference_mode():
            return self.forward(x)
