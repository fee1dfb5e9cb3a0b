"""Scoring masks made by any tool: a folder of predictions against a folder of reference masks.

:func:`evaluate_folder` is ``lungseg evaluate --pred DIR --ref DIR``, in the manner of nnU-Net's
``evaluate_folder``: the same figures, aggregations, intervals and per-image table as
:func:`lungseg.evaluation.evaluate_run` (both call :func:`lungseg.metrics.summarize` and the boundary
metrics on the same arrays), so a run's masks written by ``lungseg predict`` score to the last digit as
``evaluate --run`` scores them. What needs the model (the intensity robustness) is not measured; what
masks alone allow is added: tumour volumes per case with their Bland–Altman agreement, and false
positives per scan.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from lungseg.errors import DataError, LungsegError
from lungseg.evaluation.masks import pair_mask_files, read_mask_pair
from lungseg.evaluation.segmentation import write_evaluation
from lungseg.files import check_output
from lungseg.metrics import (
    BOUNDARY_TOLERANCE_MM,
    MM3_PER_ML,
    bland_altman,
    boundary_per_image,
    boundary_summary,
    false_positive_components,
    summarize,
)
from lungseg.paths import portable
from lungseg.rundir import per_image_csv_path

__all__ = ["evaluate_folder", "load_mask_folders"]


def load_mask_folders(pred_dir: str | os.PathLike[str], ref_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Every case of two mask folders as the stacked slices the metrics take.

    Returns:
        ``pred`` and ``masks`` (uint8 ``(N, H, W)``, every case's slices in case-name order),
        ``patient_ids`` and ``slice_index`` (one per slice), ``spacing`` (``(N, 2)`` in-plane mm),
        ``slice_spacing`` (``{case: dz mm}``) and ``voxel_mm3`` (``{case: dz * dy * dx}``), from the
        reference's header.

    Raises:
        DataError: see :func:`lungseg.evaluation.masks.pair_mask_files` and ``read_mask_pair``; cases of
            different slice sizes (the pixel metrics stack them; score such subsets separately).
    """
    preds, refs, ids, index, spacing = [], [], [], [], []
    slice_spacing: dict[str, float] = {}
    voxel: dict[str, float] = {}
    for pair in pair_mask_files(pred_dir, ref_dir):
        pred, ref, (dz, dy, dx) = read_mask_pair(pair)
        if refs and ref.shape[1:] != refs[0].shape[1:]:
            raise DataError(f"{pair.ref}: slices of {ref.shape[1:]} pixels, other cases' are {refs[0].shape[1:]};"
                            " pixel metrics need one slice size per evaluation (score the subsets separately)")
        preds.append(pred)
        refs.append(ref)
        ids += [pair.case] * len(ref)
        index += list(range(len(ref)))
        spacing += [(dy, dx)] * len(ref)
        slice_spacing[pair.case], voxel[pair.case] = dz, dz * dy * dx
    return {"pred": np.concatenate(preds), "masks": np.concatenate(refs), "patient_ids": ids, "slice_index": index,
            "spacing": np.asarray(spacing, dtype=np.float64), "slice_spacing": slice_spacing, "voxel_mm3": voxel}


def _volumes(arrays: dict[str, Any]) -> dict[str, Any]:
    """Tumour volume of each case in mL, predicted and reference, and their Bland–Altman agreement."""
    ids = np.asarray(arrays["patient_ids"])
    cases = sorted(arrays["voxel_mm3"])
    voxels = {name: [int(arrays[key][ids == c].sum()) for c in cases] for name, key in (("pred", "pred"), ("ref", "masks"))}
    ml = {name: [n * arrays["voxel_mm3"][c] / MM3_PER_ML for n, c in zip(v, cases)] for name, v in voxels.items()}
    agreement = bland_altman(ml["pred"], ml["ref"])
    return {"cases": cases, "predicted_ml": ml["pred"], "reference_ml": ml["ref"],
            "bias_ml": agreement["bias"], "sd_ml": agreement["sd"], "limits_ml": agreement["limits"],
            "level": agreement["level"], "method": "Bland-Altman, predicted minus reference volume per case"}


def evaluate_folder(
    pred_dir: str | os.PathLike[str],
    ref_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    tolerance_mm: float = BOUNDARY_TOLERANCE_MM,
) -> dict[str, Any]:
    """Score a folder of predicted masks against a folder of reference masks (any tool's).

    Args:
        pred_dir: ``<case>.nii.gz`` / ``.nii`` / ``.dcm`` (DICOM SEG) predictions.
        ref_dir: the reference masks, one per case, same names.
        out: metrics JSON to write (the per-image CSV goes beside it, ``<stem>_per_image.csv.gz``);
            ``None`` writes nothing.
        n_boot: patient (case) bootstrap resamples of the 95 % CIs (0: none).
        seed: bootstrap seed.
        tolerance_mm: surface-Dice tolerance in mm.

    Returns:
        The dict of :func:`lungseg.evaluation.evaluate_run` (``pooled``, ``per_image``, ``per_patient``,
        ``ci``, ``small_tumor_recall``, ``boundary``, ...; each case is a patient) with
        ``intensity_robustness_std`` None, plus ``volumes`` (mL per case, Bland–Altman bias and limits)
        and ``false_positives_per_scan`` (8-connected predicted components touching no reference pixel).
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 0:
        raise LungsegError(f"n_boot must be an int >= 0, got {n_boot!r}")
    if isinstance(tolerance_mm, bool) or not isinstance(tolerance_mm, (int, float)) or not tolerance_mm > 0:
        raise LungsegError(f"tolerance_mm must be a number > 0 (mm), got {tolerance_mm!r}")
    if out is not None:
        for path, flag in ((out, "--out"), (per_image_csv_path(out), "the per-image table")):
            check_output(path, [pred_dir, ref_dir], flag=flag)
    arrays = load_mask_folders(pred_dir, ref_dir)
    pred = arrays["pred"]
    result: dict[str, Any] = summarize(pred, arrays["masks"], arrays["patient_ids"], arrays["spacing"],
                                       n_boot=n_boot, seed=seed)
    started = time.perf_counter()
    arrays["boundary"] = boundary_per_image(pred, arrays["masks"], arrays["spacing"], tolerance_mm)
    result["boundary"] = boundary_summary(pred, arrays["masks"], arrays["patient_ids"], arrays["spacing"],
                                          arrays["slice_spacing"], tolerance_mm=tolerance_mm,
                                          per_image=arrays["boundary"])
    result["boundary"]["seconds"] = round(time.perf_counter() - started, 3)
    result["intensity_robustness_std"] = None
    result["intensity_robustness_note"] = "not measured: masks from files (there is no model to run again)"
    result["volumes"] = _volumes(arrays)
    n_fp = int(false_positive_components(pred, arrays["masks"], 1.0).sum())
    result["false_positives_per_scan"] = n_fp / len(arrays["slice_spacing"])
    result.update(task="segmentation", pred=portable(pred_dir), ref=portable(ref_dir), split="all",
                  resolution="the reference masks' own voxel grid")
    return write_evaluation(result, pred, arrays, out)
