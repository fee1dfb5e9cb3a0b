"""What the CRF changes, image by image (chapter 8): a run's per-image evaluations with the CRF
off and on, side by side, binned by tumour size (:mod:`lungseg.analysis.sizes`)."""

from __future__ import annotations

import csv
import os
from typing import Any

from lungseg.analysis.sizes import SIZE_BINS, size_bin
from lungseg.metrics import equivalent_diameter_mm
from lungseg.rundir import RunDir

__all__ = ["crf_change"]


def _per_image(run: RunDir, crf: bool) -> dict[str, dict[str, str]]:
    """``{image_id: row}`` of the run's per-image evaluation with the CRF off or on."""
    path = run.per_image_path(crf)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; evaluate {run} with crf={crf} first")
    with open(path, encoding="utf-8", newline="") as fh:
        return {r["image_id"]: r for r in csv.DictReader(fh)}


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
        Dice is undefined: no tumour and nothing predicted), ``fp_off``, ``fp_on``, ``fn_off``, ``fn_on``.

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
    return rows
