"""A grid cell's figures per training seed and test patient, for intervals that resample both.

A run's evaluation writes one row per test image (:meth:`lungseg.rundir.RunDir.read_per_image`: the
confusion counts, the image's Dice, HD95 and surface Dice). Every figure of :data:`PATIENT_FIGURES` is a
ratio of sums over patients, so it can be rebuilt from per-patient numerators and denominators and
resampled by :func:`lungseg.metrics.crossed_interval`: pooled figures from summed counts, means over
images from summed values and counts of defined images, the mean over patients from each patient's own
pooled Dice. The empty-mask rule holds throughout: an image (a patient) whose truth and prediction are
both empty has no Dice, and counts in no mean of Dice (:data:`lungseg.metrics.EMPTY_MASK_RULE`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["PATIENT_FIGURES", "patient_figures", "stack_seeds"]

#: Figures of the results table that a run's per-image table rebuilds per patient.
PATIENT_FIGURES: tuple[str, ...] = (
    "dice_pooled", "iou_pooled", "precision_pooled", "recall_pooled", "accuracy_pooled",
    "dice_per_image", "iou_per_image", "dice_per_patient", "hd95_mm_per_image", "surface_dice_per_image",
)
_COUNTS = ("tp", "fp", "fn", "tn")
_PER_IMAGE_VALUES = ("dice", "hd95_mm", "surface_dice")


def _value(text: str) -> float | None:
    """A per-image table's cell: a number, or ``None`` where it is empty (undefined)."""
    if text is None or text.strip() == "":
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def _sums(rows: Sequence[dict[str, str]], patients: Sequence[str]) -> dict[str, np.ndarray]:
    """Per patient: summed confusion counts, and sum and count of each defined per-image value."""
    index = {p: i for i, p in enumerate(patients)}
    sums = {k: np.zeros(len(patients)) for k in (*_COUNTS, "iou")}
    for name in _PER_IMAGE_VALUES:
        sums[name], sums[f"n_{name}"] = np.zeros(len(patients)), np.zeros(len(patients))
    for row in rows:
        i = index[row["patient_id"]]
        for k in _COUNTS:
            sums[k][i] += float(row[k])
        for name in _PER_IMAGE_VALUES:
            value = _value(row.get(name, ""))
            if value is not None:
                sums[name][i] += value
                sums[f"n_{name}"][i] += 1
                if name == "dice":  # per-image IoU from per-image Dice: IoU = D / (2 - D)
                    sums["iou"][i] += value / (2 - value)
    return sums


def patient_figures(rows: Sequence[dict[str, str]], patients: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each figure of :data:`PATIENT_FIGURES` as ``(numerator, denominator)`` per patient, in ``patients`` order.

    Args:
        rows: one run's per-image table (``patient_id``, ``tp``, ``fp``, ``fn``, ``tn``, ``dice``, ``hd95_mm``,
            ``surface_dice``).
        patients: the test patients, in the order shared by every run of the grid.

    Raises:
        ValueError: a row names a patient not in ``patients``.
    """
    unknown = sorted({r["patient_id"] for r in rows} - set(patients))
    if unknown:
        raise ValueError(f"per-image rows name patients {unknown[:5]} outside the {len(patients)} given")
    s = _sums(rows, patients)
    tp, fp, fn, tn = (s[k] for k in _COUNTS)
    both_empty = (tp + fp + fn) == 0
    patient_dice = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=~both_empty)
    return {
        "dice_pooled": (2 * tp, 2 * tp + fp + fn),
        "iou_pooled": (tp, tp + fp + fn),
        "precision_pooled": (tp, tp + fp),
        "recall_pooled": (tp, tp + fn),
        "accuracy_pooled": (tp + tn, tp + fp + fn + tn),
        "dice_per_image": (s["dice"], s["n_dice"]),
        "iou_per_image": (s["iou"], s["n_dice"]),
        "dice_per_patient": (patient_dice, (~both_empty).astype(float)),
        "hd95_mm_per_image": (s["hd95_mm"], s["n_hd95_mm"]),
        "surface_dice_per_image": (s["surface_dice"], s["n_surface_dice"]),
    }


def stack_seeds(tables: Sequence[dict[str, tuple[np.ndarray, np.ndarray]]], name: str) -> tuple[np.ndarray, np.ndarray]:
    """Figure ``name`` of several seeds' :func:`patient_figures` as ``(n_seeds, n_patients)`` arrays."""
    return np.stack([t[name][0] for t in tables]), np.stack([t[name][1] for t in tables])
