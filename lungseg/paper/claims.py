"""The paper's claims against an experiment's measurements, each with a verdict (chapter 5).

:func:`claims` turns the results table of :func:`lungseg.experiment.run_experiment` into one row
per number of the paper's Tables 2–3 (:mod:`lungseg.paper.published`), in every aggregation the
paper might have meant, with a :func:`verdict`: *reproduced*, *not reproduced* or *not
comparable*. :func:`side_by_side` and :func:`verdict_counts` shape those rows for a page.
"""

from __future__ import annotations

import math
from typing import Any

from lungseg.paper.published import PAPER_TABLE2, PAPER_TABLE3

__all__ = [
    "CLAIM_METRICS",
    "PREVALENCE_DEPENDENT",
    "VERDICT_TOLERANCE",
    "claims",
    "format_estimate",
    "primary_loss",
    "side_by_side",
    "verdict",
    "verdict_counts",
]

#: Each metric of the paper's Tables 2 and 3 and the results-table columns that measure it, with
#: the aggregation of each (the paper states none): "pooled" over all test pixels, mean "per image"
#: or "per patient"; pooled F1 is pooled Dice (both 2TP/(2TP+FP+FN)).
CLAIM_METRICS: dict[str, list[tuple[str, str]]] = {
    "dice": [("dice_pooled", "pooled"), ("dice_per_image", "per image"), ("dice_per_patient", "per patient")],
    "iou": [("iou_pooled", "pooled"), ("iou_per_image", "per image")],
    "small_tumor_recall": [("small_tumor_recall", "lesions < 10 mm")],
    "robustness_std": [("intensity_robustness_std", "SD over perturbations")],
    "accuracy": [("accuracy_pooled", "pooled")],
    "precision": [("precision_pooled", "pooled")],
    "recall": [("recall_pooled", "pooled")],
    "f1": [("dice_pooled", "pooled (= Dice)")],
}
#: Metrics whose value is set by the data's tumour prevalence more than by the model: pixel
#: accuracy counts the (overwhelming) background, so a number from other data says nothing.
PREVALENCE_DEPENDENT = frozenset({"accuracy"})
#: Tolerance of the verdict when there is no confidence interval (one seed).
VERDICT_TOLERANCE = 0.02
_PREVALENCE_REASON = ("pixel accuracy counts background pixels, so it is set by the data's tumour "
                      "prevalence: a value from other data cannot be compared")


def verdict(paper: float | None, mean: float | None, low: float | None = None, high: float | None = None, *,
            tol: float = VERDICT_TOLERANCE, not_comparable: str | None = None) -> tuple[str, str]:
    """Compare a published number with a measured one.

    Args:
        paper: the paper's value (``None``: the paper gives none).
        mean: our mean over seeds (``None``: not measured).
        low, high: our 95 % interval over seeds; ``None`` with one seed.
        tol: with an interval, the paper's value may lie this far outside it (its two printed
            decimals); without one, this far from the mean.
        not_comparable: a reason why the two cannot be compared at all.

    Returns:
        ``(verdict, reason)`` with verdict ``"reproduced"``, ``"not reproduced"`` or ``"not comparable"``.
    """
    if not_comparable:
        return "not comparable", not_comparable
    if paper is None:
        return "not comparable", "the paper gives no value"
    if mean is None or not math.isfinite(mean):
        return "not comparable", "not measured here (undefined on these data)"
    if low is not None and high is not None:
        if low - tol <= paper <= high + tol:
            return "reproduced", f"paper's {paper:.2f} lies within our 95 % CI [{low:.3f}, {high:.3f}] (±{tol})"
        side = "above" if paper > high else "below"
        return "not reproduced", f"paper's {paper:.2f} is {side} our 95 % CI [{low:.3f}, {high:.3f}]"
    if abs(mean - paper) <= tol:
        return "reproduced", f"one seed (no CI): {mean:.3f} within ±{tol} of the paper's {paper:.2f}"
    side = "above" if paper > mean else "below"
    return "not reproduced", f"one seed (no CI): paper's {paper:.2f} is {side} our {mean:.3f} by more than {tol}"


def primary_loss(results: dict[str, Any]) -> str:
    """The loss the paper's Tables 2–3 use (hybrid, eq. 9) when the grid has it, else the first."""
    losses = list(results["settings"]["losses"])
    return "hybrid" if "hybrid" in losses else losses[0]


def _claim_row(row: dict[str, Any], stat: dict[str, Any], paper: float | None, not_comparable: str | None,
               data_note: str | None) -> dict[str, Any]:
    """``row`` completed with the measured statistic ``stat`` (mean, low, high, n) and its verdict."""
    v, why = verdict(paper, stat.get("mean"), stat.get("low"), stat.get("high"), not_comparable=not_comparable)
    return {**row, "paper": paper, "measured": stat.get("mean"), "ci_low": stat.get("low"),
            "ci_high": stat.get("high"), "n_seeds": stat.get("n", 0), "verdict": v,
            "reason": why + (f"; {data_note}" if data_note and v != "not comparable" else "")}


