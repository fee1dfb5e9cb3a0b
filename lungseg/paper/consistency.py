"""Internal consistency checks a reader can do on the paper's printed numbers (chapter 9).

Each check is arithmetic on :mod:`lungseg.paper.published`: an F-score recomputed from its
precision and recall, an IoU implied by a Dice, the tumour prevalence a pooled (accuracy,
precision, recall) triple implies, and the like. No data are needed.
"""

from __future__ import annotations

import math
from typing import Any

from lungseg.paper.published import PAPER_ABSTRACT, PAPER_TABLE2, PAPER_TABLE3

__all__ = [
    "accuracy_of_empty_prediction",
    "dice_f1_consistency",
    "dice_iou_consistency",
    "f_score",
    "implied_prevalence",
    "iou_from_dice",
    "precision_from_f1_recall",
    "table3_consistency",
]


def f_score(precision: float, recall: float) -> float:
    """Harmonic mean of precision and recall (the F-score of eq. 14); 0 when both are 0."""
    if precision < 0 or recall < 0:
        raise ValueError(f"precision and recall must be >= 0, got {precision}, {recall}")
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def iou_from_dice(dice: float) -> float:
    """IoU implied by a Dice computed on the same pixel set: ``J = D / (2 - D)``.

    Exact for pooled figures (one confusion matrix); for means over images the mean IoU is
    at least ``f(mean Dice)`` because ``D / (2 - D)`` is convex (Jensen), never exactly equal
    unless every image has the same Dice."""
    if not 0.0 <= dice <= 1.0:
        raise ValueError(f"dice must be in [0, 1], got {dice}")
    return dice / (2.0 - dice)


def implied_prevalence(accuracy: float, precision: float, recall: float) -> float:
    """Fraction of tumour pixels that a pooled (accuracy, precision, recall) triple implies.

    With prevalence ``pi``: ``TP = R pi``, ``FN = (1 - R) pi``, ``FP = TP (1 - P) / P`` and
    ``1 - accuracy = FN + FP``, hence ``pi = (1 - A) / ((1 - R) + R (1 - P) / P)``.
    """
    if not (0 < precision <= 1 and 0 < recall <= 1 and 0 <= accuracy <= 1):
        raise ValueError(
            f"need 0<precision<=1, 0<recall<=1, 0<=accuracy<=1; got {precision}, {recall}, {accuracy}"
        )
    errors_per_positive = (1 - recall) + recall * (1 - precision) / precision
    if errors_per_positive == 0:
        return math.nan if accuracy < 1 else 0.0
    return (1 - accuracy) / errors_per_positive


def precision_from_f1_recall(f1: float, recall: float) -> float:
    """The precision that an F-score and a recall imply: ``P = F R / (2 R - F)``.

    Returns NaN when no precision in (0, 1] gives that pair (``2R <= F`` or the result exceeds 1).
    """
    if not (0 < f1 <= 1 and 0 < recall <= 1):
        raise ValueError(f"need 0<f1<=1 and 0<recall<=1, got f1={f1}, recall={recall}")
    den = 2 * recall - f1
    if den <= 0:
        return math.nan
    p = f1 * recall / den
    return p if p <= 1 + 1e-12 else math.nan


def accuracy_of_empty_prediction(prevalence: float) -> float:
    """Pixel accuracy of a model that predicts no tumour at all: ``1 - prevalence``."""
    if not 0.0 <= prevalence <= 1.0:
        raise ValueError(f"prevalence must be in [0, 1], got {prevalence}")
    return 1.0 - prevalence


def table3_consistency(table: dict[str, dict[str, float]] | None = None, tol: float = 0.005) -> list[dict[str, Any]]:
    """Recompute each row's F-score from its precision and recall (eq. 14).

    Args:
        table: rows ``{model: {accuracy, precision, recall, f1}}``; default :data:`PAPER_TABLE3`.
        tol: rounding tolerance (the paper prints two decimals).

    Returns:
        One dict per row: model, printed F, recomputed F, difference, consistent.
    """
    rows = []
    for model, r in (table or PAPER_TABLE3).items():
        f = f_score(r["precision"], r["recall"])
        rows.append({"model": model, "printed F": r["f1"], "2PR/(P+R)": round(f, 4),
                     "difference": round(r["f1"] - f, 4), "consistent": abs(r["f1"] - f) <= tol})
    return rows


def dice_f1_consistency(dice: float = PAPER_ABSTRACT["dice"], f1: float = PAPER_ABSTRACT["f1"], tol: float = 0.005) -> dict[str, Any]:
    """Pooled Dice equals pooled pixel F-score (``2TP / (2TP + FP + FN)`` both), so a Dice and
    an F1 reported for the same model can only both be pooled figures if they are equal."""
    return {"dice": dice, "f1": f1, "difference": round(dice - f1, 4),
            "can both be pooled": abs(dice - f1) <= tol}


def dice_iou_consistency(table: dict[str, dict[str, float]] | None = None, tol: float = 0.005) -> list[dict[str, Any]]:
    """Compare each printed IoU with ``D / (2 - D)`` from the printed Dice (see :func:`iou_from_dice`)."""
    rows = []
    for model, r in (table or PAPER_TABLE2).items():
        j = iou_from_dice(r["dice"])
        rows.append({"model": model, "printed Dice": r["dice"], "printed IoU": r["iou"],
                     "D/(2-D)": round(j, 4), "pooled-consistent": abs(r["iou"] - j) <= tol,
                     "per-image possible": r["iou"] >= j - tol})
    return rows
