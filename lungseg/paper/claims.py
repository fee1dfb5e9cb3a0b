"""The paper's claims against an experiment's measurements, each with a verdict (chapter 5).

:func:`claims` turns the results table of :func:`lungseg.experiment.run_experiment` into one row
per number of the paper's Tables 2–3 (:mod:`lungseg.paper.published`), in every aggregation the
paper might have meant, and one per relative claim (attention against U-Net, hybrid against a single
loss, CRF against none) on the grid's paired differences, with a verdict: *consistent*,
*contradicted*, *undecided* (:func:`verdict`, :func:`direction_verdict`, margin
:data:`VERDICT_MARGIN`) or *not comparable*. :func:`side_by_side` and :func:`verdict_counts` shape those rows for a page.
"""

from __future__ import annotations

import math
from typing import Any

from lungseg.paper.published import PAPER_TABLE2, PAPER_TABLE3

__all__ = [
    "CLAIM_METRICS",
    "PREVALENCE_DEPENDENT",
    "VERDICTS",
    "VERDICT_MARGIN",
    "claims",
    "direction_verdict",
    "format_estimate",
    "primary_loss",
    "relative_claims",
    "RELATIVE_CLAIMS",
    "side_by_side",
    "verdict",
    "verdict_counts",
    "with_real_column",
]

#: Each metric of the paper's Tables 2 and 3 and the results-table columns that measure it, with
#: the aggregation of each (the paper states none): "pooled" over all test pixels, mean "per image"
#: or "per patient"; pooled F1 is pooled Dice (both 2TP/(2TP+FP+FN)).
CLAIM_METRICS: dict[str, list[tuple[str, str]]] = {
    "dice": [("dice_pooled", "pooled"), ("dice_per_image", "per image"), ("dice_per_patient", "per patient")],
    "iou": [("iou_pooled", "pooled"), ("iou_per_image", "per image")],
    "small_tumor_recall": [("small_tumor_recall", "lesions < 10 mm"),
                           ("small_tumour_recall_3d", "tumours < 10 mm (3D)")],
    "robustness_std": [("intensity_robustness_std", "SD over perturbations")],
    "accuracy": [("accuracy_pooled", "pooled")],
    "precision": [("precision_pooled", "pooled")],
    "recall": [("recall_pooled", "pooled")],
    "f1": [("dice_pooled", "pooled (= Dice)")],
}
#: Metrics whose value is set by the data's tumour prevalence more than by the model: pixel
#: accuracy counts the (overwhelming) background, so a number from other data says nothing.
PREVALENCE_DEPENDENT = frozenset({"accuracy"})
#: The margin of every verdict: the paper's value and ours agree when the whole 95 % interval lies within
#: ±``VERDICT_MARGIN`` of the paper's value. 0.05 Dice is about the smallest difference between two lung
#: tumour segmentations that matters to a reader: the four LIDC-IDRI readers of the nodule in chapter 10
#: differ from their consensus by more than that, and the paper prints two decimals, so a model within
#: ±0.05 of a printed 0.89 does what the paper says it does. The same margin judges paired differences.
VERDICT_MARGIN = 0.05
#: The verdicts, in the order a page lists them.
VERDICTS = ("consistent", "contradicted", "undecided", "not comparable")
_PREVALENCE_REASON = ("pixel accuracy counts background pixels, so it is set by the data's tumour "
                      "prevalence: a value from other data cannot be compared")


def verdict(paper: float | None, mean: float | None, low: float | None = None, high: float | None = None, *,
            margin: float = VERDICT_MARGIN, not_comparable: str | None = None) -> tuple[str, str]:
    """Judge a published number by our 95 % interval and a stated margin (an equivalence test).

    *consistent* when the whole interval lies within ``paper ± margin``; *contradicted* when the whole
    interval lies outside that band; *undecided* otherwise, and always without an interval (one seed):
    an interval too wide to tell is never read as agreement.

    Args:
        paper: the paper's value (``None``: the paper gives none).
        mean: our estimate (``None``: not measured).
        low, high: our 95 % interval; ``None`` when there is none.
        margin: the half-width of the band around the paper's value (:data:`VERDICT_MARGIN`).
        not_comparable: a reason why the two cannot be compared at all.

    Returns:
        ``(verdict, reason)``, verdict one of :data:`VERDICTS`.

    Raises:
        ValueError: ``margin`` not positive, or ``low > high``.
    """
    if not margin > 0:
        raise ValueError(f"margin must be positive, got {margin}")
    if not_comparable:
        return "not comparable", not_comparable
    if paper is None:
        return "not comparable", "the paper gives no value"
    if mean is None or not math.isfinite(mean):
        return "not comparable", "not measured here (undefined on these data)"
    band = f"the band {paper:.2f} ± {margin} = [{paper - margin:.2f}, {paper + margin:.2f}]"
    if low is None or high is None:
        return "undecided", f"one estimate ({mean:.3f}) without an interval cannot decide against {band}"
    if low > high:
        raise ValueError(f"interval [{low}, {high}] has low > high")
    ours = f"our 95 % interval [{low:.3f}, {high:.3f}]"
    if paper - margin <= low and high <= paper + margin:
        return "consistent", f"{ours} lies inside {band}"
    if high < paper - margin or low > paper + margin:
        side = "below" if high < paper - margin else "above"
        return "contradicted", f"{ours} lies wholly {side} {band}"
    return "undecided", f"{ours} overlaps {band} without lying inside it"


