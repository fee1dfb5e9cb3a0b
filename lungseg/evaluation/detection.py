"""Slice-level detection for datasets without pixel masks (the paper's Kaggle layout).

The predicted tumour area of each slice is compared with a threshold chosen on the validation
images (Youden's J), and accuracy, sensitivity and specificity are reported on the test images.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lungseg.errors import DataError
from lungseg.files import json_safe
from lungseg.inference import Predictor

__all__ = ["choose_area_threshold", "detection_scores", "evaluate_detection"]


def _label_of(volume: Any) -> int | None:
    """Image-level label (1 cancer, 0 normal) from the loader's metadata; ``None`` when unknown."""
    meta = volume.meta or {}
    for key in ("cancer", "label", "has_cancer", "malignant"):
        if key in meta:
            value = meta[key]
            if value is None:
                return None
            if isinstance(value, str):
                return int(value.lower() not in ("normal", "0", "false", "no", "benign"))
            return int(bool(value))
    raise DataError(f"{volume.source}: image-level label missing from the volume metadata")


def _part_of(volume: Any) -> str:
    meta = volume.meta or {}
    for key in ("split", "part", "subset"):
        if key in meta:
            v = str(meta[key]).lower()
            return {"valid": "val", "validation": "val"}.get(v, v)
    return "test"


def detection_scores(predicted_area: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """Slice-level detection figures when slices with ``predicted_area > threshold`` are called cancerous."""
    called = predicted_area > threshold
    pos = labels.astype(bool)
    tp, fp = int((called & pos).sum()), int((called & ~pos).sum())
    fn, tn = int((~called & pos).sum()), int((~called & ~pos).sum())
    n = tp + fp + fn + tn

    def ratio(a: int, b: int) -> float:
        return float("nan") if b == 0 else a / b

    return {
        "accuracy": ratio(tp + tn, n), "sensitivity": ratio(tp, tp + fn), "specificity": ratio(tn, tn + fp),
        "precision": ratio(tp, tp + fp), "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
    }


def choose_area_threshold(predicted_area: np.ndarray, labels: np.ndarray) -> float:
    """The predicted-area threshold maximising Youden's J (sensitivity + specificity − 1).

    Candidates are midpoints between sorted distinct areas (and below the smallest), so the
    chosen threshold never sits exactly on an observed value.
    """
    values = np.unique(np.asarray(predicted_area, dtype=np.float64))
    candidates = np.concatenate([[values[0] - 1.0], (values[:-1] + values[1:]) / 2.0]) if len(values) else np.array([0.0])
    best, best_j = float(candidates[0]), -np.inf
    for thr in candidates:
        s = detection_scores(predicted_area, labels, thr)
        j = (0.0 if math.isnan(s["sensitivity"]) else s["sensitivity"]) + (
            0.0 if math.isnan(s["specificity"]) else s["specificity"]) - 1.0
        if j > best_j:
            best, best_j = float(thr), j
    return best


def evaluate_detection(
    run: Predictor, dataset: Any, crf: bool = False, batch_size: int = 16, progress: bool = True
) -> dict[str, Any]:
    """Slice-level cancer detection on a dataset with image-level labels only (Kaggle layout).

    The predicted tumour area of each slice (fraction of its pixels) is compared with a threshold
    chosen on the validation images (``valid/`` folder; Youden's J) and the detection figures are
    reported on the test images (``test/``; all non-validation images when there is no test part).
    """
    from tqdm.auto import tqdm

    areas, labels, parts, ids = [], [], [], []
    skipped = 0
    for pid in tqdm(dataset.patient_ids, desc="detecting", unit="image", disable=not progress):
        vol = dataset[pid]
        if _label_of(vol) is None:
            skipped += 1
            continue
        probs = run.probabilities(vol.image, batch_size=batch_size)
        pred = run.binarize(vol.image, probs, crf)
        areas += list(pred.reshape(len(pred), -1).mean(axis=1))
        labels += [_label_of(vol)] * vol.n_slices
        parts += [_part_of(vol)] * vol.n_slices
        ids += [pid] * vol.n_slices
    area, lab, part = np.asarray(areas), np.asarray(labels), np.asarray(parts)
    val = part == "val"
    if not val.any():
        raise DataError(f"{dataset.source}: no validation images (valid/ folder) to choose the area threshold on")
    test = part == "test"
    if not test.any():
        test = ~val
    thr = choose_area_threshold(area[val], lab[val])
    return json_safe({
        "task": "slice-level detection",
        "note": "the dataset has no pixel masks: segmentation metrics cannot be computed; a slice is"
                " called cancerous when its predicted tumour area fraction exceeds a threshold chosen"
                " on the validation images (Youden's J)",
        "area_threshold": thr,
        "validation": detection_scores(area[val], lab[val], thr),
        "test": detection_scores(area[test], lab[test], thr),
        "n_validation_images": int(val.sum()),
        "n_test_images": int(test.sum()),
        "n_unlabelled_skipped": skipped,
        "crf": bool(crf),
        "run": str(run.run_dir),
        "data": str(dataset.source),
    })
