"""The paper's Figure 3 remade from an experiment: its bar chart of metrics per model, our
measurements as bars and the paper's printed values (:mod:`lungseg.paper.published`) as markers
(chapter 6 draws it with :func:`lungseg.plots.figure3`, every seed's value as a dot).
"""

from __future__ import annotations

import math
from typing import Any

from lungseg.paper.claims import primary_loss
from lungseg.paper.published import PAPER_TABLE2, PAPER_TABLE3

__all__ = ["FIGURE3_METRICS", "figure3_seed_values", "figure3_values"]

#: Figure 3's metrics: (label, results-table column, the paper's table key).
FIGURE3_METRICS: tuple[tuple[str, str, str], ...] = (
    ("Dice", "dice_pooled", "dice"), ("IoU", "iou_pooled", "iou"),
    ("small-tumour recall", "small_tumor_recall", "small_tumor_recall"),
    ("precision", "precision_pooled", "precision"), ("recall", "recall_pooled", "recall"), ("F1", "dice_pooled", "f1"),
)


def figure3_values(results: dict[str, Any], loss: str | None = None, crf: bool = True
                   ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, float]]]:
    """Bars and the paper's markers for :func:`lungseg.plots.figure3` (Figure 3).

    Args:
        results: the results table of :func:`lungseg.experiment.run_experiment` (what it returns and writes).
        loss: the grid's loss to show (default :func:`lungseg.paper.primary_loss`).
        crf: the CRF-on (the paper's full pipeline) or CRF-off cells.

    Returns:
        ``({model: {label: (mean, low, high) or mean}}, {model: {label: paper value}})``; a bar
        without an interval (one seed) is a plain mean, an unmeasured one NaN.
    """
    loss = loss or primary_loss(results)
    published = {m: {**PAPER_TABLE2.get(m, {}), **PAPER_TABLE3.get(m, {})} for m in ("unet", "attention")}
    values: dict[str, dict[str, Any]] = {}
    paper: dict[str, dict[str, float]] = {}
    for cell in results["cells"]:
        if cell["loss"] != loss or bool(cell["crf"]) != crf:
            continue
        model = cell["model"]
        values[model], paper[model] = {}, {}
        for label, column, key in FIGURE3_METRICS:
            s = cell[column]
            mean = math.nan if s["mean"] is None else s["mean"]
            values[model][label] = (mean, s["low"], s["high"]) if s["low"] is not None else mean
            if key in published.get(model, {}):
                paper[model][label] = published[model][key]
    return values, paper


def figure3_seed_values(results: dict[str, Any], loss: str | None = None, crf: bool = True) -> dict[str, dict[str, list[float]]]:
    """Every seed's value behind each bar of :func:`figure3_values`: ``{model: {label: [value per seed]}}``
    (the seeds' own values listed in the results; unmeasured ones left out)."""
    loss = loss or primary_loss(results)
    seeds: dict[str, dict[str, list[float]]] = {}
    for cell in results["cells"]:
        if cell["loss"] != loss or bool(cell["crf"]) != crf:
            continue
        seeds[cell["model"]] = {label: [float(v) for v in cell[column].get("values") or [] if v is not None]
                                for label, column, _ in FIGURE3_METRICS}
    return seeds
