"""Argument and input checks shared by prediction and evaluation: they refuse what would give silent
garbage or a raw Python error further down, naming the argument or the file."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lungseg.errors import DataError, LungsegError
from lungseg.inference.region import LUNG_HU

__all__ = ["AIR_AND_LUNG_HU", "MIN_AIR_AND_LUNG_SHARE", "check_positive_int", "check_threshold", "require_finite",
           "require_hounsfield"]


#: The HU of air and aerated lung: up to the threshold the lung region is found by (:data:`LUNG_HU`).
AIR_AND_LUNG_HU = (-1100.0, LUNG_HU)
#: The least share of a scan's voxels in :data:`AIR_AND_LUNG_HU` for it to be taken as a chest CT in HU: a chest
#: CT holds far more (LIDC-IDRI-0314 66 %, LUNG1-001 76 %, with the air around the body); stored values without
#: their rescale, or intensities scaled to [0, 1], hold none.
MIN_AIR_AND_LUNG_SHARE = 0.001


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
    """Refuse a scan taken as HU in which almost no voxel has the HU of air or lung (:data:`AIR_AND_LUNG_HU`,
    fewer than :data:`MIN_AIR_AND_LUNG_SHARE`): its values are not Hounsfield units as lungseg reads them
    (stored values without the rescale, intensities scaled to [0, 1], another modality), the lungs would not be
    found and the model's HU window would see nonsense. The message names the file, the range and share found,
    the likely repair, and ``--region all`` for a scan in HU that truly holds no air or lung (a crop of soft tissue).
    """
    share = float(np.count_nonzero((image >= AIR_AND_LUNG_HU[0]) & (image <= AIR_AND_LUNG_HU[1]))) / max(image.size, 1)
    if share >= MIN_AIR_AND_LUNG_SHARE:
        return
    low, median, high = (float(v) for v in np.percentile(image, (0, 50, 100)))
    if low >= 0.0 and high <= 1.0:
        hint = "the values look scaled to [0, 1]: segment the original scan in HU"
    elif median >= -50.0 and high > 1000.0:
        hint = "the values look like stored CT values without their rescale (for most scanners HU = value - 1024)"
    else:
        hint = "they do not look like a CT in HU"
    low_air, high_lung = AIR_AND_LUNG_HU
    raise DataError(f"{source}: intensities span [{low:g}, {high:g}] (median {median:g}), and {share:.2%} of the voxels lie"
                    f" in [{low_air:g}, {high_lung:g}], where a chest CT in Hounsfield units has its air and lung; {hint}:"
                    " convert the file to HU first, or, for a scan in HU that holds no air or lung (a crop of soft"
                    " tissue), segment it with --region all")
