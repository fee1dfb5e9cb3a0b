"""Checked numpy views of the masks and spacings every metric takes.

Each metric accepts numpy arrays or torch tensors, bool masks or integers/floats in {0, 1}; these
helpers convert once and raise a :class:`ValueError` that quotes the offending shape or values, so the
metrics themselves can assume clean ``bool`` arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["as_binary", "binary_pair", "spacing_rows", "to_numpy"]


def to_numpy(x: Any, name: str) -> np.ndarray:
    """``x`` as a numpy array (a torch tensor is detached and moved to the CPU first)."""
    if hasattr(x, "detach"):  # torch tensors, without importing torch here
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # ragged lists etc.
        raise ValueError(f"{name} must be array-like, got {type(x).__name__}: {exc}") from exc


def as_binary(x: Any, name: str) -> np.ndarray:
    """Validate a binary mask (bool, integer or float in {0, 1}) and return it as bool."""
    arr = to_numpy(x, name)
    if arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(
            f"{name} must be a binary mask (bool/int/float), got dtype {arr.dtype} shape {arr.shape}"
        )
    if np.issubdtype(arr.dtype, np.floating) and np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN (shape {arr.shape}, dtype {arr.dtype})")
    binary = arr == 1
    if not np.all(binary | (arr == 0)):
        bad = np.unique(arr[~(binary | (arr == 0))])[:5]
        raise ValueError(
            f"{name} must be binary with values in {{0, 1}} (threshold probabilities first), got dtype "
            f"{arr.dtype} shape {arr.shape} with values such as {bad.tolist()}"
        )
    return binary


def binary_pair(pred: Any, target: Any, ndim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (pred, target) pair; ``(N, 1, H, W)`` is squeezed to ``(N, H, W)`` when ndim=3."""
    p = as_binary(pred, "pred")
    t = as_binary(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred and target must have the same shape, got pred {p.shape} and target {t.shape}")
    if ndim is not None:
        if ndim == 3 and p.ndim == 4 and p.shape[1] == 1:
            p, t = p[:, 0], t[:, 0]
        if p.ndim != ndim:
            raise ValueError(
                f"pred and target must be {'(N, H, W)' if ndim == 3 else '(H, W)'} arrays "
                f"({ndim}D), got shape {p.shape}"
            )
    return p, t


def spacing_rows(spacing: Any, n: int, name: str = "spacing") -> np.ndarray:
    """Validate in-plane spacing ``(2,)`` or ``(N, 2)`` (dy, dx) mm and broadcast it to ``(N, 2)``."""
    s = to_numpy(spacing, name).astype(np.float64)
    if s.shape == (2,):
        s = np.broadcast_to(s, (n, 2))
    if s.shape != (n, 2):
        raise ValueError(
            f"{name} must be (2,) or (N, 2) = ({n}, 2) in-plane (dy, dx) mm, got shape {s.shape}"
        )
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        bad = s[~(np.isfinite(s) & (s > 0))][:3]
        raise ValueError(f"{name} must be finite and > 0 mm, got values such as {bad.tolist()}")
    return s
