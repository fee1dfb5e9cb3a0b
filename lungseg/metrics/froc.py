"""Lesion-level FROC: lesion sensitivity against false positives per scan, over probability thresholds.

Lesions follow :data:`lungseg.metrics.LESION_RULE` (8-connected components of each 2D target image,
hit when the thresholded prediction covers at least ``min_overlap`` of their pixels), so the FROC
point at the run's threshold is the ``lesion_recall`` of :func:`lungseg.metrics.summarize` at that
threshold. A *false positive* is an 8-connected component of the thresholded prediction that touches
no target pixel; false positives per scan divide their count by the number of scans (patients),
the convention of the lung-nodule challenges (LUNA16's FROC, Setio et al. 2017).

Each target lesion gets a *detection score*: the highest threshold at which it is still hit. The
sensitivity at threshold ``t`` is then the share of lesions whose score is ``>= t``, for any subset of
lesions (a size bin) without thresholding again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from lungseg.metrics.arrays import as_binary, spacing_rows, to_numpy
from lungseg.metrics.lesion import check_lesion_args, equivalent_diameter_mm

__all__ = ["FROC_FP_RATES", "froc", "froc_score", "lesion_detection_scores", "false_positive_components"]

#: False positives per scan at which the LUNA16 competition score averages the sensitivity.
FROC_FP_RATES: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _probabilities(probs: Any, shape: tuple[int, ...]) -> np.ndarray:
    p = to_numpy(probs, "probs")
    if p.shape != shape:
        raise ValueError(f"probs and target must have the same shape, got probs {p.shape} and target {shape}")
    if not np.issubdtype(p.dtype, np.floating) and not np.issubdtype(p.dtype, np.integer):
        raise ValueError(f"probs must be real numbers in [0, 1], got dtype {p.dtype}")
    if p.size and not (np.isfinite(p).all() and p.min() >= 0 and p.max() <= 1):
        raise ValueError("probs must be finite and in [0, 1] (probabilities, not logits)")
    return p


def _stack(probs: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    t = as_binary(target, "target")
    if t.ndim != 3:
        raise ValueError(f"target must be a stack of 2D images (N, H, W), got shape {t.shape}")
    return _probabilities(probs, t.shape), t


def lesion_detection_scores(probs: Any, target: Any, spacing: Any | None = None,
                            min_overlap: float = 0.1) -> np.ndarray:
    """Every target lesion as a row ``(image index, equivalent diameter mm, detection score)``.

    Args:
        probs: tumour probabilities ``(N, H, W)`` in [0, 1].
        target: binary targets, same shape.
        spacing: in-plane spacing ``(2,)`` or ``(N, 2)`` mm; ``None`` leaves the diameters NaN.
        min_overlap: share of a lesion's pixels the thresholded prediction must cover.

    Returns:
        ``(L, 3)`` float64; the score is the largest ``t`` with ``probs >= t`` on at least
        ``ceil(min_overlap * K)`` (and at least one) of the lesion's ``K`` pixels.
    """
    check_lesion_args(1.0, min_overlap)
    p, t = _stack(probs, target)
    rows = spacing_rows(spacing, len(t)) if spacing is not None else None
    out = []
    for i in np.flatnonzero(t.reshape(len(t), -1).any(axis=1)):
        labels, _ = ndimage.label(t[i], structure=_EIGHT_CONNECTED)
        for _, (r, c) in sorted(ndimage.value_indices(labels, ignore_value=0).items()):
            values = np.sort(p[i][r, c])[::-1]
            # the hit rule of lesion_table: covered >= min_overlap * K, covered > 0
            needed = max(1, math.ceil(min_overlap * values.size))
            diameter = math.nan if rows is None else float(equivalent_diameter_mm(values.size, rows[i]))
            out.append((float(i), diameter, float(values[needed - 1])))
    return np.asarray(out, dtype=np.float64).reshape(-1, 3)


def false_positive_components(probs: Any, target: Any, threshold: float) -> np.ndarray:
    """False-positive components per image: 8-connected components of ``probs >= threshold`` touching no
    target pixel.

    Returns:
        ``(N,)`` int64 counts.
    """
    p, t = _stack(probs, target)
    counts = np.zeros(len(p), dtype=np.int64)
    for i in range(len(p)):
        labels, n = ndimage.label(p[i] >= threshold, structure=_EIGHT_CONNECTED)
        if n:
            touching = np.unique(labels[t[i] & (labels > 0)])
            counts[i] = n - touching.size
    return counts


def froc(probs: Any, target: Any, patient_ids: Sequence[Any], thresholds: Sequence[float], *,
         spacing: Any | None = None, min_overlap: float = 0.1,
         size_bins: Sequence[tuple[str, float, float]] = ()) -> dict[str, Any]:
    """Lesion-level FROC of a probability stack over ``thresholds``.

    Args:
        probs: tumour probabilities ``(N, H, W)`` in [0, 1].
        target: binary targets, same shape.
        patient_ids: ``N`` scan (patient) identifiers; false positives are per scan.
        thresholds: probability thresholds, each in [0, 1].
        spacing: in-plane spacing for lesion diameters (needed by ``size_bins``).
        min_overlap: lesion hit rule (:data:`lungseg.metrics.LESION_RULE`).
        size_bins: ``(label, low_mm, high_mm)``: the sensitivity of lesions with ``low <= diameter <
            high`` as well, under ``by_size``.

    Returns:
        ``thresholds``, ``sensitivity`` and ``fp_per_scan`` (one per threshold), ``n_lesions``,
        ``n_scans``, ``false_positives`` (counts), ``by_size`` (``{label: {"n_lesions", "sensitivity"}}``)
        and ``fp_rule``. Sensitivity is NaN without lesions.
    """
    thr = np.asarray(thresholds, dtype=np.float64)
    if thr.ndim != 1 or not thr.size or not (np.isfinite(thr).all() and thr.min() >= 0 and thr.max() <= 1):
        raise ValueError(f"thresholds must be a non-empty list of numbers in [0, 1], got {thresholds!r}")
    p, t = _stack(probs, target)
    ids = to_numpy(patient_ids, "patient_ids")
    if ids.shape != (len(t),):
        raise ValueError(f"patient_ids must have one entry per image, got shape {ids.shape} for {len(t)} images")
    if size_bins and spacing is None:
        raise ValueError("size_bins need the spacing (lesion diameters in mm)")
    scores = lesion_detection_scores(p, t, spacing, min_overlap)
    n_scans = len(np.unique(ids.astype(str)))
    fps = np.array([int(false_positive_components(p, t, float(x)).sum()) for x in thr])

    def sensitivity(keep: np.ndarray) -> list[float]:
        s = scores[keep, 2]
        return [float((s >= x).mean()) if s.size else math.nan for x in thr]

    everything = np.ones(len(scores), dtype=bool)
    return {
        "thresholds": thr.tolist(), "sensitivity": sensitivity(everything),
        "fp_per_scan": (fps / n_scans).tolist(), "false_positives": fps.tolist(),
        "n_lesions": int(len(scores)), "n_scans": int(n_scans),
        "by_size": {label: {"n_lesions": int(keep.sum()), "sensitivity": sensitivity(keep)}
                    for label, low, high in size_bins
                    for keep in [(scores[:, 1] >= low) & (scores[:, 1] < high)]},
        "fp_rule": "8-connected components of the thresholded prediction touching no target pixel, per scan",
    }


def froc_score(fp_per_scan: Sequence[float], sensitivity: Sequence[float],
               rates: Sequence[float] = FROC_FP_RATES) -> float:
    """Mean sensitivity at the given false-positive rates (the LUNA16 competition score).

    The curve is read as a step function: at each rate, the highest sensitivity of a point with no
    more false positives per scan than the rate (0 when no point qualifies).

    Args:
        fp_per_scan: one value per FROC point.
        sensitivity: one value per FROC point.
        rates: false positives per scan to average over.

    Returns:
        The mean sensitivity over ``rates``; NaN when the sensitivities are NaN (no lesion).
    """
    fp, sens = np.asarray(fp_per_scan, dtype=np.float64), np.asarray(sensitivity, dtype=np.float64)
    if fp.shape != sens.shape or fp.ndim != 1:
        raise ValueError(f"fp_per_scan and sensitivity must be two lists of one length, got {fp.shape} and {sens.shape}")
    if np.isnan(sens).all():
        return math.nan
    return float(np.mean([np.nanmax(sens[fp <= r], initial=0.0) for r in rates]))