def direction_verdict(low: float | None, high: float | None, *, better: str = "higher") -> tuple[str, str]:
    """Judge a claim that one setting beats another, stated without a size, on the paired difference.

    *consistent* when the whole 95 % interval of (claimed better − other) lies on the better side of 0,
    *contradicted* when it lies wholly on the other side, *undecided* otherwise.

    Args:
        low, high: the 95 % interval of the paired difference; ``None`` without one.
        better: ``"higher"`` when a larger value is better (Dice), ``"lower"`` when smaller is (HD95).
    """
    if better not in ("higher", "lower"):
        raise ValueError(f"better must be 'higher' or 'lower', got {better!r}")
    if low is None or high is None:
        return "undecided", "no interval for the paired difference"
    ours = f"paired difference 95 % interval [{low:.3f}, {high:.3f}]"
    sign = 1 if better == "higher" else -1
    lo, hi = sorted((sign * low, sign * high))
    if lo > 0:
        return "consistent", f"{ours}: better, as claimed, across the whole interval"
    if hi < 0:
        return "contradicted", f"{ours}: worse across the whole interval"
    return "undecided", f"{ours} includes no difference"


def primary_loss(results: dict[str, Any]) -> str:
    """The loss the paper's Tables 2–3 use (hybrid, eq. 9) when the grid has it, else the first."""
    losses = list(results["settings"]["losses"])
    return "hybrid" if "hybrid" in losses else losses[0]


def _claim_row(row: dict[str, Any], stat: dict[str, Any], paper: float | None, not_comparable: str | None,
               data_note: str | None, judged: tuple[str, str] | None = None) -> dict[str, Any]:
    """``row`` completed with the measured statistic ``stat`` (mean, low, high, n) and its verdict (``judged``
    when given, else :func:`verdict` against ``paper``)."""
    v, why = judged or verdict(paper, stat.get("mean"), stat.get("low"), stat.get("high"),
                               not_comparable=not_comparable)
    return {**row, "paper": paper, "measured": stat.get("mean"), "ci_low": stat.get("low"),
            "ci_high": stat.get("high"), "n_seeds": stat.get("n", 0), "verdict": v,
            "reason": why + (f"; {data_note}" if data_note and v != "not comparable" else "")}


def _oriented(diff: dict[str, Any], column: str, factor: str, better: str) -> dict[str, Any]:
    """The paired difference ``column`` of ``diff`` as (``better`` setting of ``factor``) minus the other
    (sign and interval flipped when the grid stored it the other way round)."""
    sign = 1.0 if diff["b"][factor] == better else -1.0
    stat = dict(diff[column])
    for k in ("mean", "low", "high"):
        stat[k] = None if stat.get(k) is None else sign * stat[k]
    if sign < 0:
        stat["low"], stat["high"] = stat["high"], stat["low"]
    return stat


#: The paper's relative claims on a factor's paired difference: (factor, better level, metric, results
#: column, the paper's difference or None for "better" without a size, which direction is better, claim text).
RELATIVE_CLAIMS: list[tuple[str, Any, str, str, float | None, str, str]] = [
    ("model", "attention", "dice gain", "dice_pooled",
     round(PAPER_TABLE2["attention"]["dice"] - PAPER_TABLE2["unet"]["dice"], 4), "higher",
     "Table 2: attention - unet dice"),
    ("model", "attention", "small-tumour recall gain", "small_tumor_recall",
     round(PAPER_TABLE2["attention"]["small_tumor_recall"] - PAPER_TABLE2["unet"]["small_tumor_recall"], 4),
     "higher", "Table 2: attention - unet small-tumour recall"),
    ("model", "attention", "robustness SD change", "intensity_robustness_std",
     round(PAPER_TABLE2["attention"]["robustness_std"] - PAPER_TABLE2["unet"]["robustness_std"], 4), "lower",
     "Table 2: attention - unet robustness SD"),
    ("loss", "hybrid", "hybrid beats the other loss", "dice_pooled", None, "higher",
     "Sec. 3: the hybrid loss beats a single loss (pooled Dice)"),
    ("crf", True, "CRF sharpens boundaries", "hd95_mm_per_image", None, "lower",
     "Sec. 3: the CRF improves boundary precision (HD95)"),
]


