"""Argument and input checks shared by prediction and evaluation: they refuse what would give silent
garbage or a raw Python error further down, naming the argument or the file."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lungseg.errors import DataError, LungsegError

__all__ = ["HU_FLOOR", "check_positive_int", "check_threshold", "require_finite", "require_hounsfield"]


#: A CT scan in Hounsfield units holds air (about -1000 HU), aerated lung (about -850) or at least fat (about
#: -100); a volume with no value below this holds none of them and is almost certainly not in HU.
HU_FLOOR = -100.0


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


def require_hounsfield(image: np.ndarray, source: Any) -> None:
    """Refuse a scan said to be in HU whose lowest value is above :data:`HU_FLOOR`: no air, lung or fat, so its
    values are not Hounsfield units (stored values without the rescale, or intensities scaled to [0, 1]),
    and the lungs would not be found and the model's window would see nonsense. The message names the file,
    the range found and the likely repair."""
    low, high = float(np.min(image)), float(np.max(image))
    if low <= HU_FLOOR:
        return
    if low >= 0.0 and high <= 1.0:
        hint = ("the values look scaled to [0, 1]: segment the original scan in HU, or 2D images in [0, 1] as an"
                " .npz with intensity 'unit'")
    elif low >= -50.0 and high > 1000.0:
        hint = ("the values look like stored CT values without their rescale (for most scanners HU = value - 1024):"
                " convert the file to HU first")
    else:
        hint = "convert the file to Hounsfield units first"
    raise DataError(f"{source}: intensities span [{low:g}, {high:g}] with nothing below {HU_FLOOR:g}, but a CT scan in"
                    f" Hounsfield units holds air near -1000 HU and lung near -850 HU; {hint}")
