"""Boundary metrics, HD95 and surface Dice at a tolerance in millimetres, by MONAI.

Both come from the physical pixel (voxel) spacing; their empty-mask rule is
:data:`BOUNDARY_EMPTY_RULE`, stated beside :data:`lungseg.metrics.EMPTY_MASK_RULE`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from lungseg.metrics.arrays import binary_pair, spacing_rows, to_numpy

__all__ = [
    "BOUNDARY_DEFINITION",
    "BOUNDARY_EMPTY_RULE",
    "BOUNDARY_METRICS",
    "BOUNDARY_TOLERANCE_MM",
    "HD_PERCENTILE",
    "boundary_per_image",
    "boundary_scores",
    "boundary_summary",
]

#: Default tolerance of the surface Dice in mm: about two to three in-plane pixels of a chest CT
#: (0.6–1 mm), below the slice thickness; the boundary-accuracy scale of the CRF claim (eq. 10).
BOUNDARY_TOLERANCE_MM: float = 2.0

#: The percentile of the Hausdorff distance reported (HD95).
HD_PERCENTILE: float = 95.0

BOUNDARY_METRICS: tuple[str, ...] = ("hd95_mm", "surface_dice")
"""Names of the boundary figures (:func:`boundary_scores`, :func:`boundary_summary`)."""

BOUNDARY_EMPTY_RULE = (
    "Boundary figures (HD95 in mm, surface Dice at the tolerance) of an image (patient) whose target "
    "and prediction are both empty are undefined: blank in the per-image table and left out of the "
    "means, as in EMPTY_MASK_RULE. When exactly one of them is empty, surface Dice = 0 (no boundary "
    "lies within the tolerance of a boundary that is absent) and counts in the mean, while HD95 is "
    "undefined (there is no distance to an absent boundary): it is left out of the HD95 mean and "
    "counted in n_hd95_undefined, so the HD95 mean describes only images (patients) where both masks "
    "have a boundary; missed and spurious tumours are measured by surface Dice, recall and "
    "n_false_positive_images."
)
"""The one empty-mask rule of the boundary metrics, beside :data:`EMPTY_MASK_RULE` (the overlap one).