def _gain_stat(diff: dict[str, Any]) -> dict[str, Any]:
    """The pooled-Dice difference of a model comparison as attention minus U-Net (sign and interval flipped
    when the grid stored it the other way round)."""
    sign = 1.0 if diff["b"]["model"] == "attention" else -1.0
    pooled = diff["dice_pooled"]
    stat = {k: (None if pooled[k] is None else sign * pooled[k]) for k in ("mean", "low", "high")}
    if sign < 0:
        stat["low"], stat["high"] = stat["high"], stat["low"]
    stat["n"] = pooled["n"]
    return stat


def claims(results: dict[str, Any], *, loss: str | None = None, data_note: str | None = None) -> list[dict[str, Any]]:
    """Every number of the paper's Tables 2–3 against the experiment's, with a verdict.

    Args:
        results: the results table of :func:`lungseg.experiment.run_experiment` (what it returns and writes).
        loss: the grid's loss to compare (default :func:`primary_loss`).
        data_note: appended to every reason (e.g. "synthetic phantom, not the paper's data").

    Returns:
        Rows ``claim, paper, measured, ci_low, ci_high, aggregation, verdict, reason`` plus ``table,
        model, metric, column, crf, loss, n_seeds``; one row per (model, paper metric, aggregation,
        CRF off/on), and one for the paper's Attention-minus-U-Net Dice gain per CRF setting when
        both models were trained.
    """
    loss = loss or primary_loss(results)
    rows = []
    for cell in results["cells"]:
        if cell["loss"] != loss:
            continue
        model, crf = cell["model"], bool(cell["crf"])
        for table, published in (("Table 2", PAPER_TABLE2), ("Table 3", PAPER_TABLE3)):
            for metric, paper in published.get(model, {}).items():
                nc = _PREVALENCE_REASON if metric in PREVALENCE_DEPENDENT else None
                for column, aggregation in CLAIM_METRICS[metric]:
                    row = {"claim": f"{table}: {model} {metric} = {paper:.2f}", "table": table, "model": model,
                           "metric": metric, "column": column, "aggregation": aggregation, "crf": crf, "loss": loss}
                    rows.append(_claim_row(row, cell[column], paper, nc, data_note))
    gain = round(PAPER_TABLE2["attention"]["dice"] - PAPER_TABLE2["unet"]["dice"], 4)
    for diff in results.get("differences", []):
        a, b = diff["a"], diff["b"]
        if diff["factor"] == "model" and a["loss"] == loss and {a["model"], b["model"]} == {"unet", "attention"}:
            row = {"claim": f"Table 2: attention - unet dice = {gain:.2f}", "table": "Table 2",
                   "model": "attention - unet", "metric": "dice gain", "column": "dice_pooled",
                   "aggregation": "paired, pooled", "crf": bool(a["crf"]), "loss": loss}
            rows.append(_claim_row(row, _gain_stat(diff), gain, None, data_note))
    return rows


def format_estimate(mean: float | None, low: float | None = None, high: float | None = None, digits: int = 3) -> str:
    """``"0.812 [0.790, 0.834]"`` (mean and 95 % CI), ``"0.812"`` without a CI, ``"n/a"`` if unmeasured."""
    if mean is None or not math.isfinite(mean):
        return "n/a"
    if low is None or high is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def side_by_side(rows: list[dict[str, Any]], table: str | None = None, reasons: bool = True) -> list[dict[str, Any]]:
    """The rows of :func:`claims` with CRF off and on in one row each: ``model, metric,
    aggregation, paper, ours (CRF off), ours (CRF on), verdict (CRF off), verdict (CRF on), reason``
    (the reason of the CRF-on row: the paper's pipeline ends with the CRF of eq. 10).

    Args:
        rows: the output of :func:`claims`.
        table: keep only ``"Table 2"`` or ``"Table 3"`` (default: all).
        reasons: include the ``reason`` column (long text; a narrow page shows it better apart).
    """
    merged: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in rows:
        if table is not None and r["table"] != table:
            continue
        key = (r["model"], r["metric"], r["aggregation"])
        out = merged.setdefault(key, {"model": r["model"], "metric": r["metric"].replace("_", " "),
                                      "aggregation": r["aggregation"],
                                      "paper": r["paper"]})
        state = "on" if r["crf"] else "off"
        out[f"ours (CRF {state})"] = format_estimate(r["measured"], r["ci_low"], r["ci_high"])
        out[f"verdict (CRF {state})"] = r["verdict"]
        if reasons and (r["crf"] or "reason" not in out):
            out["reason"] = r["reason"]
    return list(merged.values())


def verdict_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """How many rows of :func:`claims` have each verdict."""
    counts = {"reproduced": 0, "not reproduced": 0, "not comparable": 0}
    for r in rows:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    return counts
