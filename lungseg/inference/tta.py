"""Test-time augmentation: the network's probabilities averaged over symmetries of the slice.

A symmetry of the square (a flip along either axis, or a transposition after them) is applied to
the network's input, the output probability map is mapped back, and the maps are averaged, as
nnU-Net's test-time mirroring does. Modes (:data:`TTA_MODES`): ``"none"``; ``"flips"``, the 4 flips
(identity, left-right, up-down, both); ``"dihedral"``, all 8 symmetries of the square (the flips,
each also transposed). A mode of ``k`` symmetries costs ``k`` forward passes. Its measured gain on
the real MSD patches is in ``benchmarks/NOTES.md``.
"""

from __future__ import annotations

import torch

from lungseg.config import TTA_MODES
from lungseg.errors import LungsegError

__all__ = ["TTA_MODES", "check_tta", "symmetry", "undo_symmetry"]

def check_tta(mode: str) -> int:
    """The number of symmetries of ``mode``; :class:`LungsegError` naming the modes when it is unknown."""
    if mode not in TTA_MODES:
        raise LungsegError(f"test-time augmentation must be one of {tuple(TTA_MODES)}, got {mode!r}")
    return TTA_MODES[mode]


def symmetry(x: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th symmetry (0–7) of the last two axes: bit 0 flips the columns, bit 1 the rows, bit 2
    transposes after the flips. ``k = 0`` is the identity."""
    if not 0 <= k < 8:
        raise ValueError(f"symmetry index must be in 0..7, got {k}")
    if k & 3:
        x = x.flip([d for bit, d in ((1, -1), (2, -2)) if k & bit])
    return x.transpose(-1, -2) if k & 4 else x


def undo_symmetry(x: torch.Tensor, k: int) -> torch.Tensor:
    """The inverse of :func:`symmetry` ``k``: ``undo_symmetry(symmetry(x, k), k)`` is ``x``."""
    if not 0 <= k < 8:
        raise ValueError(f"symmetry index must be in 0..7, got {k}")
    if k & 4:
        x = x.transpose(-1, -2)
    return x.flip([d for bit, d in ((1, -1), (2, -2)) if k & bit]) if k & 3 else x
