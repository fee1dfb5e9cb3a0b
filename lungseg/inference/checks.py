"""Argument and input checks shared by prediction and evaluation: they refuse what would give silent
garbage or a raw Python error further down, naming the argument or the file."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lungseg.errors import DataError, LungsegError

__all__ = ["check_positive_int", "check_threshold", "require_finite"]


def check_positive_int(value: Any, name: str) -> int:
    """``value`` when it is an int >= 1; else :class:`LungsegError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise LungsegError(f"{name} must be a positive integer (an int >= 1), got {value!r}")
    return int(value)


def check_threshold(threshold: float | None) -> None:
    """Refuse a threshold that is not ``None`` or a finite probability in (0, 1)."""
    if threshold is not None:
        number = isinstance(threshold, (int, float, np.integer, np.floating)) and not isinstance(threshold, bool)
        if not (number and math.isfinite(threshold) and 0 < threshold < 1):
            raise LungsegError(f"threshold must be a finite probability in (0, 1), got {threshold!r}")


def require_finite(image: np.ndarray, source: Any) -> None:
    """Refuse NaN or infinite intensities, naming the file (or patient) and how many there are."""
    bad = image.size - int(np.count_nonzero(np.isfinite(image)))
    if bad:
        raise DataError(
            f"{source}: {bad} of {image.size} intensity values are NaN or infinite; expected finite intensities"
            " (replace or mask them before segmenting)"
        )
