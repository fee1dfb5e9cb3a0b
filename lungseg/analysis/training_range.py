"""Are a scan's tumours inside the range the real-CT model was trained on? Size and attachment, slice by slice.

The published real-CT model learned from 2D patches of real tumours, 48 x 48 pixels at 2 mm (96 mm across),
each min-max scaled on its own (``../shared/realct/msd-task06-2mm-patches``). A tumour cross-section on a whole
scan can lie outside what those patches showed in two ways this module measures, on the same 2 mm pixels:

* **size**: the equivalent diameter of the cross-section (:func:`lungseg.metrics.equivalent_diameter_mm`);
* **attachment**: the share of the one-pixel ring just outside the tumour that is at least as bright as the
  tumour's lower quartile. It is near 0 for a nodule surrounded by lung and rises for a tumour against the
  mediastinum, a vessel or the chest wall. It compares intensities within one image, so any increasing
  rescaling (HU, or a patch's min-max scaling) leaves it unchanged, and patches and scans compare directly.
  Clipping is not such a rescaling: it would matter only for a tumour whose lower quartile lies at a clipped
  value (in the real patches, whose brightest pixels are clipped at 1, the tumours' lower quartiles lie
  between 0.12 and 0.91).

A patch is cut around its tumour, so a tumour wider than the patch is cut off by its border: the largest
diameter among the patches is a lower bound of the largest tumour the model saw, and
:func:`patch_cross_sections` reports which cross-sections touch the border. The patches also repeat
themselves: one tumour slice is often cut several times at shifted positions (the same tumour pixels), so a
patch whose tumour pixels repeat an earlier patch's is marked as a repeat and counted once.

A model run on three planes sees each part of a tumour on an axial, a coronal and a sagittal slice, so a
small axial cross-section at the end of a large mass lies on large coronal and sagittal ones:
:func:`scan_cross_sections` gives both, per axial slice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from lungseg.metrics import equivalent_diameter_mm

__all__ = ["PIXEL_MM", "cross_section", "patch_cross_sections", "range_summary", "scan_cross_sections"]

#: The pixel size of the real training patches (mm), at which every cross-section is measured.
PIXEL_MM = 2.0
#: The quantile of the tumour's intensities that a ring pixel must reach to count as attached tissue.
TUMOUR_QUANTILE = 25.0
_RING = np.ones((3, 3), dtype=bool)


def cross_section(image: np.ndarray, mask: np.ndarray, pixel_mm: float = PIXEL_MM) -> dict[str, float] | None:
    """Size and attachment of one 2D tumour cross-section.

    Args:
        image: ``(H, W)`` intensities (HU or [0, 1]; only their order matters).
        mask: ``(H, W)`` tumour mask, same shape.
        pixel_mm: the (square) pixel size of both, mm.

    Returns:
        ``{"diameter_mm", "attached_share"}``, or ``None`` for an empty mask.

    Raises:
        ValueError: ``image`` and ``mask`` are not one 2D shape, or ``pixel_mm`` is not positive.
    """
    image, mask = np.asarray(image), np.asarray(mask) > 0
    if image.ndim != 2 or image.shape != mask.shape:
        raise ValueError(f"image and mask must be one 2D shape (H, W); got {image.shape} and {mask.shape}")
    if not pixel_mm > 0:
        raise ValueError(f"pixel_mm must be positive, got {pixel_mm}")
    if not mask.any():
        return None
    ring = ndimage.binary_dilation(mask, structure=_RING) & ~mask
    bright = np.percentile(image[mask], TUMOUR_QUANTILE)
    attached = float((image[ring] >= bright).mean()) if ring.any() else 1.0  # a mask filling the image
    return {"diameter_mm": float(equivalent_diameter_mm(mask.sum(), (pixel_mm, pixel_mm))), "attached_share": attached}


def patch_cross_sections(images: np.ndarray, labels: np.ndarray, pixel_mm: float = PIXEL_MM) -> list[dict[str, Any]]:
    """:func:`cross_section` of every patch that shows a tumour, with its index, whether the tumour touches
    the patch's border (then it is cut off, and its size a lower bound) and ``repeat_of``: the first patch
    whose tumour pixels are the same (as many, with the same intensities), or ``None``.

    Args:
        images: ``(N, H, W)`` patches.
        labels: ``(N, H, W)`` their tumour masks.
        pixel_mm: the patches' pixel size.

    Raises:
        ValueError: ``images`` and ``labels`` are not one ``(N, H, W)`` shape.
    """
    images, labels = np.asarray(images), np.asarray(labels) > 0
    if images.ndim != 3 or images.shape != labels.shape:
        raise ValueError(f"images and labels must be one shape (N, H, W); got {images.shape} and {labels.shape}")
    rows, first_seen = [], {}
    for index, (image, label) in enumerate(zip(images, labels)):
        section = cross_section(image, label, pixel_mm)
        if section is not None:
            border = bool(label[0].any() or label[-1].any() or label[:, 0].any() or label[:, -1].any())
            tumour = np.sort(np.asarray(image, dtype=np.float64)[label]).round(4).tobytes()
            rows.append({"patch": index, **section, "touches_border": border, "repeat_of": first_seen.get(tumour)})
            first_seen.setdefault(tumour, index)
    return rows


def scan_cross_sections(image: np.ndarray, mask: np.ndarray, spacing: Sequence[float], pixel_mm: float = PIXEL_MM,
                        predictions: Mapping[str, np.ndarray] | None = None) -> list[dict[str, Any]]:
    """:func:`cross_section` of every axial slice of a scan that holds tumour, each slice resampled to
    ``pixel_mm`` pixels as the training patches were (linear for the image, the mask's linear interpolation
    thresholded at 0.5); ``coronal_mm`` and ``sagittal_mm``: the median, over the slice's tumour voxels, of the
    equivalent diameter of the coronal and the sagittal cross-section each lies on; and, for each named mask of
    ``predictions``, the share of the slice's tumour it marks (native grid), under its name.

    Args:
        image: ``(Z, H, W)`` scan.
        mask: ``(Z, H, W)`` reference tumour mask.
        spacing: ``(z, row, column)`` mm.
        pixel_mm: the pixel size the cross-sections are measured at.
        predictions: optional binary ``(Z, H, W)`` masks of a model by name (e.g. ``{"found": mask}``).

    Raises:
        ValueError: the arrays are not one 3D shape, or ``spacing`` does not hold three positive sizes.
    """
    image, mask = np.asarray(image), np.asarray(mask) > 0
    predictions = {name: np.asarray(p) > 0 for name, p in (predictions or {}).items()}
    if image.ndim != 3 or image.shape != mask.shape or any(p.shape != mask.shape for p in predictions.values()):
        raise ValueError(f"image, mask and predictions must be one 3D shape (Z, H, W); got {image.shape}, {mask.shape}"
                         f" and {[p.shape for p in predictions.values()]}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be three positive sizes (z, row, column) in mm, got {tuple(spacing)}")
    zoom = (spacing[1] / pixel_mm, spacing[2] / pixel_mm)
    coronal = equivalent_diameter_mm(mask.sum(axis=(0, 2)), (spacing[0], spacing[2]))  # per row index
    sagittal = equivalent_diameter_mm(mask.sum(axis=(0, 1)), (spacing[0], spacing[1]))  # per column index
    rows = []
    for z in np.flatnonzero(mask.any(axis=(1, 2))):
        section = cross_section(ndimage.zoom(image[z].astype(np.float32), zoom, order=1),
                                ndimage.zoom(mask[z].astype(np.float32), zoom, order=1) > 0.5, pixel_mm)
        if section is None:  # a sliver lost in the resampling
            continue
        ys, xs = np.nonzero(mask[z])
        row: dict[str, Any] = {"slice": int(z), **section, "coronal_mm": float(np.median(coronal[ys])),
                               "sagittal_mm": float(np.median(sagittal[xs]))}
        row.update({name: float(p[z][mask[z]].mean()) for name, p in predictions.items()})
        rows.append(row)
    return rows


def range_summary(scan_rows: list[dict[str, Any]], patch_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How many of a scan's axial cross-sections lie beyond the training patches' (each distinct one counted
    once: repeats are left out): wider than the widest (a lower bound, see the module) or than nine in ten of
    them, and more attached than nine in ten; where the rows carry them, how many lie on a coronal or sagittal
    cross-section wider than the widest; with the patches' quantiles these counts are measured against."""
    repeats = sum(r.get("repeat_of") is not None for r in patch_rows)
    patch_rows = [r for r in patch_rows if r.get("repeat_of") is None]
    if not patch_rows:
        raise ValueError("no training cross-sections to compare with")
    diameters = np.array([r["diameter_mm"] for r in patch_rows])
    attached = np.array([r["attached_share"] for r in patch_rows])
    widest, wide90, att90 = float(diameters.max()), float(np.percentile(diameters, 90)), float(np.percentile(attached, 90))
    return {
        "slices": len(scan_rows),
        "wider_than_every_patch": sum(r["diameter_mm"] > widest for r in scan_rows),
        "wider_than_9_in_10_patches": sum(r["diameter_mm"] > wide90 for r in scan_rows),
        "more_attached_than_9_in_10_patches": sum(r["attached_share"] > att90 for r in scan_rows),
        **({"on_a_coronal_or_sagittal_section_wider_than_every_patch": sum(
            max(r["coronal_mm"], r["sagittal_mm"]) > widest for r in scan_rows)}
           if all("coronal_mm" in r for r in scan_rows) else {}),
        "patches": {"count": len(patch_rows), "repeats_left_out": repeats, "widest_mm": round(widest, 1),
                    "diameter_p90_mm": round(wide90, 1),
                    "diameter_median_mm": round(float(np.median(diameters)), 1),
                    "attached_p90": round(att90, 3), "attached_median": round(float(np.median(attached)), 3),
                    "touching_border": sum(bool(r["touches_border"]) for r in patch_rows)},
    }
