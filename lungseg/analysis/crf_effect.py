"""What the CRF changes, image by image (chapter 8): a run's per-image evaluations with the CRF
off and on, side by side, binned by tumour size (:mod:`lungseg.analysis.sizes`); and its effect on
the boundary figures (HD95, surface Dice; :func:`lungseg.metrics.boundary_summary`), for one run and
seed-paired over the grid, where the evaluations hold them (older ones do not)."""

from __future__ import annotations

import os
from typing import Any

from lungseg.analysis.sizes import SIZE_BINS, size_bin
from lungseg.experiment.grid import TABLE_METRICS
from lungseg.metrics import BOUNDARY_METRICS, equivalent_diameter_mm
from lungseg.rundir import RunDir

__all__ = ["BOUNDARY_COLUMNS", "crf_boundary", "crf_boundary_differences", "crf_change", "describe_crf_boundary"]

#: The results-table columns of the boundary figures (HD95 in mm, surface Dice; per image, per patient).
BOUNDARY_COLUMNS: tuple[str, ...] = tuple(name for name, path in TABLE_METRICS if path[0] == "boundary")


def _per_image(run: RunDir, crf: bool) -> dict[str, dict[str, str]]:
    """``{image_id: row}`` of the run's per-image evaluation with the CRF off or on (the id is
    ``patient_id:slice``, which older tables also carry as a column)."""
    table = run.read_per_image(crf)
    if table is None:
        raise FileNotFoundError(f"{run.per_image_path(crf)}: missing; evaluate {run} with crf={crf} first")
    return {f"{r['patient_id']}:{r['slice']}": r for r in table}


def _number(x: str | None) -> float | None:
    return None if x in ("", None) else float(x)


def crf_change(run_dir: str | os.PathLike[str], spacing: dict[str, tuple[float, float]] | None = None) -> list[dict[str, Any]]:
    """Per-image effect of the CRF: the rows of a run's per-image evaluations with the CRF off and
    on (written by :func:`lungseg.experiment.run_experiment`) side by side.

    Args:
        run_dir: a run of the experiment, evaluated with CRF off and on.
        spacing: ``{patient_id: (dy, dx)}`` mm, to express tumour sizes as equivalent diameters;
            ``None`` bins by pixels only (``diameter_mm`` is then ``None``).

    Returns:
        One row per test image: ``image_id``, ``patient_id``, ``slice``, ``tumour_pixels``,
        ``diameter_mm``, ``size``, ``dice_off``, ``dice_on``, ``dice_change`` (``None`` where the
        Dice is undefined: no tumour and nothing predicted), ``fp_off``, ``fp_on``, ``fn_off``, ``fn_on``,
        and ``hd95_mm_off``/``_on``/``_change`` and ``surface_dice_off``/``_on``/``_change`` (``None``
        where undefined, :data:`lungseg.metrics.BOUNDARY_EMPTY_RULE`, or where the tables predate them).

    Raises:
        FileNotFoundError: a per-image table is missing (evaluate the run with and without CRF first).
        ValueError: the two evaluations cover different images.
    """
    run = RunDir(run_dir)
    off_rows, on_rows = _per_image(run, False), _per_image(run, True)
    if off_rows.keys() != on_rows.keys():
        raise ValueError(f"{run}: the CRF-off and CRF-on evaluations cover different images")
    rows = []
    for image_id, off in off_rows.items():
        on = on_rows[image_id]
        pixels = int(off["tumour_pixels"])
        diameter = None
        if spacing is not None and off["patient_id"] in spacing:
            diameter = float(equivalent_diameter_mm(pixels, spacing[off["patient_id"]]))
        d_off, d_on = _number(off["dice"]), _number(on["dice"])
        rows.append({
            "image_id": image_id, "patient_id": off["patient_id"], "slice": int(off["slice"]), "tumour_pixels": pixels,
            "diameter_mm": diameter,
            "size": size_bin(diameter) if diameter is not None else SIZE_BINS[0][0] if pixels == 0 else "tumour",
            "dice_off": d_off, "dice_on": d_on,
            "dice_change": None if d_off is None or d_on is None else d_on - d_off,
            "fp_off": int(off["fp"]), "fp_on": int(on["fp"]), "fn_off": int(off["fn"]), "fn_on": int(on["fn"]),
        })
        for name in BOUNDARY_METRICS:
            b_off, b_on = _number(off.get(name)), _number(on.get(name))
            rows[-1].update({f"{name}_off": b_off, f"{name}_on": b_on,
                             f"{name}_change": None if b_off is None or b_on is None else b_on - b_off})
    return rows


