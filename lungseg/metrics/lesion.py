"""Lesions (8-connected components of a 2D mask), their equivalent diameters, and small-tumour recall;
tumours (26-connected components of a patient's 3D mask) and their recall.

Lesion sizes are equivalent diameters: :func:`equivalent_diameter_mm` (disc of the same area, 2D) and
:func:`equivalent_sphere_diameter_mm` (sphere of the same volume, 3D). A 2D lesion is one tumour's
cross-section on one slice, so the first and last slices of every tumour are small lesions;
:func:`tumour_recall` counts each tumour once, as a reader counts nodules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from lungseg.metrics.arrays import as_binary, binary_pair, spacing_rows

__all__ = [
    "LESION_RULE",
    "Lesion",
    "check_lesion_args",
    "equivalent_diameter_mm",
    "equivalent_sphere_diameter_mm",
    "lesion_table",
    "lesions",
    "small_tumor_recall",
    "TUMOUR_RULE",
    "tumour_recall",
    "tumour_table",
]

LESION_RULE = (
    "Lesions are 8-connected components (scipy.ndimage.label, 3x3 structure) of the 2D target mask "
    "of each image; equivalent diameter = 2*sqrt(area_mm2/pi) with area from the in-plane pixel "
    "spacing; a lesion is small when its equivalent diameter is < {max_diameter_mm:g} mm and hit when "
    "the prediction covers >= {min_overlap:.0%} of its pixels (and at least one pixel)."
)

TUMOUR_RULE = (
    "Tumours are 26-connected components (scipy.ndimage.label, 3x3x3 structure) of each patient's 3D "
    "target mask, its slices stacked in order; equivalent-sphere diameter = (6*V/pi)^(1/3) with V from "
    "the voxel size; a tumour is small when that diameter is < {max_diameter_mm:g} mm and hit when the "
    "prediction covers >= {min_overlap:.0%} of its voxels (and at least one voxel)."
)

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
_TWENTY_SIX_CONNECTED = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class Lesion:
    """One 8-connected component of a 2D target mask.

    Attributes:
        pixels: ``(K, 2)`` int64 row/column indices of the component's pixels.
        area_mm2: area in mm², ``K * dy * dx``.
        diameter_mm: :func:`equivalent_diameter_mm` (disc of the same area).
    """

    pixels: np.ndarray
    area_mm2: float
    diameter_mm: float

    @property
    def n_pixels(self) -> int:
        """Number of pixels ``K``."""
        return int(self.pixels.shape[0])


def equivalent_diameter_mm(area: Any, spacing: Any = (1.0, 1.0)) -> Any:
    """Diameter ``2 sqrt(A / pi)`` of the disc with the area ``A`` of a 2D lesion (the lesion-size rule).

    Args:
        area: pixel count(s) (with their ``spacing``) or area(s) in mm² (with the default spacing),
            a number or an array.
        spacing: in-plane pixel size ``(dy, dx)`` in mm.

    Returns:
        ``2 * sqrt(area * dy * dx / pi)`` in mm, float64 (an array for array input).
    """
    dy, dx = spacing
    return 2.0 * np.sqrt(np.asarray(area, dtype=np.float64) * dy * dx / np.pi)


def equivalent_sphere_diameter_mm(volume: Any, unit_mm3: float = 1.0) -> Any:
    """Diameter ``(6 V / pi)^(1/3)`` of the sphere with the volume ``V`` of a 3D lesion.

    Args:
        volume: the volume in units of ``unit_mm3`` mm³: voxels with ``unit_mm3`` the voxel volume, ml
            with 1000, or mm³ with the default 1 (a number or an array).
        unit_mm3: mm³ per unit of ``volume``.

    Returns:
        ``(6 * volume * unit_mm3 / pi) ** (1/3)`` in mm (a float for Python numbers).
    """
    # Left as Python arithmetic in this order: callers that wrote ``(6 * n_voxels * voxel_volume /
    # pi) ** (1 / 3)`` get the same bits (float rounding depends on the order of the products).
    return (6 * volume * unit_mm3 / math.pi) ** (1 / 3)


def lesions(mask2d: Any, spacing: Any) -> list[Lesion]:
    """Connected lesions of one 2D mask (8-connectivity), with their equivalent diameters.

    Args:
        mask2d: binary mask ``(H, W)``.
        spacing: in-plane pixel spacing ``(dy, dx)`` in mm.

    Returns:
        One :class:`Lesion` per component, in ``scipy.ndimage.label`` order (raster scan).
    """
    m = as_binary(mask2d, "mask2d")
    if m.ndim != 2:
        raise ValueError(f"mask2d must be a 2D (H, W) mask, got shape {m.shape}")
    dy, dx = spacing_rows(spacing, 1)[0]
    labels, _ = ndimage.label(m, structure=_EIGHT_CONNECTED)
    out = []
    for _, (rows, cols) in sorted(ndimage.value_indices(labels, ignore_value=0).items()):
        out.append(
            Lesion(
                pixels=np.stack([rows, cols], axis=1).astype(np.int64),
                area_mm2=float(rows.size * dy * dx),
                diameter_mm=float(equivalent_diameter_mm(rows.size, (dy, dx))),
            )
        )
    return out


def lesion_table(p: np.ndarray, t: np.ndarray, spacing: np.ndarray | None, min_overlap: float) -> np.ndarray:
    """All target lesions of a stack as rows ``(image index, diameter mm, hit)`` float64 ``(L, 3)``.

    Diameter is NaN when ``spacing`` is None. Only images with a non-empty target are labelled.
    """
    rows = []
    for i in np.flatnonzero(t.reshape(t.shape[0], -1).any(axis=1)):
        labels, n = ndimage.label(t[i], structure=_EIGHT_CONNECTED)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        covered = np.bincount(labels.ravel(), weights=p[i].ravel(), minlength=n + 1)[1:]
        hit = (covered >= min_overlap * sizes) & (covered > 0)
        if spacing is None:
            diam = np.full(n, np.nan)
        else:
            diam = equivalent_diameter_mm(sizes, spacing[i])
        rows.append(np.stack([np.full(n, i, dtype=np.float64), diam, hit.astype(np.float64)], axis=1))
    return np.concatenate(rows) if rows else np.zeros((0, 3))


def check_lesion_args(max_diameter_mm: float, min_overlap: float) -> None:
    if not max_diameter_mm > 0:
        raise ValueError(f"max_diameter_mm must be > 0, got {max_diameter_mm!r}")
    if not 0.0 < min_overlap <= 1.0:
        raise ValueError(f"min_overlap must be in (0, 1], got {min_overlap!r}")


def small_tumor_recall(
    pred: Any,
    target: Any,
    spacing: Any,
    max_diameter_mm: float = 10.0,
    min_overlap: float = 0.1,
) -> tuple[float, int, int]:
    """Fraction of small ground-truth lesions that the prediction detects (Table 2, "small tumor recall").

    Lesions are 8-connected components of each 2D target image (scipy.ndimage.label with a 3x3
    structure). A lesion is *small* when its :func:`equivalent_diameter_mm` (area in mm²
    from the pixel spacing) is ``< max_diameter_mm``, and *hit* when the predicted mask covers at
    least ``min_overlap`` of its pixels (and at least one pixel). Components are counted per slice:
    a nodule spanning three slices counts three times.

    Args:
        pred: binary predictions ``(N, H, W)`` or one ``(H, W)`` image.
        target: binary targets, same shape.
        spacing: in-plane spacing ``(dy, dx)`` mm, one ``(2,)`` for all images or ``(N, 2)``.
        max_diameter_mm: size threshold (strict ``<``); ``math.inf`` counts every lesion.
        min_overlap: fraction of a lesion's pixels the prediction must cover.

    Returns:
        ``(recall, n_hit, n_lesions)``; recall is NaN when there is no small lesion.
    """
    check_lesion_args(max_diameter_mm, min_overlap)
    p, t = binary_pair(pred, target)
    if p.ndim == 2:
        p, t = p[None], t[None]
    p, t = binary_pair(p, t, ndim=3)
    table = lesion_table(p, t, spacing_rows(spacing, p.shape[0]), min_overlap)
    small = table[:, 1] < max_diameter_mm
    n_lesions, n_hit = int(small.sum()), int(table[small, 2].sum())
    return (n_hit / n_lesions if n_lesions else math.nan), n_hit, n_lesions


def tumour_table(pred: Any, target: Any, spacing: Any, min_overlap: float = 0.1) -> np.ndarray:
    """Every tumour of one patient's 3D mask as rows ``(equivalent-sphere diameter mm, hit)``, float64 ``(T, 2)``.

    Args:
        pred: binary prediction ``(D, H, W)``, the slices in order.
        target: binary target, same shape.
        spacing: voxel size ``(dz, dy, dx)`` in mm.
        min_overlap: share of a tumour's voxels the prediction must cover (:data:`TUMOUR_RULE`).

    Raises:
        ValueError: not 3D, shapes differ, a non-positive voxel size or ``min_overlap`` outside (0, 1].
    """
    check_lesion_args(1.0, min_overlap)
    p, t = binary_pair(pred, target, ndim=3)
    dz, dy, dx = (float(v) for v in spacing)
    if not min(dz, dy, dx) > 0:
        raise ValueError(f"spacing must be three positive voxel sizes (dz, dy, dx) in mm, got {tuple(spacing)}")
    labels, n = ndimage.label(t, structure=_TWENTY_SIX_CONNECTED)
    if n == 0:
        return np.zeros((0, 2))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    covered = np.bincount(labels.ravel(), weights=p.ravel(), minlength=n + 1)[1:]
    hit = (covered >= min_overlap * sizes) & (covered > 0)
    diameters = equivalent_sphere_diameter_mm(sizes.astype(np.float64), dz * dy * dx)
    return np.stack([diameters, hit.astype(np.float64)], axis=1)


def tumour_recall(tables: Any, max_diameter_mm: float = 10.0, min_overlap: float = 0.1) -> dict[str, Any]:
    """Tumour-level recall over patients, from their :func:`tumour_table` rows: all tumours and those under
    ``max_diameter_mm`` (equivalent-sphere diameter), each counted once however many slices it spans.

    Args:
        tables: one :func:`tumour_table` array per patient.
        max_diameter_mm: size threshold of a small tumour (strict ``<``).
        min_overlap: the hit rule the tables were made with (for the rule text).

    Returns:
        ``tumour_recall``, ``n_tumours``, ``n_tumours_hit``, ``small_tumour_recall_3d``,
        ``n_small_tumours``, ``n_small_tumours_hit`` (recalls NaN without tumours) and ``tumour_rule``.
    """
    check_lesion_args(max_diameter_mm, min_overlap)
    rows = np.concatenate([np.asarray(t, dtype=np.float64).reshape(-1, 2) for t in tables]) if len(tables) else np.zeros((0, 2))
    small = rows[:, 0] < max_diameter_mm
    n, n_hit = len(rows), int(rows[:, 1].sum())
    n_small, n_small_hit = int(small.sum()), int(rows[small, 1].sum())
    return {
        "tumour_recall": n_hit / n if n else math.nan, "n_tumours": n, "n_tumours_hit": n_hit,
        "small_tumour_recall_3d": n_small_hit / n_small if n_small else math.nan,
        "n_small_tumours": n_small, "n_small_tumours_hit": n_small_hit,
        "tumour_rule": TUMOUR_RULE.format(max_diameter_mm=max_diameter_mm, min_overlap=min_overlap),
    }