MONAI itself returns NaN for HD95 with one mask empty and 0 for its surface Dice, NaN for both with
both masks empty; this rule states what the means do with those values."""

BOUNDARY_DEFINITION = (
    "Boundary pixels (voxels) are a mask's pixels that binary erosion removes (MONAI get_mask_edges); "
    "distances are Euclidean in mm from the pixel (voxel) spacing. HD95 = max of the two directed "
    "95th-percentile surface distances (monai.metrics.compute_hausdorff_distance, percentile=95); "
    "surface Dice = fraction of both boundaries within {tolerance_mm:g} mm of the other "
    "(monai.metrics.compute_surface_dice, Nikolov et al. 2021). Per image: 2D, in-plane spacing; per "
    "patient: 3D over the patient's slices with the slice spacing, then the mean over patients."
)


def boundary_scores(pred: Any, target: Any, spacing: Any,
                    tolerance_mm: float = BOUNDARY_TOLERANCE_MM) -> tuple[float, float]:
    """HD95 (mm) and surface Dice of one 2D image or one 3D volume, by MONAI.

    Uses ``monai.metrics.compute_hausdorff_distance(percentile=95, spacing=...)`` and
    ``monai.metrics.compute_surface_dice(class_thresholds=[tolerance_mm], spacing=...)``
    (Nikolov et al., "Clinically applicable segmentation of head and neck anatomy for radiotherapy",
    2021, for the surface Dice; the maintained implementation rather than one more of our own).

    Args:
        pred: binary prediction ``(H, W)`` or ``(Z, H, W)``.
        target: binary target, same shape.
        spacing: pixel (voxel) size in mm, one value per axis: ``(dy, dx)`` or ``(dz, dy, dx)``.
        tolerance_mm: surface-Dice tolerance in mm (> 0).

    Returns:
        ``(hd95_mm, surface_dice)`` following :data:`BOUNDARY_EMPTY_RULE`: ``(nan, nan)`` when both
        masks are empty, ``(nan, 0.0)`` when exactly one is.

    Raises:
        ValueError: masks not binary, shapes differ, not 2D/3D, or bad spacing or tolerance.
    """
    p, t = binary_pair(pred, target)
    if p.ndim not in (2, 3):
        raise ValueError(f"pred and target must be one 2D image (H, W) or one 3D volume (Z, H, W), got shape {p.shape}")
    s = to_numpy(spacing, "spacing").astype(np.float64).ravel()
    if s.shape != (p.ndim,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"spacing must be {p.ndim} finite positive values in mm (one per axis of {p.shape}), "
                         f"got {np.asarray(spacing).tolist()}")
    if not (isinstance(tolerance_mm, (int, float)) and math.isfinite(tolerance_mm) and tolerance_mm > 0):
        raise ValueError(f"tolerance_mm must be a finite number > 0, got {tolerance_mm!r}")
    has_p, has_t = bool(p.any()), bool(t.any())
    if not (has_p or has_t):
        return math.nan, math.nan
    if not (has_p and has_t):
        return math.nan, 0.0
    import torch
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    tp, tt = torch.from_numpy(p[None, None]), torch.from_numpy(t[None, None])
    with warnings.catch_warnings():  # MONAI's own deprecation notices of get_mask_edges arguments
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(tp, tt, include_background=True, percentile=HD_PERCENTILE,
                                        spacing=s.tolist())
        nsd = compute_surface_dice(tp, tt, class_thresholds=[float(tolerance_mm)], include_background=True,
                                   spacing=s.tolist())
    return float(hd.reshape(-1)[0]), float(nsd.reshape(-1)[0])


def boundary_per_image(pred: Any, target: Any, spacing: Any,
                       tolerance_mm: float = BOUNDARY_TOLERANCE_MM) -> np.ndarray:
    """:func:`boundary_scores` of each 2D image of a stack.

    Args:
        pred: binary predictions ``(N, H, W)`` (or ``(N, 1, H, W)``).
        target: binary targets, same shape.
        spacing: in-plane spacing ``(2,)`` or ``(N, 2)`` (dy, dx) mm.
        tolerance_mm: surface-Dice tolerance in mm.

    Returns:
        float64 ``(N, 2)``: columns ``hd95_mm``, ``surface_dice`` (:data:`BOUNDARY_METRICS`), NaN per
        :data:`BOUNDARY_EMPTY_RULE`.
    """
    p, t = binary_pair(pred, target, ndim=3)
    s = spacing_rows(spacing, p.shape[0])
    out = np.full((p.shape[0], 2), np.nan)
    for i in range(p.shape[0]):
        out[i] = boundary_scores(p[i], t[i], s[i], tolerance_mm)
    return out


def _mean_defined(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def boundary_summary(
    pred: Any,
    target: Any,
    patient_ids: Sequence[Any],
    spacing: Any,
    slice_spacing: Any | None = None,
    *,
    tolerance_mm: float = BOUNDARY_TOLERANCE_MM,
    per_image: np.ndarray | None = None,
) -> dict[str, Any]:
    """HD95 and surface Dice per image (2D) and per patient (3D), with :data:`BOUNDARY_EMPTY_RULE`.

    Args:
        pred: binary predictions ``(N, H, W)``; a patient's images in slice order, contiguous
            (as :func:`lungseg.evaluation.evaluate_run` collects whole volumes).
        target: binary targets, same shape.
        patient_ids: ``N`` patient identifiers.
        spacing: in-plane spacing ``(2,)`` or ``(N, 2)`` (dy, dx) mm.
        slice_spacing: slice spacing in mm, one number for all patients or ``{patient_id: mm}``;
            ``None`` (or a patient's ``None``) when unknown, e.g. a stack of unrelated 2D slices:
            that patient's 3D figures are then not computed (NaN), as the slices need not be
            neighbours.
        tolerance_mm: surface-Dice tolerance in mm.
        per_image: the :func:`boundary_per_image` array when the caller already has it.

    Returns:
        ``{"tolerance_mm", "per_image": {"hd95_mm", "hd95_mm_median", "surface_dice"},
        "per_patient": {"hd95_mm", "hd95_mm_median", "surface_dice"}, "n_images_hd95",
        "n_images_surface_dice", "n_images_hd95_undefined", "n_patients_hd95",
        "n_patients_surface_dice", "n_patients_hd95_undefined", "n_patients_no_slice_spacing",
        "patients": {id: {"hd95_mm", "surface_dice"}}, "empty_mask_rule", "definition"}``; means are
        NaN when no image (patient) has the figure defined.
    """
    p, t = binary_pair(pred, target, ndim=3)
    n = p.shape[0]
    ids = to_numpy(patient_ids, "patient_ids").astype(str)
    if ids.shape != (n,):
        raise ValueError(f"patient_ids must have one entry per image: got shape {ids.shape} for {n} images")
    s = spacing_rows(spacing, n)
    img = boundary_per_image(p, t, s, tolerance_mm) if per_image is None else np.asarray(per_image, np.float64)
    if img.shape != (n, 2):
        raise ValueError(f"per_image must be (N, 2) = ({n}, 2), got shape {img.shape}")
    patients: dict[str, dict[str, float]] = {}
    no_z = 0
    for pid in dict.fromkeys(ids.tolist()):  # first-appearance order
        rows = np.flatnonzero(ids == pid)
        dz = slice_spacing.get(pid) if isinstance(slice_spacing, dict) else slice_spacing
        if not np.allclose(s[rows], s[rows[0]]):
            raise ValueError(f"patient {pid!r}: images with different in-plane spacing; a 3D surface needs one")
        if dz is None:
            no_z += 1
            patients[pid] = {"hd95_mm": math.nan, "surface_dice": math.nan}
            continue
        hd, nsd = boundary_scores(p[rows], t[rows], (float(dz), *s[rows[0]]), tolerance_mm)
        patients[pid] = {"hd95_mm": hd, "surface_dice": nsd}
    pat = np.array([[v["hd95_mm"], v["surface_dice"]] for v in patients.values()], dtype=np.float64)
    has_z = np.array([
        (slice_spacing.get(pid) if isinstance(slice_spacing, dict) else slice_spacing) is not None
        for pid in patients
    ])
    one_empty_img = np.isnan(img[:, 0]) & np.isfinite(img[:, 1])
    one_empty_pat = np.isnan(pat[:, 0]) & np.isfinite(pat[:, 1]) & has_z
    return {
        "tolerance_mm": float(tolerance_mm),
        "per_image": {"hd95_mm": _mean_defined(img[:, 0]), "hd95_mm_median": _median_defined(img[:, 0]),
                      "surface_dice": _mean_defined(img[:, 1])},
        "per_patient": {"hd95_mm": _mean_defined(pat[:, 0]), "hd95_mm_median": _median_defined(pat[:, 0]),
                        "surface_dice": _mean_defined(pat[:, 1])},
        "n_images_hd95": int(np.isfinite(img[:, 0]).sum()),
        "n_images_surface_dice": int(np.isfinite(img[:, 1]).sum()),
        "n_images_hd95_undefined": int(one_empty_img.sum()),
        "n_patients_hd95": int(np.isfinite(pat[:, 0]).sum()),
        "n_patients_surface_dice": int(np.isfinite(pat[:, 1]).sum()),
        "n_patients_hd95_undefined": int(one_empty_pat.sum()),
        "n_patients_no_slice_spacing": int(no_z),
        "patients": patients,
        "empty_mask_rule": BOUNDARY_EMPTY_RULE,
        "definition": BOUNDARY_DEFINITION.format(tolerance_mm=tolerance_mm),
    }


def _median_defined(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else math.nan