def crf_boundary(run_dir: str | os.PathLike[str]) -> dict[str, dict[str, float | None]] | None:
    """A run's boundary figures with the CRF off and on, from its two evaluations.

    Args:
        run_dir: a run of the experiment, evaluated with CRF off and on.

    Returns:
        ``{"<aggregation> <figure>": {"off", "on", "change"}}`` for the per-image and per-patient
        HD95 (``"per image hd95_mm"``; lower is better) and surface Dice at the evaluations'
        tolerance (``"per image surface_dice at 2 mm"``; higher is better); ``None`` when either
        evaluation was made before lungseg computed boundary figures.

    Raises:
        ValueError: the two evaluations used different tolerances.
    """
    run = RunDir(run_dir)
    evaluations = {crf: run.read_evaluation(crf) for crf in (False, True)}
    if any("boundary" not in e for e in evaluations.values()):
        return None
    tolerances = {evaluations[crf]["boundary"]["tolerance_mm"] for crf in (False, True)}
    if len(tolerances) != 1:
        raise ValueError(f"{run}: the CRF-off and CRF-on evaluations used different tolerances {sorted(tolerances)}")
    tol = tolerances.pop()
    out: dict[str, dict[str, float | None]] = {}
    for agg in ("per_image", "per_patient"):
        for name in BOUNDARY_METRICS:
            off, on = (evaluations[crf]["boundary"][agg][name] for crf in (False, True))
            label = f"{agg.replace('_', ' ')} {name}" + (f" at {tol:g} mm" if name == "surface_dice" else "")
            out[label] = {"off": off, "on": on, "change": None if off is None or on is None else on - off}
    return out


def crf_boundary_differences(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The grid's seed-paired CRF effect (on - off) on the boundary figures, per model and loss.

    Args:
        results: the results table of :func:`lungseg.experiment.run_experiment`.

    Returns:
        One row per (model, loss) with, for each of :data:`BOUNDARY_COLUMNS`, ``<column>`` (mean
        difference over seeds), ``<column>_low`` and ``<column>_high`` (its 95 % t-interval) and
        ``n_pairs``; empty when the results table has no boundary figures (evaluations made before
        lungseg computed them, or a table from before they were columns).
    """
    rows = []
    for d in results.get("differences", []):
        if d["factor"] != "crf" or d["a"]["crf"] or not d["b"]["crf"]:
            continue
        if all((d.get(c) or {}).get("mean") is None for c in BOUNDARY_COLUMNS):
            continue
        row: dict[str, Any] = {"model": d["a"]["model"], "loss": d["a"]["loss"], "n_pairs": d["n_pairs"]}
        for c in BOUNDARY_COLUMNS:
            s = d.get(c) or {}
            row.update({c: s.get("mean"), f"{c}_low": s.get("low"), f"{c}_high": s.get("high")})
        rows.append(row)
    return rows


def describe_crf_boundary(row: dict[str, Any]) -> str:
    """One line per boundary figure of a row of :func:`crf_boundary_differences`: the CRF's effect
    (on - off) and whether it is an improvement, read from the 95 % interval over seeds.

    A figure *improves* when its whole interval lies on the better side of 0 (HD95 lower, surface
    Dice higher), *worsens* when it lies wholly on the other, and is *unclear* when the interval
    holds 0; with a single seed there is no interval and only the sign is given.
    """
    lines = []
    for c in BOUNDARY_COLUMNS:
        mean, low, high = row.get(c), row.get(f"{c}_low"), row.get(f"{c}_high")
        better = -1.0 if c.startswith("hd95") else 1.0  # HD95 is a distance: lower is better
        unit = " mm" if c.startswith("hd95") else ""
        if mean is None:
            lines.append(f"{c}: not measured")
            continue
        if low is None or high is None:
            word = "better" if mean * better > 0 else "worse" if mean * better < 0 else "unchanged"
            lines.append(f"{c}: {mean:+.3f}{unit} ({word}; one seed, no interval)")
            continue
        if min(low * better, high * better) > 0:
            word = "improves"
        elif max(low * better, high * better) < 0:
            word = "worsens"
        else:
            word = "unclear (the interval holds 0)"
        lines.append(f"{c}: {mean:+.3f}{unit} [{low:+.3f}, {high:+.3f}]: {word}")
    return "\n".join(lines)
