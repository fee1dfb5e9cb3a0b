"""The tumour-size bins that chapters 7 and 8 group slices by: the equivalent diameter of a
slice's tumour area (:func:`lungseg.metrics.equivalent_diameter_mm`) in mm."""

from __future__ import annotations

import math

__all__ = ["SIZE_BINS", "size_bin"]

#: Tumour-size bins (equivalent diameter of the slice's tumour area, mm): (label, low, high).
SIZE_BINS: tuple[tuple[str, float, float], ...] = (
    ("no tumour", 0.0, 0.0), ("< 10 mm", 0.0, 10.0), ("10-20 mm", 10.0, 20.0), (">= 20 mm", 20.0, math.inf),
)


def size_bin(diameter_mm: float) -> str:
    """The :data:`SIZE_BINS` label of a slice's tumour size (0 for a tumour-free slice)."""
    if diameter_mm <= 0:
        return SIZE_BINS[0][0]
    return next(name for name, lo, hi in SIZE_BINS[1:] if lo <= diameter_mm < hi)
