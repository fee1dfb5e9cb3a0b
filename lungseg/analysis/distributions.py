"""Tables of an experiment's spread over patients and seeds, for :mod:`lungseg.plots` (chapter 6):
per-patient Dice read from every run's per-image evaluation, and the grid's paired differences."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from lungseg.metrics import Confusion
from lungseg.rundir import RunDir

__all__ = ["paired_difference_rows", "per_patient_dice"]


def per_patient_dice(results: dict[str, Any], crf: bool) -> list[dict[str, Any]]:
    """Dice of every test patient in every run: the patient's slices pooled (TP, FP, FN summed over
    the slices of the run's per-image evaluation, with the CRF off or on).

    Args:
        results: the results table of :func:`lungseg.experiment.run_experiment` (what it returns and writes).
        crf: the CRF-on or CRF-off evaluations.

    Returns:
        One row per run and patient: ``model``, ``loss``, ``seed``, ``crf``, ``patient_id``,
        ``tumour_pixels``, ``dice`` (:data:`lungseg.metrics.EMPTY_MASK_RULE`: 1.0 for a patient
        without tumour and without prediction).

    Raises:
        FileNotFoundError: a run has no per-image evaluation with this ``crf``.
        ValueError: the experiment lists no runs.
    """
    if not results.get("runs"):
        raise ValueError("the experiment lists no runs")
    rows = []
    for run in results["runs"]:
        table = RunDir(run["run"]).read_per_image(crf)
        if table is None:
            raise FileNotFoundError(f"{RunDir(run['run']).per_image_path(crf)}: missing; evaluate the run with "
                                    f"crf={crf} first")
        counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
        for r in table:
            c = counts[r["patient_id"]]
            for i, key in enumerate(("tp", "fp", "fn", "tn", "tumour_pixels")):
                c[i] += int(r[key])
        for patient, (tp, fp, fn, tn, pixels) in sorted(counts.items()):
            rows.append({"model": run["model"], "loss": run["loss"], "seed": run["seed"], "crf": crf,
                         "patient_id": patient, "tumour_pixels": pixels,
                         "dice": Confusion(tp=tp, fp=fp, fn=fn, tn=tn).dice})
    return rows


def _cell_label(cell: dict[str, Any]) -> str:
    return f"{cell['model']}, {cell['loss']}, CRF {'on' if cell['crf'] else 'off'}"


def paired_difference_rows(results: dict[str, Any], metric: str = "dice_pooled") -> list[dict[str, Any]]:
    """The experiment's paired differences of one metric (``b - a`` over the same seeds), one row
    per comparison, for :func:`lungseg.plots.paired_differences`.

    Args:
        results: the results table of :func:`lungseg.experiment.run_experiment`, with its ``differences``.
        metric: a metric of the differences (e.g. ``"dice_pooled"``, ``"dice_per_patient"``).

    Returns:
        Rows ``factor``, ``label`` (``"b - a"`` in words), ``mean``, ``low``, ``high`` (NaN
        without an interval), ``values`` (the per-seed differences), ``n_pairs``.

    Raises:
        ValueError: the results have no differences, or none of ``metric``.
    """
    differences = results.get("differences") or []
    if not differences:
        raise ValueError("the experiment has no paired differences (one cell, or one seed)")
    rows = []
    for d in differences:
        if metric not in d:
            raise ValueError(f"the differences have no metric {metric!r}; they have "
                             f"{sorted(k for k, v in d.items() if isinstance(v, dict) and 'mean' in v)}")
        s = d[metric]
        number = lambda v: math.nan if v is None else float(v)  # noqa: E731
        rows.append({"factor": d["factor"], "label": f"{_cell_label(d['b'])} - {_cell_label(d['a'])}",
                     "mean": number(s["mean"]), "low": number(s.get("low")), "high": number(s.get("high")),
                     "values": [float(v) for v in s.get("values") or [] if v is not None], "n_pairs": d.get("n_pairs")})
    return rows
