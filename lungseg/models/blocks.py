"""Building blocks of the two networks: plain and residual conv blocks, up-convolution, attention gate,
and the decoder stage that combines them.

Every 3x3 convolution followed by batch norm has ``bias=False`` (the BN shift makes a bias redundant);
without batch norm the convolution keeps its bias. Weights are initialised by :func:`init_weights`
(Kaiming/He normal for ReLU networks).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AttentionGate", "ConvBNReLU", "DecoderStage", "DoubleConv", "LevelBlock", "ResidualBlock", "UpConv", "init_weights",
]

LevelBlock = Callable[[int, int, bool], nn.Module]
"""Builds one encoder/decoder level from ``(in_channels, out_channels, batch_norm)``: :class:`DoubleConv`
or :class:`ResidualBlock`."""


class ConvBNReLU(nn.Sequential):
    """3x3 convolution (padding 1) + optional batch norm + ReLU: one layer of eq. (2).

    Shapes: ``(B, in_channels, H, W) -> (B, out_channels, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = True) -> None:
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not batch_norm)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class DoubleConv(nn.Sequential):
    """Two :class:`ConvBNReLU` layers: one U-Net level of eq. (2) (Ronneberger et al. 2015).

    Shapes: ``(B, in_channels, H, W) -> (B, out_channels, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = True) -> None:
        super().__init__(
            ConvBNReLU(in_channels, out_channels, batch_norm),
            ConvBNReLU(out_channels, out_channels, batch_norm),
        )


class ResidualBlock(nn.Module):
    """Pre-addition residual block (He et al. 2016): ``ReLU(F(x) + shortcut(x))``.

    ``F`` is 3x3 conv-BN-ReLU-3x3 conv-BN (the two convolutions of eq. 2); the shortcut is the identity
    when the channel count is unchanged, else a 1x1 conv (+ BN) projection.

    Shapes: ``(B, in_channels, H, W) -> (B, out_channels, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = True) -> None:
        super().__init__()

        def norm(c: int) -> nn.Module:
            return nn.BatchNorm2d(c) if batch_norm else nn.Identity()

        self.residual = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not batch_norm),
            norm(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=not batch_norm),
            norm(out_channels),
        )
        self.shortcut: nn.Module = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=not batch_norm), norm(out_channels))
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.residual(x) + self.shortcut(x))


class UpConv(nn.ConvTranspose2d):
    """2x2 transposed convolution with stride 2 (eq. 3): ``(B, C_in, h, w) -> (B, C_out, 2h, 2w)``.

    Keeps its bias: it is followed by a concatenation, not by batch norm.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=2, stride=2)


class AttentionGate(nn.Module):
    """Additive attention gate of Oktay et al. (2018), eq. (6) of the paper.

    ``alpha = sigmoid(psi^T ReLU(W_x^T x + W_g^T g + b_g) + b_psi)``, computed on the coarse grid of the
    gating signal ``g``, resampled bilinearly to the skip's size, and multiplied into the skip ``x``.
    As in Oktay et al.'s reference code, ``W_x`` is applied with a 2x2 kernel and stride 2 (the skip is
    twice as fine as ``g``) and has no bias; ``W_g`` and ``psi`` are 1x1 convolutions with bias.

    Args:
        x_channels: channels ``F_x`` of the skip features.
        g_channels: channels ``F_g`` of the gating signal (the coarser decoder features).
        inter_channels: intermediate width ``F_int`` (default ``max(F_x // 2, 1)``).

    Shapes:
        ``x``: ``(B, F_x, H, W)``, ``g``: ``(B, F_g, H/2, W/2)`` -> gated skip ``(B, F_x, H, W)`` and
        ``alpha`` ``(B, 1, H, W)`` in [0, 1].
    """

    def __init__(self, x_channels: int, g_channels: int, inter_channels: int | None = None) -> None:
        super().__init__()
        inter = inter_channels if inter_channels is not None else max(x_channels // 2, 1)
        self.theta_x = nn.Conv2d(x_channels, inter, kernel_size=2, stride=2, bias=False)
        self.phi_g = nn.Conv2d(g_channels, inter, kernel_size=1, bias=True)
        self.psi = nn.Conv2d(inter, 1, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gate ``x`` with ``g``; returns ``(x * alpha, alpha)``, both at ``x``'s resolution."""
        f = F.relu(self.theta_x(x) + self.phi_g(g))
        alpha = torch.sigmoid(self.psi(f))
        alpha = F.interpolate(alpha, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x * alpha, alpha


class DecoderStage(nn.Module):
    """One decoder level: up-convolve the coarse features (eq. 3), concatenate the skip, level block.

    With ``attention_gate`` the skip is first multiplied by the coefficients of an
    :class:`AttentionGate` (eq. 6) whose gating signal is the coarse features; the concatenation is
    ``[skip, up(x)]`` either way.

    Args:
        in_channels: channels of the coarse features ``x`` (the gating signal).
        out_channels: channels of the skip and of the output.
        batch_norm: batch norm inside the level block.
        block: the level block applied to the ``2 * out_channels`` concatenated channels.
        attention_gate: gate the skip (sub-module ``gate``); without it there is no ``gate``.

    Shapes:
        ``x``: ``(B, in_channels, h, w)``, ``skip``: ``(B, out_channels, 2h, 2w)`` -> ``(B, out_channels,
        2h, 2w)`` and the gate's ``alpha`` ``(B, 1, 2h, 2w)`` (``None`` without a gate).
    """

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool, *, block: LevelBlock,
                 attention_gate: bool) -> None:
        super().__init__()
        # Created (hence registered and initialised) in the order gate, up, conv, as the checkpoints and
        # seeded weights of both networks expect.
        self.gate = AttentionGate(x_channels=out_channels, g_channels=in_channels) if attention_gate else None
        self.up = UpConv(in_channels, out_channels)
        self.conv = block(2 * out_channels, out_channels, batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        alpha = None
        if self.gate is not None:
            skip, alpha = self.gate(skip, x)
        return self.conv(torch.cat([skip, self.up(x)], dim=1)), alpha


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal (fan-out, ReLU) convolution weights, zero biases, BN weight 1 and bias 0.

    Apply with ``model.apply(init_weights)``.
    """
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