def _relative_row(diff: dict[str, Any], spec: tuple[str, Any, str, str, float | None, str, str],
                  data_note: str | None) -> dict[str, Any]:
    factor, better, metric, column, paper_diff, direction, claim = spec
    a, b = diff["a"], diff["b"]
    other = b if a[factor] == better else a
    stat = _oriented(diff, column, factor, better)
    if paper_diff is None:
        judged = direction_verdict(stat.get("low"), stat.get("high"), better=direction)
        label = f"{claim} vs {other[factor]}" if factor == "loss" else claim
    else:
        judged = verdict(paper_diff, stat.get("mean"), stat.get("low"), stat.get("high"))
        label = f"{claim} = {paper_diff:+.2f}"
    fixed = {k: v for k, v in a.items() if k != factor}
    row = {"claim": label, "table": "relative", "model": fixed.get("model", "attention - unet"),
           "metric": metric, "column": column, "aggregation": f"paired, {stat.get('interval', 'seeds (t)')}", "crf": bool(fixed.get("crf", True)),
           "loss": fixed.get("loss", better), "compared_with": str(other[factor])}
    return _claim_row(row, stat, paper_diff, None, data_note, judged=judged)


def relative_claims(results: dict[str, Any], *, loss: str | None = None,
                    data_note: str | None = None) -> list[dict[str, Any]]:
    """The paper's relative claims judged on the grid's paired differences (:data:`RELATIVE_CLAIMS`): the
    attention model against the U-Net (Dice, small-tumour recall, robustness; with the grid's ``loss``),
    the hybrid loss against each single loss (each model, CRF off and on), the CRF against none (each
    model, with ``loss``). A claim with a printed size is judged by :func:`verdict` on that size, one
    without by :func:`direction_verdict`."""
    loss = loss or primary_loss(results)
    rows = []
    for spec in RELATIVE_CLAIMS:
        factor, better = spec[0], spec[1]
        for diff in results.get("differences", []):
            a, b = diff["a"], diff["b"]
            if diff["factor"] != factor or better not in (a[factor], b[factor]) or spec[3] not in diff:
                continue
            if factor != "loss" and a["loss"] != loss:
                continue
            rows.append(_relative_row(diff, spec, data_note))
    return rows


def claims(results: dict[str, Any], *, loss: str | None = None, data_note: str | None = None) -> list[dict[str, Any]]:
    """Every number of the paper's Tables 2–3, and its relative claims, against the experiment's, with a verdict.

    Args:
        results: the results table of :func:`lungseg.experiment.run_experiment` (what it returns and writes).
        loss: the grid's loss to compare (default :func:`primary_loss`).
        data_note: appended to every reason (e.g. "synthetic phantom, not the paper's data").

    Returns:
        Rows ``claim, paper, measured, ci_low, ci_high, aggregation, verdict, reason`` plus ``table,
        model, metric, column, crf, loss, n_seeds``; one row per (model, paper metric, aggregation,
        CRF off/on), then the rows of :func:`relative_claims` (``table`` ``"relative"``).
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
                    # a results table made before this figure existed has no column for it
                    nc = nc or (None if column in cell else "not in this results table (made before the figure existed or not measurable on its data)")
                    rows.append(_claim_row(row, cell.get(column, {}), paper, nc, data_note))
    return rows + relative_claims(results, loss=loss, data_note=data_note)


def _claim_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """What makes a row of :func:`claims` the same claim on two datasets."""
    return (row["table"], row["claim"], row["model"], row["column"], bool(row["crf"]), row.get("compared_with"))


def with_real_column(rows: list[dict[str, Any]], real_rows: list[dict[str, Any]] | None,
                     missing: str = "no real-CT measurement published") -> list[dict[str, Any]]:
    """The rows of :func:`claims` on the phantom with the same claim measured on real CT beside each:
    ``real_measured``, ``real_ci_low``, ``real_ci_high``, ``real_verdict`` and ``real_reason``.

    Args:
        rows: :func:`claims` of the phantom grid.
        real_rows: :func:`claims` of the real-CT grid (:func:`lungseg.experiment.realct.run_real_grid`);
            ``None`` when there is none, which makes every real verdict *not comparable*.
        missing: the reason given where the real grid has no such row.
    """
    real = {_claim_key(r): r for r in real_rows or []}
    out = []
    for row in rows:
        match = real.get(_claim_key(row))
        if match is None:
            extra = {"real_measured": None, "real_ci_low": None, "real_ci_high": None,
                     "real_verdict": "not comparable", "real_reason": missing}
        else:
            extra = {f"real_{k}": match[k] for k in ("measured", "ci_low", "ci_high", "verdict", "reason")}
        out.append({**row, **extra})
    return out


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
    (the reason of the CRF-on row: the paper's pipeline ends with the CRF of eq. 10), and ``real CT``
    and ``real verdict`` columns per CRF setting where :func:`with_real_column` added them.

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
        if "real_verdict" in r:
            out[f"real CT (CRF {state})"] = format_estimate(r["real_measured"], r["real_ci_low"], r["real_ci_high"])
            out[f"real verdict (CRF {state})"] = r["real_verdict"]
        if reasons and (r["crf"] or "reason" not in out):
            out["reason"] = r["reason"]
    return list(merged.values())


def verdict_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """How many rows of :func:`claims` have each verdict."""
    counts = dict.fromkeys(VERDICTS, 0)
    for r in rows:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    return counts
