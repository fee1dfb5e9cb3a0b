"""Volume agreement: tumour volumes per patient and their Bland–Altman analysis, and the worst cases.

Bland and Altman (Lancet 1986) compare two measurements of one quantity by their differences: the
*bias* is the mean difference (prediction minus reference) and the *limits of agreement* are
``bias ± z * sd`` of the differences, ``z`` the normal quantile of the level (1.96 at 95 %).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from lungseg.metrics.arrays import binary_pair, to_numpy
from lungseg.metrics.overlap import count_rows, is_both_empty, stat_from_counts

__all__ = ["MM3_PER_ML", "bland_altman", "volumes_ml", "worst_cases"]

#: Cubic millimetres in a millilitre.
MM3_PER_ML = 1000.0


def volumes_ml(mask: Any, patient_ids: Sequence[Any], voxel_mm3: Any) -> dict[str, float]:
    """Tumour volume of each patient in mL.

    Args:
        mask: binary masks ``(N, H, W)``, the slices of every patient.
        patient_ids: ``N`` patient identifiers.
        voxel_mm3: the voxel volume ``dz * dy * dx`` in mm³ of each slice ``(N,)`` (or one number).

    Returns:
        ``{patient: volume mL}`` in sorted patient order.
    """
    m, _ = binary_pair(mask, mask, ndim=3)
    ids = to_numpy(patient_ids, "patient_ids").astype(str)
    if ids.shape != (len(m),):
        raise ValueError(f"patient_ids must have one entry per image, got shape {ids.shape} for {len(m)} images")
    voxel = np.broadcast_to(np.asarray(voxel_mm3, dtype=np.float64), (len(m),))
    if not (np.isfinite(voxel).all() and (voxel > 0).all()):
        raise ValueError("voxel_mm3 must be finite and > 0")
    per_slice = m.reshape(len(m), -1).sum(axis=1) * voxel / MM3_PER_ML
    return {pid: float(per_slice[ids == pid].sum()) for pid in np.unique(ids)}


def bland_altman(predicted: Sequence[float], reference: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """Bias and limits of agreement of paired measurements (prediction minus reference).

    Args:
        predicted: one measurement per case (e.g. tumour volume in mL).
        reference: the reference measurement of the same cases.
        level: coverage of the limits of agreement.

    Returns:
        ``n``, ``mean`` (``(p + r) / 2`` per case), ``difference`` (``p - r``), ``bias``, ``sd``
        (sample standard deviation, ``ddof=1``), ``limits`` ``(low, high)``, ``z`` and ``level``;
        ``sd`` and the limits are NaN for fewer than two cases.
    """
    p, r = np.asarray(predicted, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if p.shape != r.shape or p.ndim != 1 or not p.size:
        raise ValueError(f"predicted and reference must be two non-empty lists of one length, got {p.shape} and {r.shape}")
    if not (np.isfinite(p).all() and np.isfinite(r).all()):
        raise ValueError("predicted and reference must be finite numbers")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    diff = p - r
    bias = float(diff.mean())
    sd = float(diff.std(ddof=1)) if diff.size > 1 else math.nan
    z = float(stats.norm.ppf(0.5 + level / 2.0))
    return {
        "n": int(diff.size), "mean": ((p + r) / 2.0).tolist(), "difference": diff.tolist(),
        "bias": bias, "sd": sd, "limits": (bias - z * sd, bias + z * sd), "z": z, "level": float(level),
    }


def worst_cases(pred: Any, target: Any, patient_ids: Sequence[Any], n: int, by: str = "image",
                with_tumour: bool = False) -> list[dict[str, Any]]:
    """The ``n`` lowest-Dice slices (``by="image"``) or patients (``by="patient"``), worst first.

    Slices (patients) whose target and prediction are both empty have no Dice
    (:data:`lungseg.metrics.EMPTY_MASK_RULE`) and are never listed; ties keep the input order.
    ``with_tumour`` lists only those with tumour in the target (leaving out false positives on
    tumour-free slices, which all score 0).

    Returns:
        ``[{"patient_id", "index" (the slice's position in the stack; the patient's first slice),
        "dice", "tumour_pixels", "predicted_pixels"}]``.
    """
    if by not in ("image", "patient"):
        raise ValueError(f"by must be 'image' or 'patient', got {by!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    p, t = binary_pair(pred, target, ndim=3)
    ids = to_numpy(patient_ids, "patient_ids").astype(str)
    if ids.shape != (len(p),):
        raise ValueError(f"patient_ids must have one entry per image, got shape {ids.shape} for {len(p)} images")
    counts = count_rows(p, t)
    if by == "patient":
        names, first = np.unique(ids, return_index=True)
        counts = np.stack([counts[ids == name].sum(axis=0) for name in names])
        owners, index = names, first
    else:
        owners, index = ids, np.arange(len(p))
    dice = stat_from_counts("dice", *counts.T)
    scored = np.flatnonzero(~is_both_empty(*counts[:, :3].T) & ((counts[:, 0] + counts[:, 2] > 0) | (not with_tumour)))
    order = scored[np.argsort(dice[scored], kind="stable")][:n]
    return [{"patient_id": str(owners[k]), "index": int(index[k]), "dice": float(dice[k]),
             "tumour_pixels": int(counts[k, 0] + counts[k, 2]), "predicted_pixels": int(counts[k, 0] + counts[k, 1])}
            for k in order]
