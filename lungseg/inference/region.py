"""Where in a chest CT a lung tumour can be: the lungs, closed so that tumours on their walls are inside.

A network that has only seen tumours and their surroundings marks bright blobs wherever it is run
(the mediastinum, the chest wall, the scanner table). A lung tumour lies in a lung or grows from its
wall, so prediction on a whole scan keeps only what falls in the region this module computes:

1. the lungs: air-like voxels (below ``air_hu``) not connected, within the slice, to the air around
   the patient, in 3D components of at least ``min_lung_ml`` (bowel gas and noise are smaller);
2. closed slice by slice with a disc of radius ``close_mm`` and holes filled, so that a solid tumour
   against the pleura, the hilum or the mediastinum (which the air threshold cuts out of the lung)
   is back inside, then widened by ``margin_mm``.

The closing bridges a wall-attached tumour along the chord of the lung's curve, and the chest wall
curves outward, so part of a tumour pressed into the pleura lies beyond it: on 30 synthetic patients
(seeds 777 and 778, NSCLC-like tumours, the ``solid-randomised`` appearance of
``benchmarks/phantom_transfer.py``; never test data) a 5 mm margin held 97.4 % of the tumour voxels,
10 mm 99.7 %. With the published real-CT model on those patients the wider region also found more of
the tumours (recall 0.548 to 0.556) and marked fewer voxels in all (315,249 to 290,430; pooled Dice
0.157 to 0.170), so the margin is 10 mm (it was 5 mm until 2026-12-04; ``benchmarks/NOTES.md``).

A lung that the field of view cuts (it touches the image's edge in a slice) is, in that slice, taken
for the air around the patient: such a scan needs ``region="all"``.

The work is done on a grid of about ``grid_mm`` per pixel (the region is coarse by design) and the
result brought back to the scan's grid, so a 275-slice 512² series takes about a second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lungseg.inference.lesions import label_candidates

__all__ = ["LUNG_HU", "LungRegion", "lung_envelope", "lung_region", "lung_region_and_envelope", "set_aside_outside_lungs"]

#: Below this (HU) a voxel inside the body is aerated lung (about -850 HU); soft tissue lies above -100.
LUNG_HU = -400.0


@dataclass(frozen=True)
class LungRegion:
    """Settings of :func:`lung_region` (chosen from anatomy, not tuned on any scan).

    Attributes:
        air_hu: voxels below this are air-like (aerated lung is about -850 HU, soft tissue above -100).
        min_lung_ml: smallest 3D air component kept as lung (a lung holds litres; bowel gas far less).
        close_mm: radius of the in-plane closing that brings wall-attached tumours back inside; a
            tumour up to about twice this thick against the chest wall or mediastinum is covered.
        margin_mm: the region is widened by this much at the end (the part of a wall-attached tumour
            beyond the closing's chord; see the module docstring).
        grid_mm: in-plane pixel size the region is computed at.
        envelope_close_mm: radius of the in-plane closing of :func:`lung_envelope`, the lungs as a
            candidate must mostly lie in (vessels and airways closed over, the mediastinum and the dome of
            the diaphragm left out).
        min_share_in_lungs: a candidate with a smaller share of its voxels in :func:`lung_envelope` is
            set aside (:func:`set_aside_outside_lungs`).
    """

    air_hu: float = LUNG_HU
    min_lung_ml: float = 50.0
    close_mm: float = 30.0
    margin_mm: float = 10.0
    grid_mm: float = 3.0
    envelope_close_mm: float = 20.0
    min_share_in_lungs: float = 0.5


def _disc_dilate(mask: np.ndarray, radius_px: float) -> np.ndarray:
    """In-plane dilation of every slice of ``(Z, H, W)`` by a disc, through the distance transform."""
    if radius_px <= 0:
        return mask.copy()
    return np.stack([ndimage.distance_transform_edt(~m) <= radius_px if m.any() else m for m in mask])


def _disc_erode(mask: np.ndarray, radius_px: float) -> np.ndarray:
    return ~_disc_dilate(~mask, radius_px)


def _outside_air(air: np.ndarray) -> np.ndarray:
    """Per slice, the air connected to the slice's border (around the patient)."""
    out = np.zeros_like(air)
    for z, plane in enumerate(air):
        labels, _ = ndimage.label(plane)
        border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        out[z] = np.isin(labels, border[border > 0])
    return out


def _check(hu: np.ndarray, spacing: tuple[float, float, float]) -> None:
    if hu.ndim != 3:
        raise ValueError(f"hu must be (Z, H, W), got shape {hu.shape}")
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be three positive millimetre values (z, y, x), got {spacing!r}")


def _coarse_lungs(hu: np.ndarray, spacing: tuple[float, float, float], settings: LungRegion) -> tuple[np.ndarray, int, float]:
    """The lungs (step 1 of the module docstring) on the coarse grid, its subsampling step and pixel size (mm)."""
    step = max(1, int(settings.grid_mm / min(spacing[1], spacing[2])))
    coarse = hu[:, ::step, ::step] < settings.air_hu
    pixel_mm = min(spacing[1], spacing[2]) * step
    lungs = coarse & ~_outside_air(coarse)
    labels, n = ndimage.label(lungs)
    if n:
        voxel_ml = spacing[0] * pixel_mm * pixel_mm / 1000.0
        sizes = np.bincount(labels.ravel(), minlength=n + 1) * voxel_ml
        keep = sizes >= settings.min_lung_ml
        keep[0] = False
        lungs = keep[labels]
    return lungs, step, pixel_mm


def _to_scan(coarse: np.ndarray, step: int, shape: tuple[int, ...]) -> np.ndarray:
    full = np.repeat(np.repeat(coarse, step, axis=1), step, axis=2)
    return np.ascontiguousarray(full[:, :shape[1], :shape[2]])


def lung_envelope(hu: np.ndarray, spacing: tuple[float, float, float], settings: LungRegion = LungRegion()) -> np.ndarray:
    """The lungs closed in-plane with a disc of ``settings.envelope_close_mm`` and filled in 3D: the lungs
    with their vessels, airways and tumours, but without the mediastinum between them or the abdomen under
    the diaphragm's dome (which :func:`lung_region`'s wider closing and slice-by-slice filling take in).

    Raises:
        ValueError: as :func:`lung_region`.
    """
    _check(hu, spacing)
    lungs, step, pixel_mm = _coarse_lungs(hu, spacing, settings)
    return _to_scan(_envelope(lungs, pixel_mm, settings), step, hu.shape)


def _envelope(lungs: np.ndarray, pixel_mm: float, settings: LungRegion) -> np.ndarray:
    radius = settings.envelope_close_mm / pixel_mm
    return ndimage.binary_fill_holes(_disc_erode(_disc_dilate(lungs, radius), radius) | lungs)


def lung_region_and_envelope(hu: np.ndarray, spacing: tuple[float, float, float],
                             settings: LungRegion = LungRegion()) -> tuple[np.ndarray, np.ndarray]:
    """:func:`lung_region` and :func:`lung_envelope` from one finding of the lungs (what prediction needs).

    Raises:
        ValueError: as :func:`lung_region`.
    """
    _check(hu, spacing)
    lungs, step, pixel_mm = _coarse_lungs(hu, spacing, settings)
    return (_to_scan(_region(lungs, pixel_mm, settings), step, hu.shape),
            _to_scan(_envelope(lungs, pixel_mm, settings), step, hu.shape))


def set_aside_outside_lungs(mask: np.ndarray, envelope: np.ndarray, min_share: float) -> tuple[np.ndarray, np.ndarray]:
    """Split a predicted mask into the candidates that mostly lie in the lungs and those that do not.

    Args:
        mask: binary ``(Z, H, W)``; candidates are its 26-connected components.
        envelope: boolean, shaped like ``mask`` (:func:`lung_envelope`).
        min_share: a candidate with a smaller share of its voxels in ``envelope`` is set aside.

    Returns:
        ``(kept, set_aside)``: two boolean masks that partition ``mask``.

    Raises:
        ValueError: ``envelope`` is not shaped like ``mask``.
    """
    if np.shape(envelope) != np.shape(mask):
        raise ValueError(f"envelope must be shaped like the mask {np.shape(mask)}, got {np.shape(envelope)}")
    labels, n, box = label_candidates(mask)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    inside = np.bincount(labels[np.asarray(envelope, dtype=bool)[box]], minlength=n + 1)
    outside = np.zeros(n + 1, dtype=bool)
    outside[1:] = inside[1:] < min_share * sizes[1:]
    aside = np.zeros(np.shape(mask), dtype=bool)
    aside[box] = outside[labels]
    return (np.asarray(mask) > 0) & ~aside, aside


def lung_region(hu: np.ndarray, spacing: tuple[float, float, float], settings: LungRegion = LungRegion()) -> np.ndarray:
    """The region of a chest CT where lung tumours can lie (see the module docstring).

    Args:
        hu: ``(Z, H, W)`` axial slices in Hounsfield units.
        spacing: ``(z, y, x)`` voxel size in mm.
        settings: the thresholds and radii.

    Returns:
        boolean ``(Z, H, W)``; all ``False`` when the volume holds no lung (a scan of something else).

    Raises:
        ValueError: ``hu`` is not 3D or ``spacing`` is not three positive numbers.
    """
    _check(hu, spacing)
    lungs, step, pixel_mm = _coarse_lungs(hu, spacing, settings)
    return _to_scan(_region(lungs, pixel_mm, settings), step, hu.shape)


def _region(lungs: np.ndarray, pixel_mm: float, settings: LungRegion) -> np.ndarray:
    radius = settings.close_mm / pixel_mm
    closed = _disc_erode(_disc_dilate(lungs, radius), radius)
    filled = np.stack([ndimage.binary_fill_holes(plane) for plane in closed | lungs])
    return _disc_dilate(filled, settings.margin_mm / pixel_mm)
