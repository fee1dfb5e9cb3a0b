"""Tumour sizes: the bins that chapters 7 and 8 group slices by (the equivalent diameter of a
slice's tumour area, :func:`lungseg.metrics.equivalent_diameter_mm`, in mm), and lesion recall split
into small and larger cross-sections (chapter 5)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

__all__ = ["SIZE_BINS", "lesion_recall_by_size", "size_bin"]

#: Tumour-size bins (equivalent diameter of the slice's tumour area, mm): (label, low, high).
SIZE_BINS: tuple[tuple[str, float, float], ...] = (
    ("no tumour", 0.0, 0.0), ("< 10 mm", 0.0, 10.0), ("10-20 mm", 10.0, 20.0), (">= 20 mm", 20.0, math.inf),
)


def size_bin(diameter_mm: float) -> str:
    """The :data:`SIZE_BINS` label of a slice's tumour size (0 for a tumour-free slice)."""
    if diameter_mm <= 0:
        return SIZE_BINS[0][0]
    return next(name for name, lo, hi in SIZE_BINS[1:] if lo <= diameter_mm < hi)


def lesion_recall_by_size(evaluations: Iterable[tuple[str, dict[str, Any]]], target: float = 0.85) -> list[dict[str, Any]]:
    """Each evaluation's lesion recall split into cross-sections under 10 mm and the rest, and what the
    small ones would need for the whole to reach ``target``.

    A lesion is a connected tumour component of one slice (the evaluation's ``lesion_rule``), so the
    first and last slices of every tumour are small lesions whatever the tumour's size. With ``n``
    lesions of which ``n_small`` are small, and ``hit_large`` larger ones found, the lesion recall
    reaches ``target`` only when at least ``target * n - hit_large`` small ones are found.

    Args:
        evaluations: ``(name, evaluation)`` pairs, an evaluation as :func:`lungseg.evaluation.evaluate`
            writes it (``n_lesions``, ``n_lesions_hit``, ``n_small_lesions``, ``n_small_hit``).
        target: the lesion recall asked for.

    Returns:
        One row per evaluation: ``run``, ``lesions``, ``small_share``, ``lesion_recall``,
        ``recall_small``, ``recall_10mm_plus``, ``recall_if_all_10mm_plus_found`` and
        ``small_recall_needed`` (above 1 where even finding every larger one falls short).

    Raises:
        ValueError: ``target`` outside (0, 1], or an evaluation without lesion counts.
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target must be in (0, 1], got {target!r}")
    rows = []
    for name, ev in evaluations:
        missing = [k for k in ("n_lesions", "n_lesions_hit", "n_small_lesions", "n_small_hit") if ev.get(k) is None]
        if missing:
            raise ValueError(f"{name}: the evaluation has no {', '.join(missing)} (lesion sizes unknown?)")
        n, hit, n_small, hit_small = (int(ev[k]) for k in ("n_lesions", "n_lesions_hit", "n_small_lesions", "n_small_hit"))
        n_large, hit_large = n - n_small, hit - hit_small
        rows.append({
            "run": name, "lesions": n, "small_share": n_small / n if n else math.nan,
            "lesion_recall": hit / n if n else math.nan,
            "recall_small": hit_small / n_small if n_small else math.nan,
            "recall_10mm_plus": hit_large / n_large if n_large else math.nan,
            "recall_if_all_10mm_plus_found": (n_large + hit_small) / n if n else math.nan,
            "small_recall_needed": max(0.0, target * n - hit_large) / n_small if n_small else math.nan,
        })
    return rows
